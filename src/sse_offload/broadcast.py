"""The stream layer's side of the hub: fan-out per channel, and what all streams share.

The hub (pubsub.py) knows Redis servers and channels; this module knows SSE streams.

- :class:`ChannelFanout` is what the hub holds for each subscribed channel: its streams,
  grouped by (mode, wire). A batch of messages is framed once per group and the same bytes
  object is written to every stream of the group (an HTTP/1.1 chunk is built once, not per
  listener): the per-message hot path.
- :class:`Broadcaster` is the service over all streams of the process: one keepalive timer
  for every stream (not a timer per connection), the slow-client watch, the notice after a
  Redis outage, closing streams whose Redis stays away too long, and the drain on shutdown.
  It starts and stops the hub it serves.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Iterator
from typing import Any, Final, Protocol

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from .events import EnvelopeError, frame_event, parse_envelope
from .hub_types import Listened, show_channel
from .listener_groups import ListenerGroups
from .pubsub import Hub
from .redis_address import RedisAddress
from .redis_protocol import CHANNEL
from .redis_streams import StreamServer
from .routing import SseTarget
from .sse import KEEPALIVE, Mode, frame, http_chunk, retry_field
from .stream import DEFAULT_MAX_PAUSED, SlowClientWatch
from .stream_feed import StreamCursor, StreamFeed
from .timers import cancel

#: The keepalive default: an idle ``sse`` stream gets a comment this often, so proxies and
#: load balancers with idle timeouts keep it open and a dead peer is found. 15 s is nchan's
#: and Mercure's heartbeat interval; 0 disables.
DEFAULT_KEEPALIVE: Final = 15.0
#: On shutdown, streams are closed over this many seconds, in steps of DRAIN_STEP, so a
#: restart does not bring every client back in the same instant; a systemd unit's default
#: stop timeout (90 s) leaves ample room.
DEFAULT_DRAIN: Final = 5.0
DRAIN_STEP: Final = 0.1

_CHUNKED_KEEPALIVE: Final = http_chunk(KEEPALIVE)
_log = Logger(namespace="sse_offload.broadcast")


class Listener(Protocol):
    """What the fan-out writes to: one SSE client (see stream.SSEStream)."""

    mode: Mode
    envelope: bool  # payloads are JSON envelopes (events.parse_envelope)
    chunked: bool
    wrote: bool
    gap: bytes | None  # the notice after a Redis outage (framed, unchunked), or None

    def send(self, data: bytes) -> None:
        """Write ``data`` (already framed for this listener's mode and wire) to the client."""

    def close(self, reason: str = "server") -> None:
        """End the stream from the server side; ``reason`` names the counter."""




def wire(listener: Listener, framed: bytes) -> bytes:
    """``framed`` as this listener's wire wants it: an HTTP/1.1 chunk, or bare."""
    return http_chunk(framed) if listener.chunked else framed


class ChannelFanout:
    """The listeners of one channel on one server, grouped by (mode, envelope, chunked
    wire); ``taps`` take the payloads themselves (the mirror, mirror.py)."""

    __slots__ = ("groups", "name", "stats", "taps")

    def __init__(self, name: bytes, stats: collections.Counter[str]) -> None:
        self.name = name
        self.stats = stats
        self.groups = ListenerGroups()
        self.taps: dict[Any, None] = {}

    def add(self, listener: Listener) -> None:
        if getattr(listener, "takes_payloads", False):
            self.taps[listener] = None
            return
        self.groups.join(listener)

    def remove(self, listener: Listener) -> None:
        if getattr(listener, "takes_payloads", False):
            self.taps.pop(listener, None)
            return
        self.groups.leave(listener)

    def __len__(self) -> int:
        return len(self.taps) + self.groups.count()

    def listeners(self) -> Iterator[Listener]:
        return self.groups.members()

    def deliver(self, payloads: list[bytes]) -> None:
        """Frame ``payloads`` once per group and write the same bytes to each listener."""
        for tap in tuple(self.taps):
            tap.payloads(self.name, payloads)
        framed: dict[tuple[Mode, bool], bytes] = {}
        writes = written = 0
        for (mode, envelope, chunked), group in tuple(self.groups.items()):
            body = framed.get((mode, envelope))
            if body is None:
                body = framed[(mode, envelope)] = (
                    self._envelopes(payloads, mode) if envelope else frame(payloads, mode)
                )
            if not body:
                continue
            data = http_chunk(body) if chunked else body
            # A snapshot: a write may abort a slow listener, which removes it from the group.
            listeners = tuple(group)
            for listener in listeners:
                listener.send(data)
            writes += len(listeners)
            written += len(listeners) * len(data)
        stats = self.stats
        stats["messages_delivered"] += writes * len(payloads)
        stats["stream_writes"] += writes
        stats["bytes_written"] += written

    def _envelopes(self, payloads: list[bytes], mode: Mode) -> bytes:
        """JSON envelopes as events (``sseraw``: their data alone); an invalid one is
        dropped, counted and logged (the first, then every 100th)."""
        out = []
        for payload in payloads:
            try:
                e = parse_envelope(payload)
            except EnvelopeError as why:
                self.stats["messages_dropped_bad_envelope"] += 1
                count = self.stats["messages_dropped_bad_envelope"]
                if count % 100 == 1:
                    _log.warn(
                        "{line}", line=f"dropped a message on {show_channel(self.name)}: "
                        f"not a valid envelope: {why} ({count} so far)",
                    )
                continue
            out.append(e.data if mode is Mode.RAW else frame_event(e))
        return b"".join(out)


class Broadcaster(Service):
    """Every stream of this process, over the hub it starts and stops (module docstring)."""

    log = Logger()

    def __init__(
        self,
        hub: Hub,
        keepalive: float = DEFAULT_KEEPALIVE,
        max_paused: float = DEFAULT_MAX_PAUSED,
        drain: float = DEFAULT_DRAIN,
    ) -> None:
        self.hub = hub
        self.clock = hub.clock
        self.stats = hub.stats
        self.keepalive = keepalive
        self.drain = drain
        #: Streams whose clients stopped reading, and since when (one timer for all).
        self.watch = SlowClientWatch(self.clock, max_paused, self.stats)
        self._keepalive_call: IDelayedCall | None = None
        #: Redis Streams readers, one per server (redis_streams.py), made on first use.
        self.stream_servers: dict[tuple[object, ...], StreamServer] = {}
        #: Mirrored channels (mirror.py), started and stopped with the streams.
        self.mirrors: list[Any] = []
        hub.subscription = self.fanout
        hub.events = self

    def stream_server(self, address: RedisAddress) -> StreamServer:
        server = self.stream_servers.get(address.key)
        if server is None:
            server = self.stream_servers[address.key] = StreamServer(
                self.hub.reactor, self.clock, address, self._feed
            )
            if self.running:
                server.start()
        return server

    def _feed(self, server: StreamServer, key: bytes) -> StreamFeed:
        return StreamFeed(server, key, self.stats, self.hub.max_message_size)

    def join_streams(self, address: RedisAddress, keys: list[bytes], listener: Listener,
                     target: SseTarget, last_event_id: str | None) -> StreamCursor:
        """``listener`` reads Redis Streams ``keys``, resuming after ``last_event_id``."""
        cursor = StreamCursor(self.stream_server(address), listener, keys, target,
                              last_event_id)
        cursor.start()
        return cursor

    def all_listeners(self) -> list[Listener]:
        """Every stream of the process, once each (a stream may listen to several
        channels or keys)."""
        found: dict[Listener, None] = dict.fromkeys(self.hub.listeners())
        for server in self.stream_servers.values():
            found.update(dict.fromkeys(server.listeners()))
        return list(found)

    def fanout(self, channel: bytes) -> ChannelFanout:
        """What the hub holds for a newly subscribed channel."""
        return ChannelFanout(channel, self.stats)

    # --- joining ------------------------------------------------------------------------
    def join(
        self, address: RedisAddress, channel: bytes, listener: Listener, kind: str = CHANNEL
    ) -> bool:
        """``listener`` listens to ``channel`` (of ``kind``: a channel, a pattern or a
        sharded channel) on ``address``. False: it cannot (that server has been away past
        the outage limit) and the listener is closed."""
        server = self.hub.server(address)
        if server.add(channel, listener, kind):
            return True
        listener.close("outage")
        return False

    # --- life cycle ---------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self.hub.startService()
        for server in self.stream_servers.values():
            server.start()
        for mirror in self.mirrors:
            mirror.start()
        if self.keepalive > 0:
            self._keepalive_call = self.clock.callLater(self.keepalive, self._keepalive_tick)
        self.watch.start()

    def stopService(self) -> defer.Deferred[object]:
        super().stopService()
        self.watch.stop()
        cancel(self._keepalive_call)
        self._keepalive_call = None
        d = self._drain()
        d.addCallback(lambda _: defer.DeferredList([m.stop() for m in self.mirrors]))
        d.addCallback(lambda _: defer.DeferredList(
            [self.hub.stopService(), *(s.stop() for s in self.stream_servers.values())]
        ))
        return d

    def _keepalive_tick(self) -> None:
        """One timer for every stream: a comment to each ``sse`` stream idle since the last tick."""
        for listener in self.all_listeners():
            if listener.mode is Mode.SSE and not listener.wrote:
                listener.send(_CHUNKED_KEEPALIVE if listener.chunked else KEEPALIVE)
            listener.wrote = False
        self._keepalive_call = self.clock.callLater(self.keepalive, self._keepalive_tick)

    def _drain(self) -> defer.Deferred[object]:
        """Close every stream, spread over ``drain`` seconds, each ``sse`` one after a
        ``retry:`` hint, so a restart does not bring every client back in the same instant."""
        listeners: list[Listener] = self.all_listeners()
        if not listeners:
            return defer.succeed(None)
        random.shuffle(listeners)
        retry_ms = max(1000, int(self.drain * 1000))
        for listener in listeners:
            if listener.mode is Mode.SSE:
                # A reconnection delay of its own for each client, up to twice the drain period.
                hint = retry_field(random.randint(retry_ms // 2, retry_ms * 2))
                listener.send(wire(listener, hint))
        self.log.info(
            "closing {count} stream(s) over {drain}s", count=len(listeners), drain=self.drain
        )
        steps = max(1, int(self.drain / DRAIN_STEP))
        per_step = -(-len(listeners) // steps)
        done: defer.Deferred[object] = defer.Deferred()

        def close_some() -> None:
            batch, listeners[:] = listeners[:per_step], listeners[per_step:]
            for listener in batch:
                listener.close()
            if listeners:
                self.clock.callLater(DRAIN_STEP, close_some)
            else:
                done.callback(None)

        close_some()
        return done

    # --- Redis outages (HubEvents) ---------------------------------------------------------
    def redis_back(self, server: Listened, seconds: float) -> None:
        """Tell every ``sse`` stream of ``server`` that messages may have been lost (pub/sub
        keeps nothing while a subscriber is away); raw streams get nothing."""
        listeners = [x for x in dict.fromkeys(server.listeners()) if x.gap is not None]
        for listener in listeners:
            gap = listener.gap
            assert gap is not None
            listener.send(wire(listener, gap))
        self.log.info(
            "redis {server} is back after {seconds:.1f}s; told {count} stream(s) about the gap",
            server=server, seconds=seconds, count=len(listeners),
        )

    def redis_expired(self, server: Listened) -> None:
        """``server`` stayed away past the outage limit: close its streams, so their clients
        reconnect (perhaps to a gateway that can reach Redis) instead of waiting in silence."""
        listeners: list[Listener] = list(dict.fromkeys(server.listeners()))
        self.log.warn(
            "redis {server} has been unreachable for {limit}s: closing {count} stream(s)",
            server=server, limit=self.hub.outage_limit, count=len(listeners),
        )
        for listener in listeners:
            listener.close("outage")
