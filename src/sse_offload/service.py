"""The gateway's service tree: embedded Redis, hub (or worker processes), mules, listeners."""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass

from twisted.application import service
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from .backends import Backend
from .backends.upstream import UpstreamBackend, UpstreamSpec
from .backends.wsgi import AppSpec, WSGIBackend, load_app
from .broadcast import Broadcaster
from .channel import deadline_channel_factory
from .cluster_probe import node_address
from .config import Config, RulesError, load_rules
from .config.actions import OFFLOAD_ACTIONS
from .config.values import parse_kvlist
from .front import GatewaySite
from .gateway import Gateway
from .mirror import Mirror, MirrorError, MirrorSpec, parse_mirror
from .options import ConfigurationError, Limits, StreamAccess
from .processes.embedded_redis import EmbeddedRedis
from .pubsub import Hub
from .redis_address import AddressError, RedisAddress, parse_address
from .sentinel_watch import show
from .stream_auth import check_key
from .tokens import TokenKey
from .web import GatewayResource

log = Logger()


def raise_open_file_limit() -> None:
    """Each stream holds a socket: lift the soft open-file limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warn("cannot raise the open-file limit from {soft}: {error}", soft=soft, error=e)
            return
        log.info("open-file limit raised from {soft} to {hard}", soft=soft, hard=hard)


def tune_garbage_collector() -> None:
    """Collect young objects less often; never rescan what start-up built.

    Every open stream keeps a dozen long-lived objects (request, channel, transport, headers),
    and CPython's default threshold (700 allocations) runs a young collection every few
    requests, with a full scan of all of them every hundred or so: with 10,000 streams open
    that was the largest single cost of accepting a connection (measured with cProfile while
    10,000 clients connected).
    """
    import gc
    import os

    if os.environ.get("SSE_OFFLOAD_GC") == "default":
        return
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD_0, *gc.get_threshold()[1:])


#: Allocations between young collections (CPython's default: 700).
GC_THRESHOLD_0 = 50_000


#: Keys read only at start-up.
RESTART_KEYS = (
    "listen", "http-socket", "redis", "mule", "processes", "wsgi", "wsgi-file", "module",
    "callable", "proxy", "threads", "admin", "publish", "publish-key", "subscribe-key",
    "cors-origins",
)


def apply_rules(gateway: Gateway, config: Config) -> None:
    """Put ``config`` in force for new requests (servers: the default and the literal ones);
    ConfigurationError, and nothing changed, when it cannot be (an ``auth=jwt`` rule and no
    ``--subscribe-key``, a bad literal server)."""
    check_key(config, gateway.subscribe_key)
    allowed = {gateway.default_address.key, *(a.key for a in literal_addresses(config))}
    gateway.config = config
    gateway.allowed_servers = allowed


def reload_rules(
    path: str, gateway: Gateway | None, subscribe_key: TokenKey | None = None
) -> Config | None:
    """SIGHUP's work in a serving process (``gateway``) or the master (None, checking the
    rules against its ``subscribe_key``): read the rules at ``path`` again and put them in
    force for new requests. A file with errors, or one the running options cannot serve
    (``auth=jwt`` without a key), is reported, the rules in force stay, and None is
    returned."""
    try:
        config = load_rules(path)
        if gateway is not None:
            apply_rules(gateway, config)
        else:
            check_key(config, subscribe_key)
    except (RulesError, ConfigurationError) as e:
        log.error("reload: {path} not applied, the rules in force stay:\n{error}",
                  path=path, error=str(e))
        return None
    log.info("reload: {path} applied to new requests", path=path)
    return config


def install_reload_handler(reload: Callable[[], object]) -> None:
    """SIGHUP calls ``reload`` in the reactor thread (what it returns is dropped)."""
    import signal

    from twisted.internet import reactor
    from twisted.internet.interfaces import IReactorFromThreads

    threads = IReactorFromThreads(reactor)
    signal.signal(signal.SIGHUP, lambda *_: threads.callFromThread(reload))


def literal_addresses(config: Config) -> list[RedisAddress]:
    """The ``server=`` addresses written literally in the rules; ConfigurationError if bad."""
    out = []
    for text in sorted(config.literal_servers()):
        try:
            out.append(parse_address(text))
        except AddressError as e:
            raise ConfigurationError(f"{config.path}: server={text}: {e}") from None
    return out


def build_backend(
    app: AppSpec | None, upstream: UpstreamSpec | None, reactor: object
) -> WSGIBackend | UpstreamBackend | None:
    """The in-process app (imported now; AppError if it cannot be) or the upstream proxy;
    None when neither is configured. Not started: the caller starts and stops it."""
    if app is not None:
        loaded = load_app(app)
        log.info("hosting {app} in-process with {threads} threads",
                 app=app.describe(), threads=app.threads)
        return WSGIBackend(loaded, app.threads, reactor)
    if upstream is not None:
        log.info("proxying to {upstream}", upstream=upstream.url)
        return UpstreamBackend(upstream, reactor)
    return None


def mirror_specs(config: Config, default: RedisAddress) -> list[tuple[MirrorSpec, RedisAddress]]:
    """The ``mirror`` keys of the rules file (mirror.py) and their servers;
    ConfigurationError if one is bad, or names a Redis Cluster."""
    specs = []
    for text in config.values("mirror"):
        try:
            spec = parse_mirror(text)
            address = parse_address(spec.server) if spec.server else default
        except (MirrorError, AddressError) as e:
            raise ConfigurationError(f"{config.path}: mirror = {text}: {e}") from None
        if address.kind == "cluster":
            raise ConfigurationError(f"{config.path}: mirror = {text}: {NO_STREAMS_ON_CLUSTER}")
        specs.append((spec, address))
    return specs


def build_mirrors(config: Config, streams: Broadcaster, default: RedisAddress) -> list[Mirror]:
    """The mirrors of the rules file, over ``streams``; ConfigurationError if one is bad."""
    return [Mirror(streams, address, spec) for spec, address in mirror_specs(config, default)]


#: Why Redis Streams mode and the mirror refuse a Redis Cluster: one reader runs XREAD over
#: every key of a server, and a cluster spreads keys over its masters (a command over keys of
#: different slots is refused), with no reader per master yet.
NO_STREAMS_ON_CLUSTER = (
    "Redis Streams (stream=, mirror) do not run on a Redis Cluster address; name a single "
    "Redis with server= for them"
)


def check_cluster_use(config: Config, default: RedisAddress) -> None:
    """Refuse at start-up what does not run on a Redis Cluster: a ``stream=`` written in a
    rule whose server (``server=``, else the default) is a cluster, and a ``mirror`` to
    one. Raises ConfigurationError naming the rule."""
    for rule in config.all_rules():
        action = rule.action
        if action is None or action.name not in OFFLOAD_ACTIONS or "=" not in action.arg:
            continue
        items = parse_kvlist(action.arg)
        server = items.get("server")
        if "stream" not in items or (server is not None and "$" in server):
            continue
        try:
            address = parse_address(server) if server is not None else default
        except AddressError:
            continue  # literal_addresses() reports it
        if address.kind == "cluster":
            raise ConfigurationError(f"{rule.pos}: {action}: {NO_STREAMS_ON_CLUSTER}")
    mirror_specs(config, default)


@dataclass
class GatewayParts:
    """The pieces of one serving process: its hub, the streams over it (the service to
    start and stop: it starts and stops the hub), the front gateway and the web site."""

    hub: Hub
    streams: Broadcaster
    gateway: Gateway
    site: server.Site


def build_gateway(
    config: Config,
    default_address: RedisAddress,
    keepalive: float,
    reactor: object,
    implicit_default: bool = False,
    backend: Backend | None = None,
    limits: Limits | None = None,
    access: StreamAccess | None = None,
) -> GatewayParts:
    """Hub, gateway and site for ``config``; streams may use the default and literal servers.

    ``backend`` (an in-process app or an upstream) serves what no rule answers; ``access``
    holds the key of ``auth=jwt`` streams and the CORS origins. ConfigurationError when
    ``config`` cannot be served with them (check_key).
    """
    limits = limits or Limits()
    access = access or StreamAccess()
    check_key(config, access.key)
    hub = Hub(
        reactor,  # type: ignore[arg-type]
        default_address,
        implicit_default=implicit_default,
        outage_limit=limits.outage_limit,
        max_message_size=limits.max_message_size,
    )
    streams = Broadcaster(hub, keepalive, max_paused=limits.max_paused, drain=limits.drain)
    gateway = Gateway(
        config=config, streams=streams, default_address=default_address, backend=backend,
        max_queued=limits.max_queued,
        max_clients=limits.max_clients,
        max_clients_per_ip=limits.max_clients_per_ip,
        max_channel_length=limits.max_channel_length,
        subscribe_key=access.key,
        cors=access.cors,
    )
    gateway.allow([default_address, *literal_addresses(config)])
    streams.mirrors = build_mirrors(config, streams, default_address)
    site = GatewaySite(GatewayResource(gateway), limits.header_timeout)
    site.protocol = deadline_channel_factory(limits.header_timeout)  # type: ignore[method-assign]
    return GatewayParts(hub, streams, gateway, site)


class GatewayService(service.MultiService):
    """The gateway: embedded Redis (optional), then the hub or the workers, mules, listeners.

    With an embedded Redis, the children that talk to Redis (hub, workers, mules) start once
    it answers, so nothing logs a spurious "cannot reach redis" at start-up.
    """

    def __init__(self, embedded: EmbeddedRedis | None) -> None:
        super().__init__()
        self.embedded = embedded
        self.parts: GatewayParts | None = None  # single-process mode
        self.redis_address: RedisAddress | None = None
        self._after_redis: list[service.IService] = []
        self.rules_path: str | None = None
        self.config: Config | None = None
        self.pool: service.IService | None = None  # --processes N
        #: The key a reloaded file's ``auth=jwt`` rules are checked against (the master).
        self.subscribe_key: TokenKey | None = None

    def reload(self) -> None:
        """SIGHUP: read the rules again; new requests follow them, open streams go on.

        A file with errors is reported (file:line:col) and the rules in force stay. Keys that
        cannot change while running are reported as needing a restart.
        """
        assert self.rules_path is not None
        config = reload_rules(
            self.rules_path, self.parts.gateway if self.parts else None, self.subscribe_key
        )
        if config is None:
            return
        if self.config is not None:
            changed = [k for k in RESTART_KEYS if self.config.values(k) != config.values(k)]
            for key in changed:
                log.warn("reload: {key} changed in {path}; it takes effect after a restart",
                         key=key, path=self.rules_path)
        self.config = config
        if self.pool is not None:
            self.pool.signal_workers("HUP")  # type: ignore[attr-defined]

    def add(self, child: service.IService, after_redis: bool = False) -> None:
        """Add a child; ``after_redis`` ones start once an embedded Redis answers."""
        child.setServiceParent(self)
        if after_redis:
            self._after_redis.append(child)

    def startService(self) -> None:
        service.Service.startService(self)
        raise_open_file_limit()
        tune_garbage_collector()
        if self.rules_path is not None:
            install_reload_handler(self.reload)
        waiting: list[service.IService] = []
        for child in self:
            if self.embedded is not None and child in self._after_redis:
                waiting.append(child)
                continue
            child.startService()
            if self.embedded is not None and child is self.embedded:
                self._bind_embedded(self.embedded)
        if self.embedded is not None:
            self.embedded.ready.addBoth(self._embedded_ready, waiting)

    def _embedded_ready(self, result: object, waiting: list[service.IService]) -> None:
        if not self.running:
            return
        if isinstance(result, Failure):
            log.error(
                "embedded redis: {error}; starting anyway, streams wait for it",
                error=result.getErrorMessage(),
            )
        for child in waiting:
            child.startService()

    def _bind_embedded(self, embedded: EmbeddedRedis) -> None:
        address = parse_address(embedded.address)
        self.redis_address = address
        if self.parts is not None:
            self.parts.hub.default_address = self.parts.gateway.default_address = address
            self.parts.gateway.allow([address])

    def mule_environment(self) -> dict[str, str]:
        """REDIS_URL (a URL) and REDIS_SERVER (``host:port`` or a path, which Perl's Redis
        module reads) for mules: docs/architecture.md, difference 14.

        A Sentinel address has no one server: REDIS_URL is the ``redis-sentinel://`` URL,
        with its parts in REDIS_SENTINELS (``host:port,...``) and REDIS_SENTINEL_MASTER,
        and no REDIS_SERVER. The master's own URL would go stale at the first failover, and
        a mule still publishing to the demoted master would not even get an error (a
        replica takes PUBLISH, for its own subscribers only)."""
        if self.embedded is not None:
            return self.embedded.mule_environment()
        a = self.redis_address
        assert a is not None
        if a.kind == "cluster":
            # A mule's Redis client may know nothing of clusters: a node for it, and the
            # whole address in REDIS_CLUSTER for one that does.
            node = node_address(a, a.seeds[0])
            return {"REDIS_URL": node.url, "REDIS_SERVER": f"{node.host}:{node.port}",
                    "REDIS_CLUSTER": a.url}
        if a.kind == "sentinel":
            return {
                "REDIS_URL": a.url,
                "REDIS_SENTINELS": ",".join(show(s) for s in a.sentinels),
                "REDIS_SENTINEL_MASTER": a.master_name,
            }
        server_text = f"{a.host}:{a.port}" if a.kind == "tls" else str(a)
        return {"REDIS_URL": a.url, "REDIS_SERVER": server_text}

