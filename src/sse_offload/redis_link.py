"""A command connection to Redis that is made again with the hub's backoff when lost.

txredisapi's command protocol (AUTH, SELECT, its reply queue) with replies parsed by one
hiredis reader and left as bytes. The Redis Streams reader (redis_streams.py) holds two:
one blocked in ``XREAD``, one for every other command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

import hiredis
import txredisapi
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .redis_address import RedisAddress
from .redis_protocol import client_endpoint
from .timers import backoff_delay, cancel

#: A command unanswered this long aborts its connection.
REPLY_TIMEOUT: Final = 5.0


class LinkOwner(Protocol):
    """What a link needs of its owner (redis_streams.StreamServer)."""

    reactor: Any
    clock: IReactorTime
    address: RedisAddress


class CommandProtocol(txredisapi.RedisProtocol):
    """txredisapi's command protocol (AUTH, SELECT, its reply queue) with replies parsed
    by one hiredis reader and left as bytes (no number conversion, no decoding)."""

    link: Link

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._replies = hiredis.Reader(
            protocolError=txredisapi.InvalidData, replyError=txredisapi.ResponseError
        )

    def connectionMade(self) -> defer.Deferred[object]:
        d: defer.Deferred[object] = super().connectionMade()
        d.addCallback(lambda _: self.link.ready(self) if self._ready else None)
        d.addErrback(self.link.log_failure, "redis connection set-up failed")
        return d

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.link.lost(self, reason)

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        reader = self._replies
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except txredisapi.InvalidData as e:
                self.link.log.error(
                    "protocol error from redis {server}: {e}", server=self.link, e=e
                )
                self.transport.abortConnection()
                return
            if reply is False:
                return
            self.replyReceived(reply)


class _LinkFactory(protocol.Factory):
    noisy = False
    isLazy = False  # read by txredisapi's protocol when AUTH or SELECT fails

    def __init__(self, link: Link) -> None:
        self.link = link

    def buildProtocol(self, addr: object) -> CommandProtocol:
        a = self.link.address
        p = CommandProtocol(
            charset=None,
            convertNumbers=False,
            password=a.password,
            username=a.username,
            dbid=a.db or None,
            replyTimeout=None,
        )
        p.factory = self
        p.link = self.link
        return p

    def stopTrying(self) -> None:
        """txredisapi calls this when AUTH fails; the link keeps retrying with backoff."""

    def connectionError(self, message: str) -> None:
        self.link.log.error("redis {server}: {message}", server=self.link, message=message)


class Link:
    """One command connection to a Redis server, made again with the hub's backoff."""

    log = Logger(namespace="sse_offload.redis_streams")

    def __init__(
        self,
        server: LinkOwner,
        role: str,
        on_ready: Callable[[CommandProtocol], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.server = server
        self.address = server.address
        self.role = role
        self.protocol: CommandProtocol | None = None
        self._on_ready, self._on_lost = on_ready, on_lost
        self._factory = _LinkFactory(self)
        self._attempt = 0
        self._retry: IDelayedCall | None = None
        self._connecting: defer.Deferred[Any] | None = None
        self._running = False
        self._down_logged = False

    def __str__(self) -> str:
        return f"{self.address} ({self.role})"

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._connect()

    def stop(self) -> defer.Deferred[None]:
        self._running = False
        cancel(self._retry)
        self._retry = None
        if self._connecting is not None:
            self._connecting.cancel()
        p, self.protocol = self.protocol, None
        if p is None:
            return defer.succeed(None)
        done: defer.Deferred[None] = defer.Deferred()
        p.whenDisconnected().addBoth(lambda _: done.callback(None))
        p.transport.loseConnection()
        return done

    def _connect(self) -> None:
        self._retry = None
        if not self._running:
            return
        d = client_endpoint(self.server.reactor, self.address).connect(self._factory)
        self._connecting = d
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, _: object) -> None:
        self._connecting = None

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(defer.CancelledError) or not self._running:
            return
        if not self._down_logged:
            self._down_logged = True
            self.log.warn(
                "cannot reach redis {server}: {why}; retrying with backoff",
                server=self,
                why=failure.getErrorMessage(),
            )
        self._on_lost()
        self._schedule()

    def _schedule(self) -> None:
        if self._running and self._retry is None:
            delay = backoff_delay(self._attempt)  # the hub's backoff
            self._retry = self.server.clock.callLater(delay, self._connect)
            self._attempt += 1

    def ready(self, p: CommandProtocol) -> None:
        if not self._running:
            p.transport.loseConnection()
            return
        self.protocol, self._attempt, self._down_logged = p, 0, False
        self._on_ready(p)

    def lost(self, p: CommandProtocol, reason: Failure) -> None:
        if self.protocol is p:
            self.protocol = None
            if self._running:
                self.log.warn(
                    "lost redis {server}: {why}; reconnecting",
                    server=self,
                    why=reason.getErrorMessage(),
                )
                self._on_lost()
        self._schedule()

    def log_failure(self, failure: Failure, why: str) -> None:
        self.log.failure("{why} ({server})", failure, why=why, server=self)

    def command(
        self, *args: bytes | str | int, timeout: float = REPLY_TIMEOUT
    ) -> defer.Deferred[Any]:
        """Run one command; its Deferred fails with ConnectionError when the link is down
        or is lost first (an unanswered command aborts the connection after ``timeout``)."""
        p = self.protocol
        if p is None:
            return defer.fail(txredisapi.ConnectionError(f"not connected to redis {self}"))
        d: defer.Deferred[Any] = p.execute_command(*args)
        clock = self.server.clock
        deadline = clock.callLater(timeout, p.transport.abortConnection)
        d.addBoth(_disarm, deadline)
        return d


def _disarm(result: object, call: IDelayedCall) -> object:
    cancel(call)
    return result


