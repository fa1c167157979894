"""The channels of a Redis Cluster that have no subscription, and since when.

In a cluster an outage is not all or nothing: a node that dies leaves only its own channels
without a subscription, until it comes back or a replica takes over. :class:`Waiting` keeps
each such channel with the time it lost its subscription, and tells the stream layer what a
single Redis outage tells it (pubsub.RedisServerConnection): the gap notice when the channel
is subscribed again (pub/sub keeps nothing meanwhile), and the close of its streams once it
has waited longer than the hub's outage limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall

from .hub_types import HubContext, Subscription
from .timers import cancel

#: A channel as the cluster keys it: (kind, name), the kind one of redis_protocol's.
Item = tuple[str, bytes]


class Holder(Protocol):
    """Whose channels these are (cluster.ClusterConnection)."""

    def subscriptions(self, kind: str) -> dict[bytes, Subscription]: ...


class Affected:
    """The channels an outage event is about, as the stream layer's events take them."""

    def __init__(self, what: str, subs: list[Subscription]) -> None:
        self.what, self.subs = what, subs

    def __str__(self) -> str:
        return self.what

    def listeners(self) -> Iterator[Any]:
        for sub in self.subs:
            yield from sub.listeners()


class Waiting:
    """Channels without a subscription since when; the outage limit's timer over them."""

    def __init__(self, hub: HubContext, holder: Holder, name: str) -> None:
        self.hub, self.holder, self.name = hub, holder, name
        self.since: dict[Item, float] = {}
        #: A channel waited past the outage limit; cleared once none waits.
        self.expired = False
        self._closed: set[Item] = set()  # waited past the limit: their streams were closed
        self._call: IDelayedCall | None = None

    def __contains__(self, item: Item) -> bool:
        return item in self.since

    def __len__(self) -> int:
        return len(self.since)

    def __iter__(self) -> Iterator[Item]:
        return iter(list(self.since))

    def oldest(self) -> float | None:
        """When the longest wait began, or None."""
        return min(self.since.values(), default=None)

    def add(self, items: Iterable[Item]) -> None:
        """These channels have no subscription from now (those waiting already keep their
        start)."""
        now = self.hub.clock.seconds()
        for item in items:
            self.since.setdefault(item, now)
        if self._call is None:
            self._arm()

    def forget(self, item: Item) -> None:
        """A channel nobody listens to any more."""
        self.since.pop(item, None)
        self._closed.discard(item)
        self._settled()

    def resume(self, items: list[Item], where: str) -> None:
        """These channels are subscribed again: their streams get the gap notice."""
        items = [item for item in items if item in self.since]
        if not items:
            return
        began = min(self.since.pop(item) for item in items)
        self._closed.difference_update(items)
        self.hub.stats["redis_reconnects"] += 1
        self.hub.events.redis_back(
            Affected(f"{self.name} ({where}, {len(items)} channel(s))", self._subs(items)),
            self.hub.clock.seconds() - began,
        )
        self._settled()

    def stop(self) -> None:
        cancel(self._call)
        self._call = None

    def _settled(self) -> None:
        if not self.since:
            self.expired = False
            self.stop()

    def _subs(self, items: Iterable[Item]) -> list[Subscription]:
        found = (self.holder.subscriptions(kind).get(name) for kind, name in items)
        return [sub for sub in found if sub is not None]

    def _arm(self) -> None:
        """The timer for the oldest wait whose streams are still open."""
        limit = self.hub.outage_limit
        open_since = [t for item, t in self.since.items() if item not in self._closed]
        if limit is None or not open_since:
            return
        delay = max(0.0, min(open_since) + limit - self.hub.clock.seconds())
        self._call = self.hub.clock.callLater(delay, self._expire)

    def _expire(self) -> None:
        """Channels that waited past the outage limit: their streams are closed, so their
        clients reconnect (perhaps to a gateway that reaches the cluster)."""
        self._call = None
        limit = self.hub.outage_limit
        assert limit is not None
        cutoff = self.hub.clock.seconds() - limit
        expired = [item for item, since in self.since.items()
                   if since <= cutoff and item not in self._closed]
        self.expired = True
        self._closed.update(expired)
        subs = self._subs(expired)
        if subs:
            self.hub.events.redis_expired(Affected(f"{self.name} ({len(subs)} channel(s))", subs))
        if self._call is None:
            self._arm()
