"""The admin listener: Prometheus ``/metrics`` and a readiness ``/health``.

Off by default; ``--admin ENDPOINT`` turns it on (bind it to loopback: it tells anyone who
asks how many clients and channels the gateway has). Metrics are read from the hub's state
and counters when scraped: nothing is added to the per-message path beyond a few counter
increments per message.

With ``--processes N`` each worker serves this site on a unix socket of its own and the
master's listener (:func:`pool_admin_site`) asks every worker when it is asked: ``/metrics``
is the sum of the workers' samples plus the master's own ``sse_offload_workers*`` series,
``/health`` is ready when every worker is. The status page on the same listener is
status_site.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred, TimeoutError, gatherResults
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server
from twisted.web.client import Agent, readBody
from twisted.web.server import Request
from zope.interface import implementer

from .pubsub import Hub

if TYPE_CHECKING:
    from .processes.pool import WorkerPool

log = Logger()

#: How long the master waits for a worker's /metrics or /health before leaving it out (and
#: counting it down). A worker answers over its unix socket in milliseconds, even busy; 2 s
#: keeps a stuck worker from making the master miss Prometheus' default 10 s scrape_timeout.
WORKER_TIMEOUT: Final = 2.0

#: hub.stats keys exported as counters: key -> (metric name, help).
COUNTERS = {
    "messages_received": ("messages_received", "Messages received from Redis."),
    "messages_delivered": ("messages_delivered", "Messages written to streams (one per stream)."),
    "stream_writes": ("stream_writes", "Writes to streams (several messages may share one)."),
    "bytes_written": ("bytes_written", "Bytes written to streams."),
    "messages_dropped_too_large": (
        "messages_dropped_too_large", "Messages dropped for being over the size limit."
    ),
    "messages_dropped_bad_envelope": (
        "messages_dropped_bad_envelope", "Messages dropped for not being a valid JSON envelope."
    ),
    "streams_reset": (
        "streams_reset", "Redis Streams clients whose Last-Event-ID could not be resumed."
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
        clients.add_metric([], sum(
            len(sub) for s in servers for subs in (s.channels, s.sharded) for sub in subs.values()
        ))
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
                channels.add_metric([str(s)], len(s.channels) + len(s.sharded))
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


class _QuietSite(server.Site):
    def log(self, request: http.Request) -> None:
        """No access log line: a worker's master logs the scrape it answers."""


def admin_site(hub: Hub, access_log: bool = True) -> server.Site:
    """The admin web site for one serving process."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(lambda: [hub]))
    root = resource.Resource()
    root.putChild(b"metrics", _Metrics(registry))
    root.putChild(b"health", _Health(hub))
    site = server.Site(root) if access_log else _QuietSite(root)
    site.noisy = False
    return site


# -- the master of --processes N ------------------------------------------------------------


def merge_metrics(texts: Iterable[str]) -> list[Metric]:
    """The families of several workers' /metrics, every sample summed by (name, labels).

    Counters and gauges alike: the gateway's open streams, deliveries and connections are
    the sums of its workers' (``sse_offload_redis_connected`` becomes the number of workers
    connected, ``sse_offload_channels`` the subscriptions the gateway holds).
    """
    families: dict[str, Metric] = {}
    totals: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type)
            )
            for sample in family.samples:
                key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                totals[key] = totals.get(key, 0.0) + sample.value
    for (family_name, name, labels), value in totals.items():
        families[family_name].add_sample(name, dict(labels), value)
    return list(families.values())


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


@dataclass(frozen=True)
class WorkerAnswer:
    """What worker ``index`` answered: ``code`` None when it did not (``error`` says why)."""

    index: int
    code: int | None
    body: bytes = b""
    error: str = ""


@implementer(IStreamClientEndpoint)
class _Socket:
    """A worker's admin socket, as the one endpoint of an Agent (``endpointForURI``)."""

    def __init__(self, reactor: Any, path: str) -> None:
        self.endpoint = UNIXClientEndpoint(reactor, path, timeout=int(WORKER_TIMEOUT))

    def endpointForURI(self, uri: object) -> _Socket:
        return self

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        if isinstance(factory, Factory):
            factory.noisy = False  # else two log lines per worker per scrape
        return self.endpoint.connect(factory)


async def _get(reactor: Any, socket_path: str, path: bytes) -> tuple[int, bytes]:
    agent = Agent.usingEndpointFactory(reactor, _Socket(reactor, socket_path))
    response = await agent.request(b"GET", b"http://worker" + path)
    return response.code, await readBody(response)


async def ask_workers(
    pool: WorkerPool, reactor: Any, path: bytes, quiet: bool = False
) -> list[WorkerAnswer]:
    """GET ``path`` from every worker's admin socket at once; one log line per silent one,
    unless ``quiet`` (a caller that asks often logs the changes itself)."""

    async def ask(index: int, socket_path: str | None) -> WorkerAnswer:
        if socket_path is None:
            return WorkerAnswer(index, None, error="no admin socket")
        d = Deferred.fromCoroutine(_get(reactor, socket_path, path))
        d.addTimeout(WORKER_TIMEOUT, reactor)
        try:
            code, body = await d
        except Exception as e:  # refused (restarting), timed out, cut off: all mean down
            error = f"no answer in {WORKER_TIMEOUT:g} s" if isinstance(e, TimeoutError) else (
                str(e) or type(e).__name__
            )
            if not quiet:
                log.warn("worker {index} left out of {path}: {error}",
                         index=index, path=path.decode(), error=error)
            return WorkerAnswer(index, None, error=error)
        return WorkerAnswer(index, code, body)

    asks = [Deferred.fromCoroutine(ask(w.index, w.admin_socket)) for w in pool.workers]
    return list(await gatherResults(asks))


class _PoolResource(resource.Resource):
    """A page the master makes from its workers' answers, asynchronously."""

    isLeaf = True
    path = b""

    def __init__(self, pool: WorkerPool, reactor: Any) -> None:
        super().__init__()
        self.pool = pool
        self.reactor = reactor

    def render_GET(self, request: Request) -> int:
        gone = request.notifyFinish()  # fires early only if the client leaves
        gone.addErrback(lambda _: None)

        def answer(page: tuple[int, bytes, bytes]) -> None:
            if gone.called:
                return
            code, content_type, body = page
            request.setResponseCode(code)
            request.setHeader(b"Content-Type", content_type)
            request.setHeader(b"Content-Length", b"%d" % len(body))
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> tuple[int, bytes, bytes]:
            log.failure("admin {path}", failure, path=self.path.decode())
            return 500, b"text/plain; charset=utf-8", b"500 Internal Server Error\n"

        d = Deferred.fromCoroutine(self.page())
        d.addErrback(failed)
        d.addCallback(answer)
        d.addErrback(lambda f: log.failure("admin {path}: answering", f,
                                           path=self.path.decode()))
        return server.NOT_DONE_YET

    async def page(self) -> tuple[int, bytes, bytes]:
        raise NotImplementedError


class _PoolMetrics(_PoolResource):
    path = b"/metrics"

    async def page(self) -> tuple[int, bytes, bytes]:
        answers = await ask_workers(self.pool, self.reactor, self.path)
        up = [a for a in answers if a.code == 200]
        families = merge_metrics(a.body.decode() for a in up)
        configured = GaugeMetricFamily(
            "sse_offload_workers", "Worker processes configured (--processes)."
        )
        configured.add_metric([], self.pool.settings.processes)
        answered = GaugeMetricFamily(
            "sse_offload_workers_up",
            "Workers that answered this scrape (the others are left out of every sum).",
        )
        answered.add_metric([], len(up))
        restarts = CounterMetricFamily(
            "sse_offload_worker_restarts", "Workers started again after they exited."
        )
        restarts.add_metric([], sum(w.restarts for w in self.pool.workers))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families([*families, configured, answered, restarts]))
        return 200, CONTENT_TYPE_LATEST.encode(), generate_latest(registry)


class _PoolHealth(_PoolResource):
    """Ready only while every worker answers that it is."""

    path = b"/health"

    async def page(self) -> tuple[int, bytes, bytes]:
        answers = await ask_workers(self.pool, self.reactor, self.path)
        text = b"text/plain; charset=utf-8"
        if not answers:
            return 503, text, b"not ready: no workers running yet\n"
        bad = [a for a in answers if a.code != 200]
        if not bad:
            return 200, text, b"ready\n"
        lines = [
            f"worker {a.index}: " + (
                a.body.decode("utf-8", "replace").strip() if a.code is not None
                else f"not answering ({a.error})"
            )
            for a in bad
        ]
        return 503, text, ("\n".join(lines) + "\n").encode()


def pool_admin_site(pool: WorkerPool, reactor: Any) -> server.Site:
    """The master's admin web site: its workers' metrics summed, and their health."""
    root = resource.Resource()
    root.putChild(b"metrics", _PoolMetrics(pool, reactor))
    root.putChild(b"health", _PoolHealth(pool, reactor))
    site = server.Site(root)
    site.noisy = False
    return site
