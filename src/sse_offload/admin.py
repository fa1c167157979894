"""The admin listener: Prometheus ``/metrics`` and a readiness ``/health``.

Off by default; ``--admin ENDPOINT`` turns it on (bind it to loopback: it tells anyone who
asks how many clients and channels the gateway has). Metrics are read from the hub's state
and counters when scraped: nothing is added to the per-message path beyond a few counter
increments per message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web import resource, server
from twisted.web.server import Request

from .pubsub import Hub

#: hub.stats keys exported as counters: key -> (metric name, help).
COUNTERS = {
    "messages_received": ("messages_received", "Messages received from Redis."),
    "messages_delivered": ("messages_delivered", "Messages written to streams (one per stream)."),
    "stream_writes": ("stream_writes", "Writes to streams (several messages may share one)."),
    "bytes_written": ("bytes_written", "Bytes written to streams."),
    "messages_dropped_too_large": (
        "messages_dropped_too_large", "Messages dropped for being over the size limit."
    ),
    "redis_reconnects": ("redis_reconnects", "Subscriber connections made again after an outage."),
    "redis_disconnects": (
        "redis_disconnects",
        "Subscriber connections lost (including Redis closing a subscriber that fell behind).",
    ),
}


class HubCollector:
    """A prometheus-client collector reading one or more hubs when scraped."""

    def __init__(self, hubs: Callable[[], Iterable[Hub]]) -> None:
        self._hubs = hubs

    def collect(self) -> Iterator[Metric]:
        hubs = list(self._hubs())
        clients = GaugeMetricFamily("sse_offload_clients", "Open streams.")
        servers = [s for h in hubs for s in h.servers.values()]
        clients.add_metric([], sum(len(ch) for s in servers for ch in s.channels.values()))
        yield clients
        channels = GaugeMetricFamily(
            "sse_offload_channels", "Channels subscribed.", labels=["server"]
        )
        up = GaugeMetricFamily(
            "sse_offload_redis_connected", "1 while the subscriber connection is up.",
            labels=["server"],
        )
        for hub in hubs:
            for s in hub.servers.values():
                channels.add_metric([str(s)], len(s.channels))
                up.add_metric([str(s)], 1 if s.protocol is not None else 0)
        yield channels
        yield up
        for key, (name, doc) in COUNTERS.items():
            c = CounterMetricFamily(f"sse_offload_{name}", doc)
            c.add_metric([], sum(h.stats[key] for h in hubs))
            yield c
        yield _labelled(hubs, "streams_closed_", "sse_offload_streams_closed",
                        "Streams ended, by reason.", "reason")
        yield _labelled(hubs, "requests_", "sse_offload_requests",
                        "Requests, by outcome.", "outcome")


def _labelled(hubs: list[Hub], prefix: str, name: str, doc: str, label: str) -> Metric:
    """One counter family from the ``prefix<label value>`` keys of the hubs' stats."""
    totals: dict[str, int] = {}
    for hub in hubs:
        for key, value in hub.stats.items():
            if key.startswith(prefix):
                totals[key.removeprefix(prefix)] = totals.get(key.removeprefix(prefix), 0) + value
    family = CounterMetricFamily(name, doc, labels=[label])
    for value_label, value in sorted(totals.items()):
        family.add_metric([value_label], value)
    return family


class _Metrics(resource.Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class _Health(resource.Resource):
    """Ready only while the default Redis server's subscriber connection is up."""

    isLeaf = True

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        address = self.hub.default_address
        server_conn = self.hub.servers.get(address.key) if address is not None else None
        if server_conn is not None and server_conn.protocol is not None:
            return b"ready\n"
        request.setResponseCode(503)
        return f"not ready: redis {address} is not connected\n".encode()


def admin_site(hub: Hub) -> server.Site:
    """The admin web site for one serving process."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(lambda: [hub]))  # type: ignore[arg-type]
    root = resource.Resource()
    root.putChild(b"metrics", _Metrics(registry))
    root.putChild(b"health", _Health(hub))
    site = server.Site(root)
    site.noisy = False
    return site
