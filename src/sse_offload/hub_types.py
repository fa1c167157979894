"""What the hub and the stream layer know of each other, and what a hub server is.

The hub (pubsub.py, cluster.py) holds, per subscribed channel, a :class:`Subscription` the
stream layer made, and tells the stream layer of outages through :class:`HubEvents`; it
never imports the stream layer. The rest is what a Redis Cluster (cluster.py) and the
connections to its nodes (``pubsub.RedisServerConnection``) know of each other and of the
hub, so that cluster.py need not import pubsub.py, which holds it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from .redis_protocol import CHANNEL, KINDS, PATTERN


class Subscription(Protocol):
    """What the hub holds for one subscribed channel: its listeners, as the stream layer
    groups them (``broadcast.ChannelFanout``). The hub only adds, removes, counts and
    delivers; what a listener is, and how a message reaches it, it does not know."""

    def add(self, listener: Any) -> None: ...

    def remove(self, listener: Any) -> None: ...

    def __len__(self) -> int: ...

    def deliver(self, payloads: list[bytes]) -> None:
        """The messages of one Redis read for this channel, in order."""

    def listeners(self) -> Iterable[Any]: ...


class Listened(Protocol):
    """What an outage event names: a server (or, in a cluster, the channels a node held),
    shown in log lines, and the listeners it concerns."""

    def listeners(self) -> Iterable[Any]: ...


class HubEvents(Protocol):
    """What the stream layer hears of a Redis server's outages."""

    def redis_back(self, server: Listened, seconds: float) -> None:
        """``server`` is connected again after ``seconds`` of outage, its channels
        resubscribed: what was published meanwhile is lost (pub/sub keeps nothing)."""

    def redis_expired(self, server: Listened) -> None:
        """``server`` has been unreachable for longer than the hub's ``outage_limit``."""


class SubscriptionTable:
    """What a hub server holds, by kind (redis_protocol's CHANNEL, PATTERN, SHARDED) and
    name, refcounted by listeners: a name's first listener subscribes it
    (:meth:`first_joined`), its last one to leave unsubscribes it (:meth:`last_left`). One
    server's connection (pubsub.py) and a cluster (cluster.py) say what those mean."""

    hub: HubContext
    channels: dict[bytes, Subscription]
    patterns: dict[bytes, Subscription]
    sharded: dict[bytes, Subscription]

    def subscriptions(self, kind: str) -> dict[bytes, Subscription]:
        """What is held of ``kind``, by name."""
        return self.channels if kind == CHANNEL else self.patterns if kind == PATTERN else (
            self.sharded)

    def refuses(self, kind: str, channel: bytes) -> bool:
        """Whether a new listener of ``channel`` is turned away (its server has been
        unreachable past the outage limit: a new stream does not wait either)."""
        return False

    def first_joined(self, kind: str, channel: bytes) -> None:
        """``channel`` has its first listener: subscribe it."""

    def last_left(self, kind: str, channel: bytes) -> None:
        """``channel``'s last listener left (it is no longer held): unsubscribe it."""

    def add(self, channel: bytes, listener: object, kind: str = CHANNEL) -> bool:
        """``listener`` joins ``channel`` of ``kind``. False: it was not added
        (:meth:`refuses`)."""
        if self.refuses(kind, channel):
            return False
        subs = self.subscriptions(kind)
        sub = subs.get(channel)
        if sub is None:
            sub = subs[channel] = self.hub.subscription(channel)
            self.first_joined(kind, channel)
        sub.add(listener)
        return True

    def remove(self, channel: bytes, listener: object, kind: str = CHANNEL) -> None:
        """``listener`` leaves ``channel`` of ``kind``."""
        subs = self.subscriptions(kind)
        sub = subs.get(channel)
        if sub is None:
            return
        sub.remove(listener)
        if not sub:
            del subs[channel]
            self.last_left(kind, channel)

    def listeners(self) -> Iterator[Any]:
        """Every listener of every channel, pattern and sharded channel held."""
        for kind in KINDS:
            for sub in self.subscriptions(kind).values():
                yield from sub.listeners()


class NodeOwner(Protocol):
    """What a connection to one node of a Redis Cluster reports to, in place of the
    outage events of a server of its own (cluster.ClusterConnection)."""

    def node_ready(self, node: Any) -> None:
        """``node`` is connected and has resubscribed what it holds."""

    def node_lost(self, node: Any) -> None:
        """``node`` lost its connection, or could not make one."""

    def node_dropped(self, node: Any, channel: bytes) -> None:
        """``node`` dropped the sharded ``channel`` we still hold there (its slot moved)."""

    def node_error(self, node: Any, error: Exception) -> None:
        """``node`` refused a command (a ``MOVED`` for an SSUBSCRIBE)."""


class NodeConnection(Protocol):
    """What a cluster uses of a node's subscriber connection (pubsub.RedisServerConnection)."""

    address: Any
    protocol: Any
    channels: dict[bytes, Subscription]
    patterns: dict[bytes, Subscription]
    sharded: dict[bytes, Subscription]

    def start(self) -> None: ...

    def stop(self) -> defer.Deferred[None]: ...

    def subscribe(self, channel: bytes, kind: str) -> None: ...

    def unsubscribe(self, channel: bytes, kind: str) -> None: ...


class HubContext(Protocol):
    """What a server object needs of its hub (pubsub.Hub)."""

    reactor: Any
    clock: IReactorTime
    stats: collections.Counter[str]
    outage_limit: float | None
    max_message_size: int
    events: HubEvents
    subscription: Callable[[bytes], Subscription]

    def is_implicit_default(self, address: Any) -> bool: ...


def no_subscriptions(channel: bytes) -> Subscription:
    """The hub's ``subscription`` until the stream layer sets it: raises RuntimeError."""
    raise RuntimeError("the hub has no stream layer: set Hub.subscription before use")


class NoEvents:
    """The hub's ``events`` until the stream layer sets them: nobody to tell."""

    def redis_back(self, server: Listened, seconds: float) -> None:
        pass

    def redis_expired(self, server: Listened) -> None:
        pass


def show_channel(channel: bytes) -> str:
    """A channel name for a log line: its text (undecodable bytes escaped), not ``b'...'``."""
    return channel.decode("utf-8", "backslashreplace")
