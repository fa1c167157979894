"""The sentinels of a Sentinel address: asking them which master is current
(:class:`Sentinels`), and watching one of them for switches (:class:`SwitchWatcher`,
``SUBSCRIBE +switch-master``).

sentinel.py's group is both, per address per process, and hears of every switch of its
master (:class:`WatchOwner`); this module knows nothing of the connections to the master.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.interfaces import IStreamClientEndpoint as IEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from .redis_address import RedisAddress
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
PlainEndpoint = Callable[[Any, RedisAddress], IEndpoint]


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


class SentinelError(Exception):
    """No usable master: no sentinel named one, or the one named refused us. The message
    says why, sentinel by sentinel."""


def auth_command(username: str | None, password: str) -> tuple[bytes, ...]:
    """``AUTH [username] password``, as bytes."""
    secret = password.encode()
    return (b"AUTH", username.encode(), secret) if username else (b"AUTH", secret)


class _Quiet(protocol.Factory):
    noisy = False  # every connect would log "Starting factory"


class Sentinels:
    """The sentinels of one address, and what they say: which master they name
    (:meth:`resolve`), and the newest configuration (:meth:`newest_master`)."""

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        plain: PlainEndpoint,
        clock: IReactorTime | None = None,
    ) -> None:
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.address = address
        self.name = address.master_name.encode()
        self._plain = plain
        #: Asked in this order: the one that answered (or told of a switch) last first, the
        #: one that named an unusable master last.
        self.sentinels: list[Target] = list(address.sentinels)

    def __str__(self) -> str:
        return str(self.address)

    async def resolve(self) -> tuple[Target, Target]:
        """(master, the sentinel that named it); raises SentinelError when none does."""
        problems: list[str] = []
        for sentinel in list(self.sentinels):
            try:
                d = defer.Deferred.fromCoroutine(self._ask(sentinel))
                reply = await d.addTimeout(SENTINEL_TIMEOUT, self.clock)
            except defer.CancelledError:
                raise
            except Exception as e:
                problems.append(f"sentinel {show(sentinel)}: {why(e)}")
                continue
            target = master_address(reply)
            if target is None:
                said = "does not know it" if reply is None else f"answered {reply!r}"
                problems.append(f"sentinel {show(sentinel)} {said}")
                continue
            if problems:
                log.warn(
                    "{address}: skipped {problems}", address=self, problems="; ".join(problems)
                )
            self.sentinels.remove(sentinel)
            self.sentinels.insert(0, sentinel)
            return target, sentinel
        raise SentinelError(
            f"no sentinel names master {self.address.master_name!r}: {'; '.join(problems)}"
        )

    async def _ask(self, sentinel: Target, *command: bytes) -> Any:
        """One sentinel's reply to ``command`` (default: get-master-addr-by-name)."""
        command = command or (b"SENTINEL", b"get-master-addr-by-name", self.name)
        client = await self.connect_sentinel(sentinel, RespClient())
        try:
            return await client.command(*command)
        finally:
            client.transport.loseConnection()

    async def connect_sentinel(self, sentinel: Target, client: RespClient) -> RespClient:
        """``client`` connected to ``sentinel`` and logged in (``?sentinel_password=``)."""
        factory = _Quiet.forProtocol(lambda: client)
        endpoint = self._plain(self.reactor, RedisAddress("tcp", *sentinel))
        await endpoint.connect(factory)
        a = self.address
        if a.sentinel_password is not None:
            try:
                await client.command(*auth_command(a.sentinel_username, a.sentinel_password))
            except BaseException:
                client.transport.abortConnection()
                raise
        return client

    async def newest_master(self) -> tuple[Target, Target] | None:
        """(master, sentinel) of the newest configuration (highest ``config-epoch``) any
        sentinel reports (``SENTINEL MASTER``), all asked at once; None if none answers."""
        sentinels = list(self.sentinels)
        asked = [
            defer.Deferred.fromCoroutine(
                self._ask(s, b"SENTINEL", b"MASTER", self.name)
            ).addTimeout(SENTINEL_TIMEOUT, self.clock)
            for s in sentinels
        ]
        newest: tuple[int, Target, Target] | None = None
        answers = await defer.DeferredList(asked, consumeErrors=True)
        for sentinel, (ok, reply) in zip(sentinels, answers, strict=True):
            if not (ok and isinstance(reply, list)):
                continue  # down, silent, or does not know the name
            fields = dict(zip(reply[::2], reply[1::2], strict=False))
            target = master_address([fields.get(b"ip"), fields.get(b"port")])
            epoch = fields.get(b"config-epoch")
            if target is None or not isinstance(epoch, bytes) or not epoch.isdigit():
                continue
            if newest is None or int(epoch) > newest[0]:
                newest = int(epoch), target, sentinel
        return (newest[1], newest[2]) if newest else None


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
