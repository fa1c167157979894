"""Asking a Redis Cluster for its slot map: one short command connection to one node at a
time, ``CLUSTER SHARDS`` (``CLUSTER SLOTS`` where a node does not know SHARDS), closed at
once.

The map is asked for rarely (at start, and when a node is lost, drops a channel or answers
``MOVED``), so a connection of its own each time is cheap, and it can be made to whichever
node answers: a long-lived command connection would be tied to one node, which may be the
one that died.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .cluster_topology import NodeKey, Topology, TopologyError, node_text, parse_shards, parse_slots
from .redis_address import RedisAddress
from .redis_link import CommandProtocol, _LinkFactory
from .redis_protocol import client_endpoint
from .timers import backoff_delay, cancel

#: Connect, AUTH and the reply, from one node: past this the next node is asked. The hub's
#: connect timeout (5 s) is the figure for a SYN to a host that vanished.
PROBE_TIMEOUT: Final = 5.0
#: While a channel waits (a node we need is unreachable) the map is asked for again at the
#: hub's backoff, but at least this often when a node answers: a replica takes over about a
#: node timeout after its master died, and each poll is one short connection to a live
#: node. It bounds the time from a takeover to the resubscription.
POLL_MAX: Final = 1.0

log = Logger(namespace="sse_offload.cluster")


class ClusterUnreachable(Exception):
    """No node answered with a slot map; the text says why each one did not."""


class NotACluster(ClusterUnreachable):
    """Every node that answered said it is not in cluster mode."""


def node_address(cluster: RedisAddress, key: NodeKey) -> RedisAddress:
    """The address of node ``key`` of ``cluster``, with the cluster's credentials."""
    host, port = key
    return RedisAddress("tcp", host, port, username=cluster.username, password=cluster.password)


class _Attempt:
    """One node asked once (the ``link`` its CommandProtocol reports to)."""

    log = log

    def __init__(self, reactor: Any, clock: IReactorTime, address: RedisAddress) -> None:
        self.address = address
        self.done: defer.Deferred[Topology] = defer.Deferred(lambda _: self._close())
        self.protocol: CommandProtocol | None = None
        self._deadline: IDelayedCall | None = clock.callLater(PROBE_TIMEOUT, self._timed_out)
        self._connecting: defer.Deferred[Any] | None = client_endpoint(
            reactor, address
        ).connect(_LinkFactory(self))  # type: ignore[arg-type]
        self._connecting.addCallbacks(self._connected, self._failed)

    def __str__(self) -> str:
        return f"{self.address} (cluster map)"

    def _connected(self, _: object) -> None:
        self._connecting = None

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        if not failure.check(defer.CancelledError):
            self._finish(ClusterUnreachable(failure.getErrorMessage()))

    def ready(self, p: CommandProtocol) -> None:
        """AUTH done: ask for the map."""
        self.protocol = p
        d = p.execute_command(b"CLUSTER", b"SHARDS")
        d.addCallbacks(self._read, self._refused, (parse_shards,), None, (p,), None)

    def _read(self, reply: object, parse: Any) -> None:
        try:
            self._finish(parse(reply, self.address.host))
        except TopologyError as e:
            self._finish(ClusterUnreachable(f"not a slot map: {e}"))

    def _refused(self, failure: Failure, p: CommandProtocol) -> None:
        message = failure.getErrorMessage()
        if not failure.check(txredisapi.ResponseError):
            self._finish(ClusterUnreachable(message))
        elif "cluster support disabled" in message:
            self._finish(NotACluster(f"not in cluster mode ({message})"))
        elif "SHARDS" in message.upper() and p is self.protocol:
            # A node older than Redis 7: its map in the older form.
            d = p.execute_command(b"CLUSTER", b"SLOTS")
            d.addCallbacks(self._read, self._refused, (parse_slots,), None, (p,), None)
        else:
            self._finish(ClusterUnreachable(message))

    def lost(self, p: CommandProtocol, reason: Failure) -> None:
        self._finish(ClusterUnreachable(reason.getErrorMessage()))

    def log_failure(self, failure: Failure, why: str) -> None:
        self._finish(ClusterUnreachable(f"{why}: {failure.getErrorMessage()}"))

    def _timed_out(self) -> None:
        self._deadline = None
        self._finish(ClusterUnreachable(f"no answer within {PROBE_TIMEOUT}s"))

    def _finish(self, result: Topology | Exception) -> None:
        if self.done.called:
            return
        self._close()
        if isinstance(result, Exception):
            self.done.errback(result)
        else:
            self.done.callback(result)

    def _close(self) -> None:
        cancel(self._deadline)
        self._deadline = None
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        p, self.protocol = self.protocol, None
        if p is not None and p.transport is not None:
            p.transport.abortConnection()


def fetch_topology(
    reactor: Any, clock: IReactorTime, cluster: RedisAddress, candidates: list[NodeKey]
) -> defer.Deferred[tuple[Topology, NodeKey]]:
    """The slot map from the first of ``candidates`` that gives one, and that node. Fails
    with :class:`ClusterUnreachable` (:class:`NotACluster` if every node that answered is
    not in cluster mode) when none does. Cancelling it closes the connection in progress."""

    async def ask() -> tuple[Topology, NodeKey]:
        errors: list[Exception] = []
        for key in candidates:
            try:
                topology = await _Attempt(reactor, clock, node_address(cluster, key)).done
            except ClusterUnreachable as e:
                errors.append(e)
                continue
            return topology, key
        why = "; ".join(f"{node_text(k)}: {e}" for k, e in zip(candidates, errors, strict=True))
        if errors and all(isinstance(e, NotACluster) for e in errors):
            raise NotACluster(why)
        raise ClusterUnreachable(why or "no node to ask")

    return defer.Deferred.fromCoroutine(ask())


class MapOwner(Protocol):
    """What a :class:`MapRefresher` serves (cluster.ClusterConnection)."""

    def candidates(self) -> list[NodeKey]: ...

    def map_fetched(self, topology: Topology, asked: NodeKey) -> None: ...

    def map_failed(self, failure: Failure) -> None: ...

    def settled(self) -> bool: ...


class MapRefresher:
    """Asks for a cluster's map, one request at a time (one asked for meanwhile runs
    after it), and again, with the hub's backoff, until its owner is settled."""

    def __init__(self, owner: MapOwner, reactor: Any, clock: IReactorTime,
                 address: RedisAddress) -> None:
        self.owner, self.reactor, self.clock, self.address = owner, reactor, clock, address
        self._running = False
        self._fetching: defer.Deferred[Any] | None = None
        self._again = False
        self._poll: IDelayedCall | None = None
        self._attempt = 0

    def start(self) -> None:
        self._running = True

    def stop(self) -> None:
        self._running = False
        cancel(self._poll)
        self._poll = None
        if self._fetching is not None:
            self._fetching.cancel()

    def refresh(self, why: str) -> None:
        """Ask for the map now (after the request in flight, if any)."""
        if not self._running:
            return
        if self._fetching is not None:
            self._again = True
            return
        cancel(self._poll)
        self._poll, self._again = None, False
        d = fetch_topology(self.reactor, self.clock, self.address, self.owner.candidates())
        self._fetching = d
        d.addCallbacks(self._fetched, self._failed)
        d.addErrback(lambda f: log.failure("cluster map of {c}", f, c=self.address))

    def settled(self) -> None:
        """Nothing waits any more: no poll, and the backoff starts again from its first
        step next time."""
        cancel(self._poll)
        self._poll, self._attempt = None, 0

    def later(self) -> None:
        """Ask again after the backoff, unless a request is already due."""
        if self._running and self._poll is None and self._fetching is None:
            self._schedule(answered=True)

    def _fetched(self, result: tuple[Topology, NodeKey]) -> None:
        self._fetching = None
        self.owner.map_fetched(*result)
        self._next(answered=True)

    def _failed(self, failure: Failure) -> None:
        self._fetching = None
        if failure.check(defer.CancelledError) or not self._running:
            return
        self.owner.map_failed(failure)
        self._next(answered=False)

    def _next(self, answered: bool) -> None:
        if not self._running:
            return
        if self._again:
            self.refresh("asked meanwhile")
        elif answered and self.owner.settled():
            self._attempt = 0
        else:
            self._schedule(answered)

    def _schedule(self, answered: bool) -> None:
        delay = backoff_delay(self._attempt)
        self._attempt += 1
        if answered:
            delay = min(delay, POLL_MAX)
        cancel(self._poll)
        self._poll = self.clock.callLater(delay, self._polled)

    def _polled(self) -> None:
        self._poll = None
        self.refresh("poll")
