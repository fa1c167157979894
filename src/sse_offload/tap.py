"""``twistd sse-offload``: build the service tree from options and the rules file.

Nothing starts here (daemon mode forks after ``makeService``): processes and connections
start in ``startService``. A rules error ends start-up with its message alone (DESIGN §5).
"""

from __future__ import annotations

import resource
import sys
from typing import NoReturn

from twisted.application import service, strports
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from .config import Config, RulesError, load_rules
from .embedded_redis import EmbeddedRedis, EmbeddedRedisError
from .mules import Mule
from .options import (
    DEFAULT_LISTEN,
    Options,
    _parse_keepalive,
    default_redis,
    http_socket_endpoint,
    with_backlog,
)
from .pubsub import DEFAULT_KEEPALIVE, Hub
from .redis_address import AddressError, RedisAddress, parse_address
from .web import Gateway, GatewayResource

__all__ = ["Options", "makeService"]

log = Logger()


def _fail(message: str) -> NoReturn:
    sys.stderr.write(message.rstrip("\n") + "\n")
    raise SystemExit(1)


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


class GatewayService(service.MultiService):
    """The gateway: embedded Redis (optional), hub, mules, listeners, started in that order."""

    def __init__(self, gateway: Gateway, hub: Hub, embedded: EmbeddedRedis | None) -> None:
        super().__init__()
        self.gateway = gateway
        self.hub = hub
        self.embedded = embedded

    def startService(self) -> None:
        service.Service.startService(self)
        raise_open_file_limit()
        waiting: list[service.IService] = []
        for child in self:
            if self.embedded is not None and isinstance(child, Hub | Mule):
                waiting.append(child)  # started once the embedded server answers
                continue
            child.startService()
            if child is self.embedded:
                self._bind_embedded(child)
        if self.embedded is not None:
            self.embedded.ready.addBoth(self._embedded_ready, waiting)

    def _embedded_ready(self, result: object, waiting: list[service.IService]) -> None:
        if not self.running:
            return
        if isinstance(result, Failure):
            log.error("embedded redis: {error}; starting anyway, streams wait for it",
                      error=result.getErrorMessage())
        for child in waiting:
            child.startService()

    def _bind_embedded(self, embedded: EmbeddedRedis) -> None:
        address = parse_address(embedded.address)
        self.hub.default_address = self.gateway.default_address = address
        self.gateway.allow([address])

    def mule_environment(self) -> dict[str, str]:
        """REDIS_URL and REDIS_SERVER for mules (DESIGN §4.14)."""
        if self.embedded is not None:
            return self.embedded.mule_environment()
        a = self.gateway.default_address
        server = f"{a.host}:{a.port}" if a.kind == "tls" else str(a)
        return {"REDIS_URL": a.url, "REDIS_SERVER": server}


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


def makeService(options: Options) -> service.MultiService:
    """Parse the rules and build the service tree; exits with the message on a config error."""
    from twisted.internet import reactor

    try:
        config = load_rules(options["rules"])
    except RulesError as e:
        _fail(str(e))
    for warning in config.warnings:
        log.warn("{warning}", warning=warning.format())

    redis_option = options["redis"] or config.option("redis")
    keepalive_option = options["keepalive"] or config.option("keepalive")
    try:
        keepalive = _parse_keepalive(keepalive_option) if keepalive_option else DEFAULT_KEEPALIVE
    except Exception as e:  # usage.UsageError from an ini value
        _fail(f"{config.path}: keepalive: {e}")

    embedded: EmbeddedRedis | None = None
    if redis_option == "embedded":
        try:
            embedded = EmbeddedRedis(reactor)
        except EmbeddedRedisError as e:
            _fail(f"--redis embedded: {e}")
        # Replaced by the embedded server's socket as soon as it starts.
        default_address = parse_address(default_redis())
    else:
        try:
            default_address = parse_address(redis_option or default_redis())
        except AddressError as e:
            _fail(f"--redis: {e}")

    literal: list[RedisAddress] = []
    for text in sorted(config.literal_servers()):
        try:
            literal.append(parse_address(text))
        except AddressError as e:
            _fail(f"{config.path}: server={text}: {e}")

    hub = Hub(reactor, default_address, keepalive, implicit_default=redis_option is None)
    gateway = Gateway(config=config, hub=hub, default_address=default_address)
    gateway.allow([default_address, *literal])
    if embedded is not None:
        gateway.allowed_servers.discard(default_address.key)

    root = GatewayService(gateway, hub, embedded)
    if embedded is not None:
        embedded.setServiceParent(root)
    hub.setServiceParent(root)
    for spec in config.mules:
        Mule(spec.script, root.mule_environment, reactor).setServiceParent(root)
    site = server.Site(GatewayResource(gateway))
    for description in _listen_endpoints(options, config):
        strports.service(with_backlog(description), site).setServiceParent(root)
    return root
