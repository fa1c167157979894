"""Redis server addresses: parsing, identity, and client endpoints.

The original plugin's ``host:port`` and unix paths, plus host names, IPv6, ``redis://``,
``rediss://`` and ``unix://`` URLs, password and db (docs/architecture.md, difference 8).
Subscriber connections are keyed by address and credentials, never by db: pub/sub channels
span every logical database (difference 10).

Accepted forms, the original plugin's first:

- ``host:port`` (IPv4, host names), ``[v6]:port``, ``:port`` (loopback);
- a unix socket path (anything without ``:``, as uWSGI reads it), ``@name`` for the Linux
  abstract namespace;
- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS, certificates
  verified against the system roots), ``unix://[[user]:password@]/path[?db=N&password=P]``;
- ``redis-cluster://[[user]:password@]host:port,host:port,...``: a Redis Cluster, by some
  of its nodes (cluster.py).
- ``redis-sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]``: the master
  that Redis Sentinel names ``MASTER`` (sentinel.py finds it and follows failovers). The
  credentials and the db are the master's; sentinels that want a password of their own get
  it as ``?sentinel_password=P`` (and ``sentinel_username=U``). A sentinel's port defaults
  to 26379.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

#: The original plugin's default server, when an action names none.
DEFAULT_ADDRESS: Final = "127.0.0.1:6379"
DEFAULT_PORT: Final = 6379
#: Redis Sentinel's own default port.
DEFAULT_SENTINEL_PORT: Final = 26379
SENTINEL_SCHEME: Final = "redis-sentinel://"


class AddressError(ValueError):
    """A Redis address that cannot be understood; the message says which form was expected."""


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis server is, and how to log in. ``key`` identifies a shared connection."""

    kind: str  # "tcp", "tls", "unix", "cluster" or "sentinel"
    host: str = ""
    port: int = 0
    path: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int | None = None
    #: ``redis-cluster://`` seed nodes, ``(host, port)``; ``path`` holds them as text.
    seeds: tuple[tuple[str, int], ...] = ()
    #: kind "sentinel": the sentinels, in the order they are asked, and the master's name.
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[object, ...]:
        """Subscriber connections are shared per key; the db does not matter to pub/sub.
        A Sentinel address is the same Redis whichever master is current, and whatever
        order its sentinels are written in."""
        if self.kind == "sentinel":
            return (
                self.kind, tuple(sorted((h.lower(), p) for h, p in self.sentinels)),
                self.master_name, self.username, self.password,
                self.sentinel_username, self.sentinel_password,
            )
        return (self.kind, self.host.lower(), self.port, self.path, self.username, self.password)

    def __str__(self) -> str:
        if self.kind == "sentinel":
            return f"{SENTINEL_SCHEME}{_hosts(self.sentinels)}/{quote(self.master_name, safe='')}"
        if self.kind == "unix":
            return self.path
        if self.kind == "cluster":
            return f"redis-cluster://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        prefix = "rediss://" if self.kind == "tls" else ""
        return f"{prefix}{host}:{self.port}"

    @property
    def url(self) -> str:
        """A ``redis://``/``rediss://``/``unix://`` URL (for mules' ``REDIS_URL``)."""
        if self.kind == "sentinel":
            return _sentinel_url(self)
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:{self.password}@"
        if self.kind == "unix":
            query = f"?db={self.db}" if self.db is not None else ""
            return f"unix://{auth}{self.path}{query}"
        if self.kind == "cluster":
            if self.password is not None:  # a "," or "@" in it must not end the userinfo
                auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
            return f"redis-cluster://{auth}{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        db = f"/{self.db}" if self.db is not None else ""
        scheme = "rediss" if self.kind == "tls" else "redis"
        return f"{scheme}://{auth}{host}:{self.port}{db}"

    def client_endpoint_description(self) -> str:
        """Human-readable target for log lines."""
        return str(self)


def _port(text: str, original: str) -> int:
    if not text:
        return DEFAULT_PORT
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise AddressError(f"invalid port {text!r} in Redis address {original!r}")
    return int(text)


def _db(text: str, original: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise AddressError(f"invalid db {text!r} in Redis address {original!r}")
    return int(text)


def parse_address(text: str) -> RedisAddress:
    """Parse one address in any of the forms above; raises AddressError."""
    original = text
    if not text:
        raise AddressError("empty Redis address")
    if "\x00" in text[1:]:
        raise AddressError(f"NUL byte in Redis address {original!r}")
    lowered = text.lower()
    if lowered.startswith("redis-cluster://"):
        return _parse_cluster(text)
    if lowered.startswith(SENTINEL_SCHEME):
        return _parse_sentinel(text)
    if lowered.startswith(("redis://", "rediss://")):
        parts = urlsplit(text)
        if not parts.hostname:
            raise AddressError(f"no host in Redis URL {original!r} (expected redis://host:port)")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError as e:
            raise AddressError(f"invalid port in Redis URL {original!r}") from e
        query = parse_qs(parts.query)
        password = unquote(parts.password) if parts.password is not None else None
        if password is None and "password" in query:
            password = query["password"][0]
        return RedisAddress(
            kind="tls" if lowered.startswith("rediss") else "tcp",
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=password,
            db=_db(parts.path.lstrip("/") or query.get("db", [""])[0], original),
        )
    if lowered.startswith("unix://"):
        parts = urlsplit(text)
        if not parts.path:
            raise AddressError(f"no path in Redis URL {original!r} (expected unix:///path)")
        query = parse_qs(parts.query)
        password = unquote(parts.password) if parts.password is not None else None
        if password is None and "password" in query:
            password = query["password"][0]
        return RedisAddress(
            kind="unix",
            path=parts.path,
            username=unquote(parts.username) if parts.username else None,
            password=password,
            db=_db(query.get("db", [""])[0], original),
        )
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise AddressError(f"expected [IPv6]:port, got {original!r}")
        return RedisAddress(kind="tcp", host=host, port=_port(rest[1:], original))
    if ":" in text:
        # uWSGI: text before the first ':' is the host; an empty host means this machine.
        host, _, port_text = text.partition(":")
        if ":" in port_text:
            raise AddressError(
                f"ambiguous Redis address {original!r}: write IPv6 as [addr]:port"
            )
        return RedisAddress(
            kind="tcp", host=host or "127.0.0.1", port=_port(port_text, original)
        )
    if text.startswith("@"):
        return RedisAddress(kind="unix", path="\0" + text[1:])
    return RedisAddress(kind="unix", path=os.path.abspath(text))


def _parse_cluster(text: str) -> RedisAddress:
    """``redis-cluster://[[user]:password@]h1:p1,h2:p2,...``: the seed nodes a cluster's
    slot map is first asked of (any one reachable is enough; the map names the others).
    No db (a cluster has only db 0) and no query string."""
    rest = text[len("redis-cluster://"):]
    auth, at, hosts = rest.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = auth.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = hosts.removesuffix("/")
    if any(c in hosts for c in "/?#"):
        raise AddressError(
            f"a Redis Cluster address is redis-cluster://[[user]:password@]host:port,... "
            f"with no db or options, got {text!r}"
        )
    seeds: dict[tuple[str, int], None] = {}
    for seed in hosts.split(","):
        if not seed:
            raise AddressError(f"empty seed node in Redis Cluster address {text!r}")
        bare = (seed.startswith("[") and seed.endswith("]")) or ":" not in seed
        node = parse_address(f"{seed}:{DEFAULT_PORT}" if bare else seed)
        if node.kind != "tcp" or not node.host:
            raise AddressError(f"expected host:port seed nodes in {text!r}, got {seed!r}")
        seeds[(node.host.lower(), node.port)] = None
    shown = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in seeds)
    return RedisAddress(kind="cluster", path=shown, username=username, password=password,
                        seeds=tuple(seeds))


def _sentinel_url(a: RedisAddress) -> str:
    auth = ""
    if a.password is not None:
        auth = f"{quote(a.username or '', safe='')}:{quote(a.password, safe='')}@"
    elif a.username is not None:
        auth = f"{quote(a.username, safe='')}@"
    db = f"/{a.db}" if a.db is not None else ""
    query = urlencode([
        (k, v) for k, v in (
            ("sentinel_username", a.sentinel_username),
            ("sentinel_password", a.sentinel_password),
        ) if v is not None
    ])
    name = quote(a.master_name, safe="")
    return (
        f"{SENTINEL_SCHEME}{auth}{_hosts(a.sentinels)}/{name}{db}{'?' if query else ''}{query}"
    )


def _hosts(hosts: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in hosts)


_SENTINEL_QUERY: Final = frozenset({"sentinel_username", "sentinel_password"})


def _parse_sentinel(original: str) -> RedisAddress:
    """``redis-sentinel://[[user]:password@]h1[:p1][,h2[:p2]...]/MASTER[/db][?query]``.

    Written by hand: ``urlsplit`` reads one host and port, and a list of them is the point.
    """
    expected = "expected redis-sentinel://host:port[,host:port...]/MASTER[/db]"
    rest, _, query_text = original[len(SENTINEL_SCHEME) :].partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts_text = netloc.rpartition("@")
    user, colon, secret = userinfo.partition(":")
    username = unquote(user) or None
    password = unquote(secret) if colon else None
    sentinels = []
    for item in hosts_text.split(","):
        if not item:
            raise AddressError(f"empty sentinel in Redis address {original!r} ({expected})")
        if item.startswith("["):
            host, sep, port_text = item[1:].partition("]")
            if not sep or (port_text and not port_text.startswith(":")):
                raise AddressError(f"expected [IPv6]:port, got {item!r} in {original!r}")
            port_text = port_text[1:]
        else:
            host, _, port_text = item.partition(":")
            if ":" in port_text:
                raise AddressError(f"write an IPv6 sentinel as [addr]:port in {original!r}")
        if not host or any(c.isspace() for c in host):
            raise AddressError(f"sentinel {item!r}: no host, in Redis address {original!r}")
        port = _port(port_text, original) if port_text else DEFAULT_SENTINEL_PORT
        sentinels.append((host, port))
    name, _, db_text = path.partition("/")
    name = unquote(name)
    if not name:
        raise AddressError(
            f"no master name in Redis address {original!r} ({expected}; in a rule's "
            "key=value list, write the commas between sentinels as \\,)"
        )
    if "/" in db_text:
        raise AddressError(f"unexpected path after the db in Redis address {original!r}")
    query = parse_qs(query_text, keep_blank_values=True)
    unknown = sorted(set(query) - _SENTINEL_QUERY)
    if unknown:
        raise AddressError(
            f"unknown parameter(s) {', '.join(unknown)} in Redis address {original!r} "
            f"(known: {', '.join(sorted(_SENTINEL_QUERY))})"
        )
    return RedisAddress(
        kind="sentinel",
        username=username,
        password=password,
        db=_db(db_text, original),
        sentinels=tuple(sentinels),
        master_name=name,
        sentinel_username=query.get("sentinel_username", [""])[0] or None,
        sentinel_password=query.get("sentinel_password", [""])[0] or None,
    )
