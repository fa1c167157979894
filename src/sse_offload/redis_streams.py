"""The Redis Streams side of the hub: one reader per server for every stream key with
listeners, and the commands the stream layer needs for resuming (XINFO, XRANGE) and for the
mirror (XADD, a lease).

Like pubsub.py this knows Redis servers and keys, nothing of HTTP or SSE. However many
clients read a key, this process reads it once: one connection per server runs
``XREAD BLOCK`` over every key with listeners, from the position each key's reader has
reached, and hands each key's entries to what the stream layer holds for it
(:class:`EntrySubscription`). A second connection runs everything else, including the
``CLIENT UNBLOCK`` that wakes the reader when a key joins. Both are made again with the
hub's backoff when lost; the reader then goes on from the positions it had, so a Redis
outage loses nothing that Redis kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, Protocol

import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .events import ORIGIN, Position, parse_position, position_id
from .redis_address import RedisAddress
from .redis_link import REPLY_TIMEOUT, CommandProtocol, Link
from .sentinel import sentinel_state

#: XREAD blocks at most this long, so a dead reader connection is found (no PING can be
#: sent on a blocked connection): a reply later than BLOCK + REPLY_TIMEOUT aborts it.
BLOCK_MS: Final = 5000
#: Entries per key per XREAD, and per XRANGE page when replaying.
READ_COUNT: Final = 1000
Entry = tuple[bytes, list[bytes]]


class EntrySubscription(Protocol):
    """What the hub holds for one stream key (the stream layer's ``stream_feed.StreamFeed``)."""

    def positioned(self, position: Position) -> None:
        """The reader reads this key from ``position`` on (entries after it follow)."""

    def deliver_entries(self, entries: list[Entry]) -> None:
        """Entries of the key, in order, each after the last one delivered."""

    def add(self, listener: Any) -> None: ...

    def remove(self, listener: Any) -> None: ...

    def __len__(self) -> int: ...

    def listeners(self) -> Iterable[Any]: ...


class StreamServer:
    """The Redis Streams of one server: the reader over every key with listeners, and
    the commands the stream layer asks for (module docstring)."""

    log = Logger(namespace="sse_offload.redis_streams")

    def __init__(
        self,
        reactor: Any,
        clock: IReactorTime,
        address: RedisAddress,
        subscription: Callable[[StreamServer, bytes], EntrySubscription],
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.address = address
        self._subscription = subscription
        self.keys: dict[bytes, EntrySubscription] = {}
        #: Where the reader is in each key; a key without one is being positioned.
        self.positions: dict[bytes, Position] = {}
        self.reader = Link(self, "stream reader", self._reader_ready, self._reader_lost)
        self.control = Link(self, "streams", self._control_ready, self._control_lost)
        self._reader_id: int | None = None
        self._reading: frozenset[bytes] | None = None  # keys of the XREAD in flight
        self._waiting: list[Callable[[], None]] = []  # to run once the control link is up
        self.outage_started: float | None = None

    def __str__(self) -> str:
        return str(self.address)

    def describe(self) -> dict[str, object]:
        """This server's Streams connections for the status page, with the keys of
        ``pubsub.RedisServerConnection.describe``: ``kind`` "streams", ``channels`` the
        stream keys read, ``patterns`` 0, ``expired`` False (streams wait for Redis, however
        long), ``connected`` when both links are up, ``down_since`` the earlier link's;
        ``links`` describes each (the reader and the command link)."""
        links = (self.reader, self.control)
        down = [link.down_since for link in links if link.down_since is not None]
        return {
            "address": str(self.address),
            "kind": "streams",
            "connected": all(link.protocol is not None for link in links),
            "down_since": min(down) if down else None,
            "expired": False,
            "channels": len(self.keys),
            "patterns": 0,
            "connections_made": sum(link.connections_made for link in links),
            "links": [link.describe() for link in links],
            **sentinel_state(self.address),
        }

    def start(self) -> None:
        self.reader.start()
        self.control.start()

    def stop(self) -> defer.Deferred[Any]:
        return defer.DeferredList([self.reader.stop(), self.control.stop()])

    # --- keys -----------------------------------------------------------------------------
    def add(self, key: bytes, listener: object) -> EntrySubscription:
        """``listener`` joins ``key``; the first listener of a key starts reading it."""
        sub = self.keys.get(key)
        if sub is None:
            sub = self.keys[key] = self._subscription(self, key)
            self._position(key)
        sub.add(listener)
        return sub

    def remove(self, key: bytes, listener: object) -> None:
        sub = self.keys.get(key)
        if sub is None:
            return
        sub.remove(listener)
        if not sub:
            del self.keys[key]
            self.positions.pop(key, None)  # the reader leaves it at its next XREAD

    def listeners(self) -> Iterator[Any]:
        for sub in self.keys.values():
            yield from sub.listeners()

    def _position(self, key: bytes) -> None:
        """Read ``key`` from its newest entry on (ORIGIN for a key nobody wrote yet)."""

        def got(reply: list[Entry] | None) -> None:
            sub = self.keys.get(key)
            if sub is None or key in self.positions:
                return
            last = parse_position(reply[0][0]) if reply else None
            self.positions[key] = last or ORIGIN
            sub.positioned(self.positions[key])
            self._wake()

        self.when_up(
            lambda: self.control.command(b"XREVRANGE", key, b"+", b"-", b"COUNT", b"1"), got
        )

    def when_up(
        self,
        command: Callable[[], defer.Deferred[Any]],
        then: Callable[[Any], None],
        failed: Callable[[Failure], None] | None = None,
    ) -> None:
        """Run ``command`` on the control link, again once it is back if it is down or lost
        first, and give its reply to ``then``; a Redis error reply goes to ``failed``."""

        def attempt() -> None:
            command().addCallbacks(then, retry_or_fail)

        def retry_or_fail(failure: Failure) -> None:
            if failure.check(txredisapi.ConnectionError, defer.TimeoutError):
                self._waiting.append(attempt)
                if self.control.protocol is not None:
                    self._control_ready(self.control.protocol)
            elif failed is not None:
                failed(failure)
            else:
                self.control.log_failure(failure, "a streams command failed")

        if self.control.protocol is None:
            self._waiting.append(attempt)
        else:
            attempt()

    # --- the control link ---------------------------------------------------------------
    def _control_ready(self, p: CommandProtocol) -> None:
        waiting, self._waiting = self._waiting, []
        for attempt in waiting:
            attempt()
        self._wake()

    def _control_lost(self) -> None:
        pass

    # --- the reader ---------------------------------------------------------------------
    def _reader_ready(self, p: CommandProtocol) -> None:
        self._reader_id = None
        self._reading = None
        if self.outage_started is not None:
            seconds = self.clock.seconds() - self.outage_started
            self.outage_started = None
            self.log.info(
                "redis {server} is back after {seconds:.1f}s: streams read on from where they were",
                server=self,
                seconds=seconds,
            )
        self.reader.command(b"CLIENT", b"ID").addCallbacks(self._got_id, lambda f: None)

    def _got_id(self, reply: int) -> None:
        self._reader_id = int(reply)
        self._read()

    def _reader_lost(self) -> None:
        self._reading = None
        self._reader_id = None
        if self.outage_started is None:
            self.outage_started = self.clock.seconds()

    def _wake(self) -> None:
        """Keys changed: start a read, or unblock the one in flight so the next has them."""
        if self._reader_id is None:
            return
        if self._reading is None:
            self._read()
        elif self._reading != frozenset(self.positions) and self.control.protocol is not None:
            d = self.control.command(b"CLIENT", b"UNBLOCK", b"%d" % self._reader_id)
            d.addCallbacks(self._unblocked, lambda f: None)

    def _unblocked(self, count: int) -> None:
        if count == 0 and self._reading is not None:
            # The XREAD had not blocked yet (it went on the other connection): try again.
            self.clock.callLater(0.02, self._wake)

    def _read(self) -> None:
        if self._reader_id is None or self.reader.protocol is None:
            return
        keys = list(self.positions)
        if not keys:
            self._reading = None
            return
        self._reading = frozenset(keys)
        ids = [position_id(self.positions[k]) for k in keys]
        d = self.reader.command(
            b"XREAD",
            b"COUNT",
            b"%d" % READ_COUNT,
            b"BLOCK",
            b"%d" % BLOCK_MS,
            b"STREAMS",
            *keys,
            *ids,
            timeout=BLOCK_MS / 1000 + REPLY_TIMEOUT,
        )
        d.addCallbacks(self._got, self._read_failed)

    def _got(self, reply: list[list[Any]] | None) -> None:
        self._reading = None
        for key, entries in reply or ():
            if key not in self.positions or not entries:
                continue
            last = parse_position(entries[-1][0])
            if last is not None:
                self.positions[key] = last
            sub = self.keys.get(key)
            if sub is not None:
                sub.deliver_entries(entries)
        self._read()

    def _read_failed(self, failure: Failure) -> None:
        self._reading = None
        if failure.check(txredisapi.ResponseError):
            # e.g. WRONGTYPE: a key that is not a stream. Its listeners stay; logged once a
            # read, retried after a pause rather than in a tight loop.
            self.log.error(
                "redis {server}: XREAD failed: {why}", server=self, why=failure.getErrorMessage()
            )
            self.clock.callLater(1.0, self._read)

    # --- what the stream layer asks -----------------------------------------------------
    def range_after(
        self,
        key: bytes,
        after: Position,
        count: int = READ_COUNT,
    ) -> Callable[[], defer.Deferred[Any]]:
        """XRANGE of up to ``count`` entries after ``after`` (a command for :meth:`when_up`)."""
        return lambda: self.control.command(
            b"XRANGE", key, b"(" + position_id(after), b"+", b"COUNT", b"%d" % count
        )

    def tail(self, key: bytes, count: int) -> Callable[[], defer.Deferred[Any]]:
        """The newest ``count`` entries, newest first (XREVRANGE)."""
        return lambda: self.control.command(b"XREVRANGE", key, b"+", b"-", b"COUNT", b"%d" % count)

    def info(self, key: bytes) -> Callable[[], defer.Deferred[Any]]:
        """XINFO STREAM as a dict of bytes keys, or None when there is no such key."""

        def run() -> defer.Deferred[Any]:
            d = self.control.command(b"XINFO", b"STREAM", key)
            d.addCallbacks(lambda r: dict(zip(r[::2], r[1::2], strict=False)), _no_stream)
            return d

        return run


def _no_stream(failure: Failure) -> object:
    failure.trap(txredisapi.ResponseError)
    if "no such key" in failure.getErrorMessage():
        return None
    return failure
