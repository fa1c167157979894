"""``twistd sse-offload``: build the service tree from options and the rules file.

Nothing starts here (daemon mode forks after ``makeService``): processes and connections
start in ``startService``. A rules error ends start-up with its message alone (file, line,
column, what was expected), not a traceback or the usage text: the message is what the
person who wrote the rules needs.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from twisted.application import service, strports
from twisted.logger import Logger

from .backends.upstream import UpstreamBackend
from .backends.wsgi import AppError, WSGIBackend
from .config import Config, RulesError, load_rules
from .config.actions import OFFLOAD_ACTIONS
from .config.loader import RESPONSE_SIDE_NOTE
from .config.values import parse_kvlist
from .cors_web import PublishCors
from .endpoints import DEFAULT_LISTEN, http_socket_endpoint, with_backlog
from .options import Options, Settings, resolve_settings
from .processes.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from .processes.listeners import listen_service
from .processes.mules import Mule
from .publish import PublishService, resolve_publish
from .service import (
    ConfigurationError,
    GatewayService,
    build_backend,
    build_gateway,
    check_cluster_use,
    literal_addresses,
)
from .stream_auth import check_key

__all__ = ["Options", "makeService"]

log = Logger()


def _fail(message: str) -> NoReturn:
    sys.stderr.write(message.rstrip("\n") + "\n")
    raise SystemExit(1)


def _listen_endpoints(options: Options, config: Config) -> list[str]:
    if options["listen"]:
        return list(options["listen"])
    if config.values("listen"):
        return list(config.values("listen"))
    sockets = config.values("http-socket")
    if sockets:
        try:
            return [http_socket_endpoint(s) for s in sockets]
        except ValueError as e:
            _fail(f"{config.path}: http-socket: {e}")
    return [DEFAULT_LISTEN]


def example_channel(config: Config) -> str:
    """A channel the rules stream from the default server, written literally (``sse:clock``,
    ``sse:subscribe=clock``), for the log's "publish with:" lines; else ``CHANNEL``."""
    for rule in config.all_rules():
        action = rule.action
        if action is None or action.name not in OFFLOAD_ACTIONS:
            continue
        if "=" in action.arg:
            values = parse_kvlist(action.arg)
            channel = "" if "server" in values else values.get("subscribe", "")
        else:
            channel = action.arg
        if channel and "$" not in channel:
            return channel
    return "CHANNEL"


def _backend(settings: Settings, reactor: object) -> WSGIBackend | UpstreamBackend | None:
    """The in-process app (imported now, so an import error stops start-up with its
    message) or the upstream proxy; None when neither is configured."""
    try:
        return build_backend(settings.app, settings.upstream, reactor)
    except AppError as e:
        _fail(str(e))


def makeService(options: Options) -> service.MultiService:
    """Parse the rules and build the service tree; exits with the message on a config error."""
    from twisted.internet import reactor

    try:
        config = load_rules(options["rules"])
    except RulesError as e:
        _fail(str(e))
    try:
        settings = resolve_settings(options, config)
        literal_addresses(config)
        check_key(config, settings.access.key)
        check_cluster_use(config, settings.redis)
        publishing = resolve_publish(options, config, settings.limits)
    except ConfigurationError as e:
        _fail(str(e))
    has_app = settings.app is not None or settings.upstream is not None
    for warning in config.warnings:
        if has_app and warning.message == RESPONSE_SIDE_NOTE:
            continue  # the app came from the command line
        log.warn("{warning}", warning=warning.format())
    listen = [with_backlog(d) for d in _listen_endpoints(options, config)]

    embedded: EmbeddedRedis | None = None
    if settings.embedded:
        try:
            embedded = EmbeddedRedis(reactor, example_channel=example_channel(config))
        except EmbeddedRedisError as e:
            _fail(f"--redis embedded: {e}")

    root = GatewayService(embedded)
    root.redis_address = settings.redis
    root.rules_path = options["rules"]
    root.config = config
    root.subscribe_key = settings.access.key
    if embedded is not None:
        root.add(embedded)
    if settings.processes > 1:
        from .processes.pool import WorkerPool

        try:
            pool = WorkerPool(root, config.path, listen, settings, reactor)
        except ConfigurationError as e:
            _fail(str(e))
        root.add(pool, after_redis=True)
        root.pool = pool
        if settings.admin:
            from .admin import pool_admin_site
            from .status_site import add_pool_status

            admin = pool_admin_site(pool, reactor)
            add_pool_status(admin, pool, reactor)
            root.add(strports.service(settings.admin, admin))
    else:
        backend = _backend(settings, reactor)  # each worker hosts its own with --processes
        parts = build_gateway(
            config, settings.redis, settings.keepalive, reactor, settings.implicit_default,
            backend, settings.limits, settings.access,
        )
        if backend is not None:
            root.add(backend)  # before the listeners: its pool runs before a request comes
        if embedded is not None:
            # replaced by the embedded server's socket once it starts
            parts.gateway.allowed_servers.discard(settings.redis.key)
        root.parts = parts
        root.add(parts.streams, after_redis=True)
        for description in listen:
            root.add(listen_service(description, parts.site, reactor))
        if settings.admin:
            from .admin import admin_site
            from .status_site import add_status

            site = admin_site(parts.hub)
            add_status(site, parts.gateway, reactor)
            root.add(strports.service(settings.admin, site))
    if publishing is not None:  # once per gateway: the master with --processes N
        cors = settings.access.cors
        publisher = PublishService(
            publishing, lambda: root.redis_address, reactor,
            PublishCors(cors) if cors is not None else None,
        )
        root.add(publisher, after_redis=True)
    for spec in config.mules:
        root.add(Mule(spec.script, root.mule_environment, reactor), after_redis=True)
    return root
