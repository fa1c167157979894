"""The pub/sub hub: one subscriber connection per Redis server, one SUBSCRIBE per channel.

The hub knows Redis servers and channels, nothing of HTTP or SSE. However many clients
listen to a channel, this process holds one subscription for it (docs/architecture.md,
difference 1; the original plugin opened a Redis connection per client). What it holds per
channel is a :class:`Subscription` made by the stream layer (``broadcast.ChannelFanout``):
the hub SUBSCRIBEs when a channel's first listener arrives, UNSUBSCRIBEs when its last one
leaves, and hands each subscription the messages of one Redis read as one batch
(``deliver``), which frames them once and writes the same bytes to every listener.

The hub owns reconnection (difference 4): txredisapi 1.6.0 never resubscribes after a
reconnect and its retry loop cannot be given a clock, so the hub runs its own loop over
txredisapi's protocol class and resubscribes every channel that has listeners. What an
outage means to the streams (a gap notice, a close) is the stream layer's: it hears of it
through :class:`HubEvents`. A connection also holds sharded channels (SSUBSCRIBE, Redis 7);
a ``redis-cluster://`` address is a :class:`~sse_offload.cluster.ClusterConnection`, which
holds a connection of this module's kind per node it needs.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .cluster import ClusterConnection
from .hub_types import (
    HubEvents,
    NodeOwner,
    NoEvents,
    Subscription,
    SubscriptionTable,
    no_subscriptions,
    show_channel,
)
from .redis_address import RedisAddress
from .redis_protocol import (
    CHANNEL,
    COMMANDS,
    PATTERN,
    SHARDED,
    HubFactory,
    HubProtocol,
    client_endpoint,
    encode_command,
)
from .sentinel import sentinel_state
from .timers import backoff_delay, cancel

#: A PING on every subscriber connection this often, answered within PING_TIMEOUT or the
#: connection is dropped and made again: txredisapi has no health check, and a half-open TCP
#: connection (a Redis host that vanished) would otherwise look alive until the kernel's
#: 15-minute retransmission timeout.
PING_INTERVAL: Final = 10.0
#: Larger payloads are dropped (and counted): a stream's backlog cap (stream.py) is 1 MiB
#: too, so a bigger message could not reach a client that is even slightly behind, and one
#: hostile publish must not cost every listener a copy in its kernel buffer.
DEFAULT_MAX_MESSAGE: Final = 1 << 20
PING_TIMEOUT: Final = 5.0


class RedisServerConnection(SubscriptionTable):
    """One Redis server: its subscriber connection, retry loop and channels.

    As one node of a Redis Cluster (``cluster`` set) it holds what the cluster gives it, and
    tells the cluster, not the stream layer, of its losses and of what Redis refuses.
    """

    log = Logger()

    def __init__(self, hub: Hub, address: RedisAddress, cluster: NodeOwner | None = None) -> None:
        self.hub = hub
        self.address = address
        self.cluster = cluster
        self.max_message_size = hub.max_message_size
        self.channels: dict[bytes, Subscription] = {}
        #: PSUBSCRIBE patterns, shared and refcounted as channels are.
        self.patterns: dict[bytes, Subscription] = {}
        #: SSUBSCRIBE (sharded) channels; our SUNSUBSCRIBEs not answered yet, per channel.
        self.sharded: dict[bytes, Subscription] = {}
        self._unsubscribing: dict[bytes, int] = {}
        self.protocol: HubProtocol | None = None
        self._factory = HubFactory(self)
        self._attempt = 0
        self._retry: object | None = None
        self._connecting: defer.Deferred[Any] | None = None
        self._running = False
        self._down_logged = False
        self.connections_made = 0
        self.outage_started: float | None = None  # when the connection was lost, or None
        self._outage_call: IDelayedCall | None = None
        self._expired = False  # the outage outlasted the hub's outage_limit
        self._ping_call: IDelayedCall | None = None

    def __str__(self) -> str:
        return str(self.address)

    def describe(self) -> dict[str, object]:
        """This connection for the status page: ``address`` (no password), ``kind``,
        ``connected``, ``down_since`` (clock seconds, or None), ``expired`` (down past the
        outage limit), what it holds, ``connections_made``."""
        return {
            "address": str(self.address), "kind": "pubsub", "connected": self.protocol is not None,
            "down_since": self.outage_started, "expired": self._expired,
            "channels": len(self.channels) + len(self.sharded), "patterns": len(self.patterns),
            "sharded_channels": len(self.sharded), "connections_made": self.connections_made,
            **sentinel_state(self.address),
        }

    # --- life cycle -------------------------------------------------------------------
    def start(self) -> None:
        if not self._running:
            self._running = True
            self._connect()

    def stop(self) -> defer.Deferred[None]:
        self._running = False
        cancel(self._retry)
        self._retry = None
        self._cancel_outage_timer()
        self._cancel_ping()
        if self._connecting is not None:
            self._connecting.cancel()
        if self.protocol is not None:
            p, self.protocol = self.protocol, None
            done: defer.Deferred[None] = defer.Deferred()
            p.whenDisconnected().addBoth(lambda _: done.callback(None))
            p.transport.loseConnection()
            return done
        return defer.succeed(None)

    def _connect(self) -> None:
        self._retry = None
        if not self._running:
            return
        endpoint = client_endpoint(self.hub.reactor, self.address)
        d = endpoint.connect(self._factory)
        self._connecting = d
        d.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, _: object) -> None:
        self._connecting = None

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(defer.CancelledError) or not self._running:
            return
        self._log_down(failure.getErrorMessage())
        if self.cluster is not None:
            self.cluster.node_lost(self)
        else:
            self._outage_begins()
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        if not self._running or self._retry is not None:
            return
        delay = backoff_delay(self._attempt)
        self._attempt += 1
        self._retry = self.hub.clock.callLater(delay, self._connect)

    def _log_down(self, why: str) -> None:
        if self._down_logged:
            return
        self._down_logged = True
        hint = ""
        if self.hub.is_implicit_default(self.address):
            hint = " (nothing configured with --redis; start one, or use --redis embedded)"
        self.log.warn(
            "cannot reach redis {server}: {why}; retrying with backoff, streams wait{hint}",
            server=self, why=why, hint=hint,
        )

    def connection_ready(self, p: HubProtocol) -> None:
        """AUTH done: resubscribe every channel with listeners."""
        if not self._running:
            p.transport.loseConnection()
            return
        self.protocol = p
        self._attempt = 0
        self._down_logged = False
        self.connections_made += 1
        self._unsubscribing.clear()
        for kind in (CHANNEL, PATTERN, SHARDED):
            command = COMMANDS[kind][0]
            p.write_commands(encode_command(command, name) for name in self.subscriptions(kind))
        self.log.info(
            "connected to redis {server}; subscribed {count} channel(s)",
            server=self, count=len(self.channels) + len(self.patterns) + len(self.sharded),
        )
        self._ping_call = self.hub.clock.callLater(PING_INTERVAL, self._ping)
        if self.cluster is not None:
            self.cluster.node_ready(self)
        elif self.outage_started is not None:
            self._outage_ends()

    def connection_lost(self, p: HubProtocol, reason: Failure) -> None:
        if self.protocol is p:
            self.protocol = None
            self._cancel_ping()
            if self._running:
                # Redis closing a subscriber that fell behind (client-output-buffer-limit
                # pubsub) looks like this too, and hits every channel of the connection.
                self.hub.stats["redis_disconnects"] += 1
                self.log.warn(
                    "lost redis {server}: {why}; reconnecting, {count} channel(s) wait",
                    server=self, why=reason.getErrorMessage(),
                    count=len(self.channels) + len(self.patterns) + len(self.sharded),
                )
                if self.cluster is not None:
                    self.cluster.node_lost(self)
                else:
                    self._outage_begins()
        self._schedule_retry()

    # --- outages ----------------------------------------------------------------------------
    def _outage_begins(self) -> None:
        if self.outage_started is not None:
            return
        self.outage_started = self.hub.clock.seconds()
        limit = self.hub.outage_limit
        if limit is not None:
            self._outage_call = self.hub.clock.callLater(limit, self._outage_expired)

    def _outage_ends(self) -> None:
        """Back after an outage: the stream layer tells its streams about the gap."""
        assert self.outage_started is not None
        seconds = self.hub.clock.seconds() - self.outage_started
        self.outage_started = None
        self._expired = False
        self._cancel_outage_timer()
        self.hub.stats["redis_reconnects"] += 1
        self.hub.events.redis_back(self, seconds)

    def _outage_expired(self) -> None:
        self._outage_call = None
        self._expired = True
        self.hub.events.redis_expired(self)

    def _cancel_outage_timer(self) -> None:
        cancel(self._outage_call)
        self._outage_call = None

    # --- health -----------------------------------------------------------------------------
    def _ping(self) -> None:
        self._ping_call = None
        p = self.protocol
        if p is None:
            return
        d = p.ping()
        d.addTimeout(PING_TIMEOUT, self.hub.clock)
        d.addCallbacks(self._pong, self._no_pong, errbackArgs=(p,))

    def _pong(self, _: object) -> None:
        if self.protocol is not None and self._ping_call is None and self._running:
            self._ping_call = self.hub.clock.callLater(PING_INTERVAL, self._ping)

    def _no_pong(self, failure: Failure, p: HubProtocol) -> None:
        if p is not self.protocol:
            return  # that connection is gone already
        self.log.warn(
            "redis {server} did not answer PING within {timeout}s ({why}); reconnecting",
            server=self, timeout=PING_TIMEOUT, why=failure.getErrorMessage(),
        )
        p.transport.abortConnection()

    def _cancel_ping(self) -> None:
        cancel(self._ping_call)
        self._ping_call = None

    def log_failure(self, failure: Failure, why: str) -> None:
        self.log.failure("{why} ({server})", failure, why=why, server=self)

    # --- channels ----------------------------------------------------------------------
    def refuses(self, kind: str, channel: bytes) -> bool:
        """Past the outage limit a new listener is turned away: a new stream does not wait."""
        return self._expired

    def first_joined(self, kind: str, channel: bytes) -> None:
        self.subscribe(channel, kind)

    def last_left(self, kind: str, channel: bytes) -> None:
        # Redis executes commands in order: a later SUBSCRIBE for the same channel wins.
        self.unsubscribe(channel, kind)

    def subscribe(self, channel: bytes, kind: str) -> None:
        """Write the subscribe command of ``kind`` for ``channel``, if connected (else the
        connection subscribes what it holds when it is made)."""
        if self.protocol is not None:
            self.protocol.write_commands([encode_command(COMMANDS[kind][0], channel)])

    def unsubscribe(self, channel: bytes, kind: str) -> None:
        """Write the unsubscribe command of ``kind`` for ``channel``, if connected."""
        if self.protocol is not None:
            if kind == SHARDED:
                self._unsubscribing[channel] = self._unsubscribing.get(channel, 0) + 1
            self.protocol.write_commands([encode_command(COMMANDS[kind][1], channel)])

    def sunsubscribed(self, channel: bytes) -> None:
        """A ``sunsubscribe``: ours answered, or a cluster node dropping a channel we still
        hold there (a single Redis never drops one)."""
        pending = self._unsubscribing.pop(channel, 0)
        if pending > 1:
            self._unsubscribing[channel] = pending - 1
        if not pending and channel in self.sharded and self.cluster is not None:
            self.cluster.node_dropped(self, channel)

    def reply_error(self, error: Exception) -> None:
        """An error answering a (UN)SUBSCRIBE: the cluster's (a MOVED), else logged."""
        if self.cluster is not None:
            self.cluster.node_error(self, error)
            return
        self.log.error("redis {server} answered with an error: {error}", server=self, error=error)

    def dropped(self, channel: bytes, size: int) -> None:
        """A message over the size limit: counted, and logged (the first, then every 100th)."""
        stats = self.hub.stats
        stats["messages_dropped_too_large"] += 1
        if stats["messages_dropped_too_large"] % 100 == 1:
            self.log.warn(
                "dropped a {size}-byte message on {channel} from {server}: over the "
                "{limit}-byte limit ({count} so far)",
                size=size, channel=show_channel(channel), server=self,
                limit=self.max_message_size, count=stats["messages_dropped_too_large"],
            )

    def deliver(self, batch: list[tuple[bytes, bytes]], kind: str = CHANNEL) -> None:
        """The messages of one read, grouped by channel (or by the pattern they matched),
        each group to its subscription."""
        channels = self.channels if kind is CHANNEL else self.subscriptions(kind)
        self.hub.stats["messages_received"] += len(batch)
        if len(batch) == 1:
            name, payload = batch[0]
            sub = channels.get(name)
            if sub is not None:
                sub.deliver([payload])
            return
        by_channel: dict[bytes, list[bytes]] = {}
        for name, payload in batch:
            by_channel.setdefault(name, []).append(payload)
        for name, payloads in by_channel.items():
            sub = channels.get(name)
            if sub is not None:
                sub.deliver(payloads)


#: What the hub holds per address: one server's connection, or a cluster's.
Server = RedisServerConnection | ClusterConnection


class Hub(Service):
    """All Redis servers this process subscribes on.

    ``subscription(channel)`` makes what the hub holds per channel (the stream layer's
    fan-out); ``events`` hears of outages. Both are set by the stream layer
    (:class:`sse_offload.broadcast.Broadcaster`) before the hub starts.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        default_address: RedisAddress | None = None,
        implicit_default: bool = False,
        clock: IReactorTime | None = None,
        outage_limit: float | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        stats: collections.Counter[str] | None = None,
    ) -> None:
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.default_address = default_address
        self.servers: dict[tuple[object, ...], Server] = {}
        #: Seconds a server may stay unreachable before its streams are closed (None: never).
        self.outage_limit = outage_limit
        #: Counters for the log and /metrics, shared with the stream layer and the front.
        self.stats: collections.Counter[str] = (
            stats if stats is not None else collections.Counter()
        )
        self.max_message_size = max_message_size
        self.subscription: Callable[[bytes], Subscription] = no_subscriptions
        self.events: HubEvents = NoEvents()
        self._implicit_default = implicit_default

    def is_implicit_default(self, address: RedisAddress) -> bool:
        return (
            self._implicit_default
            and self.default_address is not None
            and address.key == self.default_address.key
        )

    def startService(self) -> None:
        super().startService()
        if self.default_address is not None:
            self.server(self.default_address)  # connect now: the log says at once if it is down
        for server in self.servers.values():
            server.start()

    def stopService(self) -> defer.Deferred[object]:
        super().stopService()
        d: defer.Deferred[Any] = defer.DeferredList([s.stop() for s in self.servers.values()])
        return d

    def server(self, address: RedisAddress) -> Server:
        """The connection for ``address`` (a Redis Cluster's for a ``redis-cluster://``
        address), created (and started, if running) on first use."""
        server = self.servers.get(address.key)
        if server is None:
            if address.kind == "cluster":
                server = ClusterConnection(self, address, RedisServerConnection)
            else:
                server = RedisServerConnection(self, address)
            self.servers[address.key] = server
            if self.running:
                server.start()
        return server

    def listeners(self) -> Iterator[Any]:
        """Every listener on every server."""
        for server in self.servers.values():
            yield from server.listeners()
