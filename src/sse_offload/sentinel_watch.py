"""The watcher of a Sentinel address: ``SUBSCRIBE +switch-master`` on one of its sentinels.

sentinel.py's group owns one per address per process and hears of every switch of its
master (:class:`WatchOwner`); this module knows nothing of the connections to the master.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .resp import RespClient
from .timers import backoff_delay, cancel

log = Logger(namespace="sse_offload.sentinel")

#: A sentinel answers from memory: one silent this long (connect and reply) is skipped, so
#: three sentinels cost at most 6 s, about one connect timeout of a plain address.
SENTINEL_TIMEOUT: Final = 2.0
#: The watcher's PING, as the hub's: a sentinel host that vanished leaves a half-open socket.
WATCH_PING_INTERVAL: Final = 10.0
WATCH_PING_TIMEOUT: Final = 5.0
SWITCH_CHANNEL: Final = b"+switch-master"

Target = tuple[str, int]


def show(target: Target | None) -> str:
    """``host:port`` (``[v6]:port``) for log lines; ``-`` for none."""
    if target is None:
        return "-"
    host, port = target
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def why(failure: Failure | BaseException) -> str:
    """A failure as a log line says it."""
    e = failure.value if isinstance(failure, Failure) else failure
    if isinstance(e, defer.TimeoutError):
        return "no answer in time"
    return str(e) or type(e).__name__


def master_address(reply: Any) -> Target | None:
    """``[ip, port]`` (get-master-addr-by-name, or a switch's halves) as a target; None for
    nil or anything else a sentinel should not say."""
    if not (isinstance(reply, list) and len(reply) == 2):
        return None
    host, port = reply
    if not isinstance(host, bytes) or not isinstance(port, bytes) or not port.isdigit():
        return None
    if not host or not 0 < int(port) < 65536:
        return None
    return host.decode("ascii", "replace"), int(port)


class WatchOwner(Protocol):
    """What the watcher needs of its group (sentinel.SentinelGroup)."""

    clock: IReactorTime
    name: bytes  # the master's name
    sentinels: list[Target]

    async def connect_sentinel(self, sentinel: Target, client: RespClient) -> RespClient:
        """``client`` connected to ``sentinel`` and logged in."""

    def switched(self, new: Target, why: str, told_by: Target | None = None) -> None:
        """The sentinels switched the master to ``new`` (``told_by`` said so)."""

    def reconcile(self) -> None:
        """Ask the sentinels which master is current (a switch may have been missed)."""


class SwitchWatcher:
    """``SUBSCRIBE +switch-master`` on one sentinel of a group, the next one when it is lost
    (with the hub's backoff); a switch of the group's master goes to ``group.switched``."""

    def __init__(self, group: WatchOwner) -> None:
        self.group = group
        self.running = False
        self.sentinel: Target | None = None  # the one subscribed to, once it is
        self._client: RespClient | None = None
        self._tried: Target | None = None  # the sentinel of the last attempt
        self._attempt = 0
        self._retry: IDelayedCall | None = None
        self._ping_call: IDelayedCall | None = None
        self._connecting: defer.Deferred[RespClient] | None = None
        self._down_logged = False

    def start(self) -> None:
        """Subscribe (once; it stays subscribed, moving between sentinels, until stopped)."""
        if not self.running:
            self.running = True
            self._tried = None  # the group's first: the one that answered last
            self._connect()

    def stop(self) -> defer.Deferred[None]:
        """Unsubscribe (close the connection); fires once it is closed."""
        self.running = False
        for call in (self._retry, self._ping_call):
            cancel(call)
        self._retry = self._ping_call = None
        if self._connecting is not None:
            self._connecting.cancel()
        client, self._client, self.sentinel = self._client, None, None
        if client is None or client.lost:
            return defer.succeed(None)
        done: defer.Deferred[None] = defer.Deferred()
        client.on_lost = lambda _: done.callback(None)
        client.transport.loseConnection()
        return done

    def _connect(self) -> None:
        self._retry = None
        # The group's order (the one that answered last first), starting after the one
        # that was lost or failed, if it was.
        sentinels = self.group.sentinels
        after = sentinels.index(self._tried) + 1 if self._tried in sentinels else 0
        sentinel = self._tried = sentinels[after % len(sentinels)]
        d = defer.Deferred.fromCoroutine(self._subscribe(sentinel))
        self._connecting = d.addTimeout(SENTINEL_TIMEOUT, self.group.clock)
        d.addCallbacks(
            self._subscribed, self._failed, callbackArgs=(sentinel,), errbackArgs=(sentinel,)
        )

    async def _subscribe(self, sentinel: Target) -> RespClient:
        client = await self.group.connect_sentinel(sentinel, RespClient(self._message))
        try:
            await client.command(b"SUBSCRIBE", SWITCH_CHANNEL)
        except BaseException:
            client.transport.abortConnection()
            raise
        return client

    def _subscribed(self, client: RespClient, sentinel: Target) -> None:
        self._connecting = None
        if client.lost:
            self._failed(Failure(error.ConnectionLost("lost while subscribing")), sentinel)
            return
        self._client, self.sentinel = client, sentinel
        self._attempt, self._down_logged = 0, False
        self._tried = sentinel
        client.on_lost = lambda reason: self._lost(client, reason)
        log.info(
            "{address}: following failovers through sentinel {sentinel}",
            address=self.group, sentinel=show(sentinel),
        )
        self._ping_call = self.group.clock.callLater(WATCH_PING_INTERVAL, self._ping)
        self.group.reconcile()

    def _failed(self, failure: Failure, sentinel: Target) -> None:
        self._connecting = None
        if not self.running or failure.check(defer.CancelledError):
            return
        if not self._down_logged:
            self._down_logged = True
            log.warn(
                "{address}: cannot watch for failovers on sentinel {sentinel}: {why}; "
                "trying the others with backoff",
                address=self.group, sentinel=show(sentinel), why=why(failure),
            )
        self._next_sentinel()

    def _lost(self, client: RespClient, reason: Failure) -> None:
        if client is not self._client:
            return
        sentinel, self._client, self.sentinel = self.sentinel, None, None
        cancel(self._ping_call)
        self._ping_call = None
        if self.running:
            log.warn(
                "{address}: lost sentinel {sentinel} ({why}); watching through the next one",
                address=self.group, sentinel=show(sentinel), why=why(reason),
            )
            self._next_sentinel()

    def _next_sentinel(self) -> None:
        delay = backoff_delay(self._attempt)
        self._attempt += 1
        self._retry = self.group.clock.callLater(delay, self._connect)

    def _ping(self) -> None:
        self._ping_call = None
        client = self._client
        if client is None:
            return
        d = client.command(b"PING").addTimeout(WATCH_PING_TIMEOUT, self.group.clock)
        d.addCallbacks(self._pong, lambda f: client.transport.abortConnection())

    def _pong(self, _: object) -> None:
        if self._client is not None and self._ping_call is None:
            self._ping_call = self.group.clock.callLater(WATCH_PING_INTERVAL, self._ping)

    def _message(self, channel: bytes, payload: bytes) -> None:
        """``+switch-master NAME OLDIP OLDPORT NEWIP NEWPORT``."""
        parts = payload.split()
        if len(parts) != 5 or parts[0] != self.group.name:
            return  # another master the sentinels watch
        new = master_address([parts[3], parts[4]])
        if new is None:
            log.warn("{address}: ignored a malformed {payload!r}", address=self.group,
                     payload=payload)
            return
        old = master_address([parts[1], parts[2]])
        self.group.switched(new, f"+switch-master from {show(old)}", self.sentinel)
