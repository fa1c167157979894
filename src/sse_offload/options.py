"""Command-line options; every long option is also an ini key of the same name (DESIGN §4.12)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Final

from twisted.python import usage

from .config import Config
from .pubsub import DEFAULT_KEEPALIVE
from .redis_address import DEFAULT_ADDRESS, AddressError, RedisAddress, parse_address

#: Where a gateway listens when neither --listen, ``listen`` nor ``http-socket`` says.
DEFAULT_LISTEN: Final = "tcp:9090"


#: Listen backlog when an endpoint string does not set one. Twisted's default of 50 drops
#: SYNs when a thousand EventSources reconnect at once (measured: 1,000 clients took 15 s to
#: connect, against 0.6 s with this); the kernel caps it at net.core.somaxconn.
DEFAULT_BACKLOG: Final = socket.SOMAXCONN


def with_backlog(description: str) -> str:
    """``description`` with ``backlog=DEFAULT_BACKLOG`` added to tcp/tcp6/ssl/unix endpoints."""
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6", "ssl", "unix") and "backlog=" not in description:
        return f"{description}:backlog={DEFAULT_BACKLOG}"
    return description


def http_socket_endpoint(value: str) -> str:
    """uWSGI's ``http-socket`` as a Twisted server endpoint string (DESIGN §4.12).

    ``:PORT`` all IPv4 interfaces, ``HOST:PORT``, ``[V6]:PORT``, ``/path`` a unix socket.
    Raises ValueError for anything else.
    """
    value = value.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep or not port.isdigit():
            raise ValueError(f"expected [IPv6]:PORT, got {value!r}")
        return f"tcp6:{port}:interface={host.replace(':', chr(92) + ':')}"
    if ":" in value and not value.startswith("/"):
        host, _, port = value.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"expected HOST:PORT or :PORT, got {value!r}")
        return f"tcp:{port}:interface={host or '0.0.0.0'}"
    if value.startswith("/") or value.startswith("."):
        return "unix:" + value.replace(":", "\\:")
    raise ValueError(f"expected :PORT, HOST:PORT, [V6]:PORT or /path, got {value!r}")


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
            f"unix:// URL, or 'embedded' to start a private redis-server. "
            f"[default: $SSE_OFFLOAD_REDIS or {DEFAULT_ADDRESS}]",
        ],
        [
            "keepalive", None, None,
            "Seconds between keepalive comments on idle sse streams; 0 disables. [default: 15]",
        ],
        [
            "processes", None, None,
            "Gateway worker processes sharing the listening sockets, each with its own "
            "Redis subscriptions (use one per core). [default: 1]",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, value: str) -> None:
        """A Twisted server endpoint string (tcp:9090, unix:/run/sse.sock, ssl:...); repeatable.
        [default: http-socket of the rules file, else tcp:9090]"""
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
    return Settings(redis, embedded, redis_text is None, keepalive, processes)


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
