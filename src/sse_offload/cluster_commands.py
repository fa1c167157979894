"""Commands to a Redis Cluster for the publish endpoint (publish.py): each one sent to a node
that can run it, following the cluster's redirections.

``PUBLISH`` runs on any node (the cluster passes the message to every node); ``SPUBLISH``
and ``XADD`` run at the master of their key's slot. There is no slot map here: a command
goes to a node we are connected to, or to the node a ``MOVED`` named for its slot before,
and a ``MOVED`` (or ``ASK``) answer sends it on to the node it names, at most
:data:`MAX_REDIRECTS` times. One command connection per node (redis_link.Link, made again
with the hub's backoff); a connection to each seed node is made at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .cluster_probe import node_address
from .cluster_topology import NodeKey, keyslot, node_text, parse_redirect
from .redis_address import RedisAddress
from .redis_link import Link

#: Redirections followed for one command. A slot moves once per resharding step, so more
#: than a couple in a row means the cluster is still being reconfigured: fail (503) rather
#: than bounce between nodes.
MAX_REDIRECTS: Final = 3
#: Commands whose first argument is a key: they run at the master of its slot.
KEYED: Final = frozenset({b"SPUBLISH", b"XADD"})

log = Logger(namespace="sse_offload.cluster")


@dataclass
class _Node:
    """What a Link needs of its owner: the reactor, the clock and the node's address."""

    reactor: Any
    clock: IReactorTime
    address: RedisAddress


class ClusterCommands:
    """Command connections to a cluster's nodes, and where each slot's commands go."""

    def __init__(self, reactor: Any, clock: IReactorTime, cluster: RedisAddress) -> None:
        self.reactor, self.clock, self.cluster = reactor, clock, cluster
        self.links: dict[NodeKey, Link] = {}
        #: Where a MOVED said a slot is served.
        self.slots: dict[int, NodeKey] = {}
        self._waiters: dict[NodeKey, list[defer.Deferred[Link]]] = {}
        self._running = False

    def __str__(self) -> str:
        return str(self.cluster)

    def start(self) -> None:
        """Connect to every seed node."""
        self._running = True
        for key in self.cluster.seeds:
            self._link(key)

    def stop(self) -> defer.Deferred[Any]:
        """Close every connection; commands waiting for one fail."""
        self._running = False
        for waiters in self._waiters.values():
            for d in waiters:
                d.errback(txredisapi.ConnectionError("the publish endpoint is stopping"))
        self._waiters.clear()
        return defer.DeferredList([link.stop() for link in self.links.values()])

    def command(self, *args: bytes, timeout: float) -> defer.Deferred[Any]:
        """Run one command where it belongs; the reply, or a failure (ResponseError for
        what Redis refuses, ConnectionError when no node can be reached in ``timeout``)."""
        target = None
        if args and args[0].upper() in KEYED and len(args) > 1:
            target = self.slots.get(keyslot(args[1]))
        return defer.Deferred.fromCoroutine(self._run(args, target, timeout))

    async def _run(self, args: tuple[bytes, ...], target: NodeKey | None,
                   timeout: float) -> Any:
        asking = False
        for _ in range(MAX_REDIRECTS + 1):
            link = await self._ready(target, timeout)
            if asking:
                await link.command(b"ASKING", timeout=timeout)
            try:
                return await link.command(*args, timeout=timeout)
            except txredisapi.ResponseError as e:
                redirect = parse_redirect(str(e), link.address.host)
                if redirect is None:
                    raise
                if redirect.kind == "MOVED":
                    self.slots[redirect.slot] = redirect.node
                target, asking = redirect.node, redirect.kind == "ASK"
            except txredisapi.ConnectionError:
                if target is None:
                    raise
                # The slot's node is away (a failover?): any node answers with a MOVED.
                self.slots = {s: k for s, k in self.slots.items() if k != target}
                target, asking = None, False
        raise txredisapi.ResponseError(f"more than {MAX_REDIRECTS} redirections for {args[0]!r}")

    async def _ready(self, target: NodeKey | None, timeout: float) -> Link:
        """A connected link: to ``target`` (waiting up to ``timeout`` for it), else to any
        node connected now."""
        if target is None:
            for link in self.links.values():
                if link.protocol is not None:
                    return link
            if not self.links:
                raise txredisapi.ConnectionError(f"no node of {self} to send to")
            target = next(iter(self.links))
        link = self._link(target)
        if link.protocol is not None:
            return link
        waiter: defer.Deferred[Link] = defer.Deferred()
        self._waiters.setdefault(target, []).append(waiter)
        waiter.addTimeout(timeout, self.clock)
        try:
            return await waiter
        except defer.TimeoutError:
            raise txredisapi.ConnectionError(f"not connected to {node_text(target)}") from None
        finally:
            waiters = self._waiters.get(target, [])
            if waiter in waiters:
                waiters.remove(waiter)

    def _link(self, key: NodeKey) -> Link:
        link = self.links.get(key)
        if link is None:
            node = _Node(self.reactor, self.clock, node_address(self.cluster, key))
            link = self.links[key] = Link(
                node, "publish", lambda _p: self._connected(key), lambda: None
            )
            if self._running:
                link.start()
        return link

    def _connected(self, key: NodeKey) -> None:
        link = self.links[key]
        for waiter in self._waiters.pop(key, []):
            if not waiter.called:
                waiter.callback(link)

