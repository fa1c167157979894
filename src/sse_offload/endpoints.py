"""Listening endpoints: defaults, uWSGI's ``http-socket`` forms, backlogs, the admin's
loopback default. Shared by the gateway's listeners, the admin and the publish listener."""

from __future__ import annotations

import socket
from typing import Final

#: Where a gateway listens when neither --listen, ``listen`` nor ``http-socket`` says:
#: loopback only, as the admin listener. A gateway started to try it out should not serve
#: the whole network; one that is meant to names its interface (``interface=0.0.0.0``).
DEFAULT_LISTEN: Final = "tcp:9090:interface=127.0.0.1"


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
    """uWSGI's ``http-socket`` as a Twisted server endpoint string, as uWSGI reads it.

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


def admin_endpoint(description: str | None) -> str | None:
    """The admin listener binds to loopback unless the endpoint names an interface."""
    if not description:
        return None
    if description.isdigit():
        description = f"tcp:{description}"
    if description.split(":", 1)[0] in ("tcp", "tcp6") and "interface=" not in description:
        loopback = "\\:\\:1" if description.startswith("tcp6") else "127.0.0.1"
        description += f":interface={loopback}"
    return description
