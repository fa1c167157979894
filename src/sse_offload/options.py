"""Command-line options; every long option is also an ini key of the same name.

``redis = embedded``, ``keepalive = 30``, ``listen = tcp:9090`` in the rules file mean what
the options mean; the command line wins (docs/architecture.md, difference 12).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from twisted.python import usage

from .answers import MAX_CHANNEL_NAME
from .backends.upstream import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HEAD_TIMEOUT,
    UpstreamError,
    UpstreamSpec,
    parse_upstream,
)
from .backends.wsgi import DEFAULT_THREADS, AppSpec
from .broadcast import DEFAULT_DRAIN, DEFAULT_KEEPALIVE
from .channel import HEADER_DEADLINE
from .config import Config
from .cors import CorsError, CorsPolicy
from .endpoints import admin_endpoint
from .pubsub import DEFAULT_MAX_MESSAGE
from .redis_address import DEFAULT_ADDRESS, AddressError, RedisAddress, parse_address
from .stream import DEFAULT_MAX_PAUSED, DEFAULT_MAX_QUEUED
from .tokens import TokenKey, TokenKeyError, parse_token_key


class ConfigurationError(Exception):
    """A setting that stops start-up; the message says which and why."""


class Options(usage.Options):
    """``twistd sse-offload`` options."""

    synopsis = "--rules FILE [--listen ENDPOINT]... [--redis ADDRESS|embedded] [--keepalive S]"
    longdesc = (
        "Serve Server-Sent Events streams fed by Redis pub/sub, routed by a uWSGI-style "
        "rules file. Every option is also an ini key of the same name in the rules file; "
        "the command line wins."
    )
    optParameters = [
        ["rules", "r", None, "The rules file (uWSGI-style ini, [uwsgi] section). Required."],
        [
            "redis", None, None,
            "Default Redis server: host:port, [v6]:port, /unix/path, redis://, rediss://, "
            "unix:// URL, redis-cluster://h1:p1,h2:p2 for a Redis Cluster, "
            f"or 'embedded' to start a private redis-server. "
            f"[default: $SSE_OFFLOAD_REDIS or {DEFAULT_ADDRESS}]",
        ],
        [
            "keepalive", None, None,
            "Seconds between keepalive comments on idle sse streams; 0 disables. [default: 15]",
        ],
        [
            "wsgi", None, None,
            "Host a WSGI app in-process: pkg.module:callable (ini: wsgi, module, wsgi-file, "
            "callable).",
        ],
        [
            "proxy", None, None,
            "Pass requests no rule answers to an upstream HTTP server: http://host:port or "
            "unix:/path.",
        ],
        ["threads", None, None, "Threads of the in-process app's pool. [default: 10]"],
        [
            "proxy-connect-timeout", None, None,
            "Seconds to connect to the --proxy upstream (then 504). [default: 5]",
        ],
        [
            "proxy-head-timeout", None, None,
            "Seconds to wait for the upstream's response head (then 504); the body has no "
            "timeout. [default: 60]",
        ],
        [
            "redis-outage-limit", None, None,
            "Close the streams of a Redis server unreachable for this many seconds (they "
            "wait for it otherwise). [default: off]",
        ],
        [
            "drain", None, None,
            "On shutdown, close the streams over this many seconds, each sse stream after a "
            "retry: hint, so clients do not all come back at once. [default: 5]",
        ],
        [
            "max-paused", None, None,
            "Abort a stream whose client has read nothing for this many seconds while data "
            "was waiting for it. [default: 30]",
        ],
        [
            "max-queued", None, None,
            "Abort a stream that has more than this many bytes waiting for a slow client. "
            "[default: 1048576]",
        ],
        [
            "max-message-size", None, None,
            "Drop (and count) Redis messages larger than this many bytes. [default: 1048576]",
        ],
        [
            "max-clients", None, None,
            "Open streams the gateway accepts (all its processes together); beyond it an "
            "EventSource gets 200 with a retry: hint and the end, other clients 503. "
            "0: no limit. [default: 0]",
        ],
        [
            "max-clients-per-ip", None, None,
            "Open streams one client address may hold, in each process (0: no limit). "
            "[default: 0]",
        ],
        [
            "header-timeout", None, None,
            "Seconds a client has to send a whole request head (slowloris). [default: 20]",
        ],
        [
            "max-channel-length", None, None,
            "Longest channel name a stream may ask for, in characters. [default: 1024]",
        ],
        [
            "admin", None, None,
            "Serve /metrics (Prometheus) and /health on this endpoint, e.g. "
            "tcp:9091:interface=127.0.0.1. [default: off]",
        ],
        [
            "publish", None, None,
            "Serve POST /publish/<channel> (JWT-authenticated) on this endpoint; a bare port "
            "or tcp: without interface= listens on loopback. [default: off]",
        ],
        [
            "publish-key", None, None,
            "The key publish tokens are verified with: an HS256 secret (hs256:SECRET, 32 "
            "bytes or more) or @FILE holding a secret or a PEM public key (RS256/ES256).",
        ],
        [
            "subscribe-key", None, None,
            "The key the tokens of auth=jwt streams are verified with: an HS256 secret "
            "(hs256:SECRET, 32 bytes or more) or @FILE holding a secret or a PEM public key "
            "(RS256/ES256). Required when a rule says auth=jwt.",
        ],
        [
            "cors-origins", None, None,
            "Origins whose pages may read the streams (and the publish endpoint), "
            "comma-separated: https://app.example,http://localhost:8000 (with credentials) "
            "and/or * (every other origin, without credentials). [default: none]",
        ],
        [
            "processes", None, None,
            "Gateway worker processes sharing the listening sockets, each with its own "
            "Redis subscriptions and its own copy of the app (use one per core). [default: 1]",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        # The opt_* docstrings' line breaks and indentation, as one space each: Twisted's
        # --help wraps them as they are, indentation included.
        self.docs = {name: " ".join(doc.split()) for name, doc in self.docs.items()}
        self["listen"] = []
        self["trusted-proxy"] = []

    def opt_trusted_proxy(self, value: str) -> None:
        """An address or network (10.0.0.0/8) whose X-Forwarded-* headers the proxy keeps
        and appends to; repeatable. [default: none]"""
        self["trusted-proxy"].append(value)

    def opt_listen(self, value: str) -> None:
        """A Twisted server endpoint string (tcp:9090, unix:/run/sse.sock, ssl:...); repeatable.
        A tcp: endpoint without interface= listens on every interface. [default: http-socket
        of the rules file, else tcp:9090:interface=127.0.0.1, loopback only: name an
        interface, e.g. tcp:9090:interface=0.0.0.0, to serve other machines]"""
        self["listen"].append(value)

    opt_l = opt_listen

    def postOptions(self) -> None:
        if not self["rules"]:
            raise usage.UsageError("--rules is required")
        if self["keepalive"] is not None:
            _parse_keepalive(self["keepalive"])


@dataclass(frozen=True)
class Settings:
    """Options resolved against the rules file's keys (the command line wins)."""

    redis: RedisAddress  # the default server (a placeholder while ``embedded`` starts)
    embedded: bool
    implicit_default: bool  # neither --redis nor ``redis =`` was given
    keepalive: float
    processes: int
    app: AppSpec | None = None
    upstream: UpstreamSpec | None = None
    limits: Limits = field(default_factory=lambda: Limits())
    admin: str | None = None
    access: StreamAccess = field(default_factory=lambda: StreamAccess())


@dataclass(frozen=True)
class StreamAccess:
    """``--subscribe-key`` (the tokens of ``auth=jwt`` streams) and ``--cors-origins``
    resolved, with the texts they came from, for ``--processes`` workers."""

    key: TokenKey | None = None
    cors: CorsPolicy | None = None
    key_text: str | None = field(default=None, repr=False)  # may be the secret itself
    cors_text: str | None = None

    @classmethod
    def parse(cls, key_text: str | None, cors_text: str | None) -> StreamAccess:
        """Read the two option texts (None or empty: not set); ConfigurationError names a
        bad one."""
        try:
            key = parse_token_key(key_text) if key_text else None
        except TokenKeyError as e:
            raise ConfigurationError(f"--subscribe-key: {e}") from None
        try:
            cors = CorsPolicy.parse(cors_text) if cors_text else None
        except CorsError as e:
            raise ConfigurationError(str(e)) from None
        return cls(key, cors, key_text or None, cors_text or None)


@dataclass(frozen=True)
class Limits:
    """The bounds on streams and messages (defaults and their sources: pubsub.py,
    broadcast.py, stream.py)."""

    outage_limit: float | None = None
    drain: float = DEFAULT_DRAIN
    max_paused: float = DEFAULT_MAX_PAUSED
    max_queued: int = DEFAULT_MAX_QUEUED
    max_message_size: int = DEFAULT_MAX_MESSAGE
    max_clients: int = 0
    max_clients_per_ip: int = 0
    header_timeout: float = HEADER_DEADLINE
    max_channel_length: int = MAX_CHANNEL_NAME


def _number(name: str, text: str | None, default: float, whole: bool = False,
            zero: bool = False) -> float:
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
        if value < 0 or (value == 0 and not zero):
            raise ValueError
    except ValueError:
        kind = "a whole number" if whole else "a number"
        bound = ">= 0" if zero else "> 0"
        raise ConfigurationError(f"{name} must be {kind} {bound}, got {text!r}") from None
    return value


def resolve_limits(options: Options, config: Config) -> Limits:
    """The limits from the options and ini keys (the command line wins)."""

    def get(key: str) -> str | None:
        value = options[key] if key in options else None
        return value or config.option(key)

    outage = get("redis-outage-limit")
    return Limits(
        outage_limit=_number("redis-outage-limit", outage, 0) if outage else None,
        drain=_number("drain", get("drain"), DEFAULT_DRAIN, zero=True),
        max_paused=_number("max-paused", get("max-paused"), DEFAULT_MAX_PAUSED, zero=True),
        max_queued=int(_number("max-queued", get("max-queued"), DEFAULT_MAX_QUEUED, True)),
        max_message_size=int(_number(
            "max-message-size", get("max-message-size"), DEFAULT_MAX_MESSAGE, True
        )),
        max_clients=int(_number("max-clients", get("max-clients"), 0, True, zero=True)),
        max_clients_per_ip=int(
            _number("max-clients-per-ip", get("max-clients-per-ip"), 0, True, zero=True)
        ),
        header_timeout=_number("header-timeout", get("header-timeout"), HEADER_DEADLINE),
        max_channel_length=int(
            _number("max-channel-length", get("max-channel-length"), MAX_CHANNEL_NAME, True)
        ),
    )


def resolve_settings(options: Options, config: Config) -> Settings:
    """Merge ``options`` with ``config``'s keys; ConfigurationError names a bad value."""
    redis_text = options["redis"] or config.option("redis")
    keepalive_text = options["keepalive"] or config.option("keepalive")
    processes_text = options["processes"] or config.option("processes")
    try:
        keepalive = _parse_keepalive(keepalive_text) if keepalive_text else DEFAULT_KEEPALIVE
    except usage.UsageError as e:
        raise ConfigurationError(f"{config.path}: keepalive: {e}") from None
    try:
        processes = int(processes_text) if processes_text else 1
        if processes < 1:
            raise ValueError
    except ValueError:
        raise ConfigurationError(
            f"processes must be a whole number >= 1, got {processes_text!r}"
        ) from None
    embedded = redis_text == "embedded"
    try:
        redis = parse_address(default_redis() if embedded or not redis_text else redis_text)
    except AddressError as e:
        raise ConfigurationError(f"--redis: {e}") from None
    app = resolve_app(options, config)
    upstream = resolve_upstream(options, config)
    if app is not None and upstream is not None:
        raise ConfigurationError(
            f"both an in-process app ({app.describe()}) and --proxy {upstream.url}: choose one"
        )
    admin = admin_endpoint(options["admin"] or config.option("admin"))
    access = StreamAccess.parse(
        options["subscribe-key"] or config.option("subscribe-key"),
        options["cors-origins"] or config.option("cors-origins"),
    )
    return Settings(
        redis, embedded, redis_text is None, keepalive, processes, app, upstream,
        resolve_limits(options, config), admin or None, access,
    )


def _seconds(name: str, text: str | None, default: float) -> float:
    if not text:
        return default
    try:
        value = float(text)
        if value <= 0:
            raise ValueError
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds > 0, got {text!r}") from None
    return value


def resolve_app(options: Options, config: Config) -> AppSpec | None:
    """The in-process app the options and ini keys name, or None."""
    wsgi_file = config.option("wsgi-file")
    module = options["wsgi"] or config.option("wsgi") or config.option("module")
    if options["wsgi"]:
        wsgi_file = None  # the command line wins
    if not wsgi_file and not module:
        return None
    threads_text = options["threads"] or config.option("threads")
    try:
        threads = int(threads_text) if threads_text else DEFAULT_THREADS
        if threads < 1:
            raise ValueError
    except ValueError:
        raise ConfigurationError(
            f"threads must be a whole number >= 1, got {threads_text!r}"
        ) from None
    return AppSpec(
        wsgi_file=wsgi_file,
        module=None if wsgi_file else module,
        callable_name=config.option("callable") or "application",
        chdir=config.option("chdir"),
        pythonpath=config.values("pythonpath"),
        env=config.values("env"),
        home=config.option("virtualenv") or config.option("home"),
        threads=threads,
        options=tuple((e.key, e.value) for e in config.entries),
    )


def resolve_upstream(options: Options, config: Config) -> UpstreamSpec | None:
    """The upstream ``--proxy``/``proxy`` names, or None."""
    text = options["proxy"] or config.option("proxy")
    if not text:
        return None
    try:
        url = parse_upstream(text)
    except UpstreamError as e:
        raise ConfigurationError(f"--proxy: {e}") from None
    trusted = tuple(options["trusted-proxy"]) or config.values("trusted-proxy")
    for item in trusted:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"trusted-proxy: expected an address or network, got {item!r}"
            ) from None
    return UpstreamSpec(
        url=url,
        connect_timeout=_seconds(
            "proxy-connect-timeout",
            options["proxy-connect-timeout"] or config.option("proxy-connect-timeout"),
            DEFAULT_CONNECT_TIMEOUT,
        ),
        head_timeout=_seconds(
            "proxy-head-timeout",
            options["proxy-head-timeout"] or config.option("proxy-head-timeout"),
            DEFAULT_HEAD_TIMEOUT,
        ),
        trusted=trusted,
    )


def _parse_keepalive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise usage.UsageError(f"keepalive must be a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise usage.UsageError(f"keepalive must be >= 0, got {value!r}")
    return seconds


def default_redis() -> str:
    """The default Redis address: $SSE_OFFLOAD_REDIS (tests point it away from 6379), else 6379."""
    return os.environ.get("SSE_OFFLOAD_REDIS") or DEFAULT_ADDRESS
