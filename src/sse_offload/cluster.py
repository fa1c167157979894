"""The hub's side of a Redis Cluster (``redis-cluster://h1:p1,h2:p2``).

A :class:`ClusterConnection` is what the hub holds for a cluster address, with the same
interface as a single server's connection (pubsub.RedisServerConnection): streams join and
leave channels, and the stream layer hears of outages. Inside it holds:

- the slot map, asked of any node that answers (cluster_probe.py; seeds first);
- one subscriber connection per node it needs, each a pubsub.RedisServerConnection that
  reports to the cluster (its reconnect loop, PING and resubscribe are that class's);
- sharded channels (``sse:ssubscribe=``, SPUBLISH publishers), each subscribed at the master
  that owns its slot; a node connection exists only while it holds some;
- classic channels and patterns (``subscribe=``, ``psubscribe=``) on one node, any master:
  in a cluster PUBLISH reaches every node, so one subscription serves the whole cluster.

The fan-out of a channel belongs to the cluster, not to a node: when a channel moves, only
its subscription moves, and its streams stay open. What moves it: Redis dropping a sharded
channel (``sunsubscribe``: its slot migrated, or its node became a replica), a ``MOVED``
answering an SSUBSCRIBE, and a node connection lost (a failover). Each refreshes the map and
resubscribes every channel whose owner changed; while a node we need stays unreachable the
map is asked again, with the hub's backoff capped at cluster_probe.POLL_MAX, until a replica has
taken over. Messages published while a channel had no subscription are lost (pub/sub keeps
nothing), so its streams get the gap notice as after a single Redis outage, and the hub's
outage limit applies to channels that wait too long.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any, Final

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from .cluster_outages import Waiting
from .cluster_probe import MapRefresher, NotACluster, node_address
from .cluster_state import describe
from .cluster_topology import NodeKey, Topology, keyslot, node_text, parse_redirect
from .hub_types import (
    HubContext,
    NodeConnection,
    NodeOwner,
    Subscription,
    SubscriptionTable,
    show_channel,
)
from .redis_address import RedisAddress
from .redis_protocol import CHANNEL, PATTERN, SHARDED

#: Channel names a "moved" log line shows; the rest are counted.
MOVES_SHOWN: Final = 5


class ClusterConnection(SubscriptionTable):
    """A Redis Cluster: its slot map, a subscriber connection per node it needs, and every
    channel, pattern and sharded channel streams listen to (module docstring)."""

    log = Logger(namespace="sse_offload.cluster")

    def __init__(
        self,
        hub: HubContext,
        address: RedisAddress,
        make_node: Callable[[Any, RedisAddress, NodeOwner], NodeConnection],
    ) -> None:
        self.hub = hub
        self.address = address
        self._make_node = make_node
        #: Classic channels and patterns: the very dicts of the node that holds them.
        self.channels: dict[bytes, Subscription] = {}
        self.patterns: dict[bytes, Subscription] = {}
        #: Every sharded channel, and the node each one is subscribed at (or waits for).
        self.sharded: dict[bytes, Subscription] = {}
        self.holder: dict[bytes, NodeKey] = {}
        self._slots: dict[bytes, int] = {}
        self.nodes: dict[NodeKey, NodeConnection] = {}
        self.classic: NodeKey | None = None
        self.topology: Topology | None = None
        self.connections_made = 0
        #: Channels with no subscription since when: each gets the gap notice once
        #: subscribed again, and is closed past the hub's outage limit.
        self.waiting = Waiting(hub, self, str(address))
        self._down: set[NodeKey] = set()  # node connections lost and not made again
        #: No node has given a map since then (None: one has, the last time we asked).
        self.unreachable_since: float | None = None
        self._running = False
        self.refresher = MapRefresher(self, hub.reactor, hub.clock, address)
        #: Picks the node for classic channels: at random, so that the processes of the
        #: gateways spread their classic subscriptions (and Redis's work for each PUBLISH)
        #: over the masters.
        self.choose: Callable[[list[NodeKey]], NodeKey] = random.choice

    def __str__(self) -> str:
        return str(self.address)

    # --- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Ask for the map; node connections follow from it."""
        if not self._running:
            self._running = True
            self.refresher.start()
            for node in self.nodes.values():
                node.start()
            self.refresher.refresh("start")

    def stop(self) -> defer.Deferred[None]:
        """Close every node connection; nothing is retried after."""
        self._running = False
        self.refresher.stop()
        self.waiting.stop()
        d = defer.DeferredList([n.stop() for n in self.nodes.values()])
        return d.addCallback(lambda _: None)

    # --- channels -----------------------------------------------------------------------
    def refuses(self, kind: str, channel: bytes) -> bool:
        """Past the outage limit, a channel whose node is away turns new listeners away."""
        return self.waiting.expired and not self._servable(kind, channel)

    def first_joined(self, kind: str, channel: bytes) -> None:
        """Subscribe ``channel`` where it belongs."""
        self._place(kind, channel)

    def last_left(self, kind: str, channel: bytes) -> None:
        """Unsubscribe ``channel`` where it is held (a node left holding nothing closes)."""
        self.waiting.forget((kind, channel))
        if kind == SHARDED:
            self._slots.pop(channel, None)
            key = self.holder.pop(channel, None)
            node = self.nodes.get(key) if key is not None else None
            if node is not None:
                node.sharded.pop(channel, None)
                node.unsubscribe(channel, SHARDED)
                self._drop_if_idle(key)  # type: ignore[arg-type]
        elif self.classic is not None:
            self.nodes[self.classic].unsubscribe(channel, kind)

    def owner(self, channel: bytes) -> NodeKey | None:
        """The master of ``channel``'s slot, as the map says (None: no map, or no owner)."""
        if self.topology is None:
            return None
        slot = self._slots.get(channel)  # computed once per channel: a map visits them all
        return self.topology.owner(keyslot(channel) if slot is None else slot)

    def _place(self, kind: str, channel: bytes) -> None:
        """Subscribe a new channel where it belongs, or let it wait for the map."""
        if kind != SHARDED:
            if self.classic is not None:
                self.nodes[self.classic].subscribe(channel, kind)
            else:
                self._wait_for([(kind, channel)], only_if_down=True)
            return
        self._slots[channel] = keyslot(channel)
        key = self.owner(channel)
        if key is None:
            self._wait_for([(kind, channel)], only_if_down=True)
            return
        node = self._node(key)
        node.sharded[channel] = self.sharded[channel]
        self.holder[channel] = key
        node.subscribe(channel, SHARDED)
        if node.protocol is None:
            self._wait_for([(kind, channel)], only_if_down=True)

    def _servable(self, kind: str, channel: bytes) -> bool:
        """Would ``channel`` be subscribed at a connected node now?"""
        key = self.classic if kind != SHARDED else self.holder.get(channel, self.owner(channel))
        node = self.nodes.get(key) if key is not None else None
        return node is not None and node.protocol is not None

    def _unserved(self) -> list[tuple[str, bytes]]:
        """Every channel not subscribed at a connected node."""
        return [(kind, ch) for kind in (CHANNEL, PATTERN, SHARDED)
                for ch in self.subscriptions(kind) if not self._servable(kind, ch)]

    # --- nodes ----------------------------------------------------------------------------
    def _node(self, key: NodeKey) -> NodeConnection:
        node = self.nodes.get(key)
        if node is None:
            node = self.nodes[key] = self._make_node(self.hub, node_address(self.address, key),
                                                     self)
            if self._running:
                node.start()
        return node

    def _drop_if_idle(self, key: NodeKey) -> None:
        """Close a node connection that holds nothing any more."""
        node = self.nodes.get(key)
        if node is None or key == self.classic or node.sharded:
            return
        del self.nodes[key]
        self._down.discard(key)
        node.stop().addErrback(lambda f: self.log.failure("closing {node}", f, node=node_text(key)))

    def _key(self, node: Any) -> NodeKey:
        return (node.address.host, node.address.port)

    def _held(self, node: NodeConnection) -> list[tuple[str, bytes]]:
        held = [(SHARDED, ch) for ch in node.sharded]
        if self._key(node) == self.classic:
            held += [(CHANNEL, ch) for ch in self.channels]
            held += [(PATTERN, p) for p in self.patterns]
        return held

    def node_ready(self, node: Any) -> None:
        """A node connection is made and has subscribed what it holds."""
        key = self._key(node)
        self.connections_made += 1
        self._down.discard(key)
        self.waiting.resume(self._held(node), f"node {node_text(key)}")
        if self.settled():
            self.refresher.settled()

    def node_lost(self, node: Any) -> None:
        """A node connection is lost (or could not be made): its channels wait, and the
        map is asked for again (a replica may be taking over)."""
        key = self._key(node)
        if key in self._down or self.nodes.get(key) is not node:
            return
        self._down.add(key)
        held = self._held(self.nodes[key])
        self._wait_for(held)
        self.log.warn("{line}", line=f"redis cluster {self}: node {node_text(key)} is "
                      f"unreachable; {len(held)} channel(s) wait, asking for the slot map")
        self.refresher.refresh("node lost")

    def node_dropped(self, node: Any, channel: bytes) -> None:
        """A node dropped a sharded channel we hold there: its slot moved."""
        slot = keyslot(channel)
        self.log.info("{line}", line=f"redis cluster {self}: node {node_text(self._key(node))} "
                      f"dropped sharded channel {show_channel(channel)} (slot {slot}); "
                      "asking for the slot map")
        self._wait_for([(SHARDED, channel)])
        self.refresher.refresh("channel dropped")

    def node_error(self, node: Any, error: Exception) -> None:
        """A node refused a command: a MOVED or ASK moves the slot's channels; any other
        error is logged and the map asked for again."""
        key = self._key(node)
        redirect = parse_redirect(str(error), key[0])
        if redirect is None:
            self.log.error("{line}", line=f"redis cluster {self}: node {node_text(key)} "
                           f"answered with an error: {error}")
            self.refresher.refresh("error")
            return
        moving = [ch for ch in node.sharded if self._slots.get(ch) == redirect.slot]
        self._wait_for([(SHARDED, ch) for ch in moving])
        if redirect.kind == "MOVED" and self.topology is not None:
            self.topology.moved(redirect.slot, redirect.node)
            self._relocate(dict.fromkeys(moving, redirect.node), f"MOVED from {node_text(key)}")
            self.refresher.refresh("MOVED")
        else:
            # ASK: the slot is being migrated; ask again once it may be done, not at once
            self.refresher.later()

    # --- the map (cluster_probe.MapRefresher asks for it) ---------------------------------
    def candidates(self) -> list[NodeKey]:
        """Nodes to ask for the map, the likeliest to answer first: connected ones, then
        the map's, then the seeds; nodes we lost last."""
        keys = [k for k, n in self.nodes.items() if n.protocol is not None]
        if self.topology is not None:
            keys += [n.key for n in self.topology.nodes() if not n.failed]
        keys += list(self.address.seeds)
        return [k for k in dict.fromkeys(keys) if k not in self._down] + sorted(self._down)

    def map_fetched(self, topology: Topology, asked: NodeKey) -> None:
        """A node gave the map: put it in force."""
        self.unreachable_since = None
        old, self.topology = self.topology, topology
        if old is None or old.summary() != topology.summary():
            self.log.info("{line}", line=f"redis cluster {self}: slot map from "
                          f"{node_text(asked)}: {topology.summary() or 'no slot served'}")
        if topology.covered() == 0:
            self.log.error("{line}", line=f"redis cluster {self}: no node serves any slot "
                           "(a cluster being created?); asking again")
        self._apply()

    def map_failed(self, failure: Failure) -> None:
        """No node gave the map: every channel not subscribed at a connected node waits."""
        if self.unreachable_since is None:
            self.unreachable_since = self.hub.clock.seconds()
            hint = " (is it a cluster? a standalone Redis takes redis://)" if failure.check(
                NotACluster) else ""
            self.log.warn("{line}", line=f"redis cluster {self}: no node gave the slot map "
                          f"({failure.getErrorMessage()}){hint}; retrying with backoff, "
                          "streams wait")
        self._wait_for(self._unserved())

    def settled(self) -> bool:
        """Is every channel subscribed at a connected node (no need to ask again)?"""
        return self.classic is not None and not self.waiting and all(
            ch in self.holder for ch in self.sharded
        )

    def _apply(self) -> None:
        """Put the map in force: every sharded channel at its slot's master, the classic
        ones at a node we can reach; what waits at a connected node is subscribed again."""
        moves = {}
        for channel in self.sharded:
            key = self.owner(channel)
            if key is not None and key != self.holder.get(channel):
                moves[channel] = key
        self._relocate(moves, "slot map")
        self._choose_classic()
        again: dict[NodeKey, list[tuple[str, bytes]]] = {}
        for kind, channel in list(self.waiting):
            key = self.classic if kind != SHARDED else self.holder.get(channel)
            if key is not None and self._servable(kind, channel):
                again.setdefault(key, []).append((kind, channel))
        for key, items in again.items():
            for kind, channel in items:
                self.nodes[key].subscribe(channel, kind)
            self.waiting.resume(items, f"node {node_text(key)}")
        for key in list(self.nodes):
            self._drop_if_idle(key)

    def _relocate(self, moves: dict[bytes, NodeKey], why: str) -> None:
        """Subscribe each sharded channel at its new node, leaving the old one: one log
        line, and one gap notice, per pair of nodes."""
        groups: dict[tuple[NodeKey | None, NodeKey], list[bytes]] = {}
        for channel, key in moves.items():
            old_key = self.holder.get(channel)
            old = self.nodes.get(old_key) if old_key is not None else None
            if old is not None:
                old.sharded.pop(channel, None)
                if old.protocol is not None and (SHARDED, channel) not in self.waiting:
                    old.unsubscribe(channel, SHARDED)
            groups.setdefault((old_key, key), []).append(channel)
        # Messages published between the old subscription and the new one are lost: a gap
        # notice. A channel subscribed for the first time has missed nothing.
        self._wait_for([(SHARDED, ch) for ch in moves if ch in self.holder])
        for (old_key, key), channels in groups.items():
            node = self._node(key)
            for channel in channels:
                node.sharded[channel] = self.sharded[channel]
                self.holder[channel] = key
                node.subscribe(channel, SHARDED)
            names = ", ".join(show_channel(ch) for ch in channels[:MOVES_SHOWN])
            more = len(channels) - MOVES_SHOWN
            where = node_text(old_key) if old_key is not None else "nowhere"
            self.log.info("{line}", line=f"redis cluster {self}: {len(channels)} sharded "
                          f"channel(s) moved from {where} to {node_text(key)} ({why}): "
                          f"{names}" + (f" and {more} more" if more > 0 else ""))
            if node.protocol is not None:
                self.waiting.resume([(SHARDED, ch) for ch in channels], f"node {node_text(key)}")
            if old_key is not None:
                self._drop_if_idle(old_key)

    def _choose_classic(self) -> None:
        """Classic channels on a master we can reach, the current one while it is fine."""
        if self.topology is None:
            return
        masters = [n.key for n in self.topology.masters()]
        alive = {n.key for n in self.topology.nodes() if not n.failed}
        current = self.classic
        # A replica serves classic pub/sub as well as a master: no move while it is up.
        if current is not None and current in alive and current not in self._down:
            return
        usable = [k for k in masters if k not in self._down and k != current]
        connected = [k for k in usable if k in self.nodes and self.nodes[k].protocol]
        if not usable:
            return
        # A move prefers a node we are connected to already.
        choice = self.choose((connected if current is not None else []) or usable)
        if current is not None:
            old = self.nodes[current]
            if old.protocol is not None:
                for kind in (CHANNEL, PATTERN):
                    for name in self.subscriptions(kind):
                        old.unsubscribe(name, kind)
            old.channels, old.patterns = {}, {}
            self._wait_for([(k, ch) for k in (CHANNEL, PATTERN) for ch in self.subscriptions(k)])
        node = self._node(choice)
        self.classic = choice
        node.channels, node.patterns = self.channels, self.patterns
        for kind in (CHANNEL, PATTERN):
            for name in self.subscriptions(kind):
                node.subscribe(name, kind)
        self.log.info("{line}", line=f"redis cluster {self}: classic channels and patterns "
                      f"({len(self.channels) + len(self.patterns)}) on node {node_text(choice)}"
                      + (f", moved from {node_text(current)}" if current else ""))
        if current is not None:
            self._drop_if_idle(current)
        if node.protocol is not None:
            self.waiting.resume(self._held(node), f"node {node_text(choice)}")

    def _wait_for(self, items: Iterable[tuple[str, bytes]], only_if_down: bool = False) -> None:
        """These channels have no subscription from now (``only_if_down``: only while the
        cluster is in an outage, as a new stream waits during one)."""
        if not only_if_down or self.waiting or self.unreachable_since is not None:
            self.waiting.add(items)

    # --- state ----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Is every channel subscribed, at a connected node?"""
        return self.topology is not None and not self.waiting and not (
            self.classic is not None and self.classic in self._down
        ) and all(n.protocol is not None for n in self.nodes.values())

    @property
    def protocol(self) -> Any:
        """A node's connection while :attr:`connected`, else None (what /health reads of
        a server)."""
        if not self.connected:
            return None
        return next((n.protocol for n in self.nodes.values()), True)

    def describe(self) -> dict[str, Any]:
        """The cluster's state for a status page (cluster_state.describe)."""
        return describe(self)
