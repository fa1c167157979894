"""Listening sockets opened by the master for ``--processes N`` workers to adopt.

Workers never fork from a running reactor: the master opens the sockets in startService and
hands them to freshly spawned worker processes as inherited file descriptors. For TCP each
worker gets its own socket bound to the same address with SO_REUSEPORT, so the kernel spreads
new connections evenly over the workers; a unix socket is shared (one accept queue).
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints

from .options import DEFAULT_BACKLOG
from .stream import tune_port, tune_socket


class ListenError(ValueError):
    """An endpoint description that --processes cannot open itself."""


@dataclass(frozen=True)
class ListenSpec:
    """A parsed ``tcp:``/``tcp6:``/``unix:`` server endpoint description."""

    family: socket.AddressFamily
    address: str | tuple[str, int]
    backlog: int
    mode: int | None = None

    @property
    def family_name(self) -> str:
        return {socket.AF_INET: "INET", socket.AF_INET6: "INET6", socket.AF_UNIX: "UNIX"}[
            self.family
        ]


def _split(description: str) -> list[str]:
    """Split on ``:`` honouring backslash escapes, as Twisted's endpoint strings do."""
    parts, current, escaped = [], [], False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_listen(description: str) -> ListenSpec:
    """Parse a tcp/tcp6/unix endpoint string; raises ListenError for any other kind."""
    kind, *args = _split(description)
    positional = [a for a in args if "=" not in a]
    options = dict(a.split("=", 1) for a in args if "=" in a)
    try:
        backlog = int(options.get("backlog", DEFAULT_BACKLOG))
        if kind in ("tcp", "tcp6"):
            port = int(options.get("port", positional[0] if positional else ""))
            default_host = "::" if kind == "tcp6" else "0.0.0.0"
            host = options.get("interface", default_host)
            family = socket.AF_INET6 if kind == "tcp6" or ":" in host else socket.AF_INET
            return ListenSpec(family, (host, port), backlog)
        if kind == "unix":
            path = options.get("address", positional[0] if positional else "")
            if not path:
                raise ListenError(f"no path in {description!r}")
            mode = int(options["mode"], 8) if "mode" in options else None
            return ListenSpec(socket.AF_UNIX, path, backlog, mode)
    except (ValueError, IndexError) as e:
        raise ListenError(f"cannot read listen endpoint {description!r}: {e}") from None
    raise ListenError(
        f"--processes needs tcp:, tcp6: or unix: listen endpoints, got {description!r}"
    )


def open_sockets(spec: ListenSpec, count: int) -> list[socket.socket]:
    """``count`` listening sockets for ``spec`` (one shared socket for unix)."""
    if spec.family == socket.AF_UNIX:
        assert isinstance(spec.address, str)
        path = spec.address
        if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)  # a stale socket of an earlier run
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        if spec.mode is not None:
            os.chmod(path, spec.mode)
        tune_socket(s)
        s.listen(spec.backlog)
        s.setblocking(False)  # adoptStreamPort requires it; shared by every worker
        return [s] * count
    assert isinstance(spec.address, tuple)
    host, port = spec.address
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(spec.family, socket.SOCK_STREAM)
            sockets.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            port = s.getsockname()[1]  # port 0: every worker binds the one the first got
            tune_socket(s)
            s.listen(spec.backlog)
            s.setblocking(False)  # adoptStreamPort requires it (Twisted accepts in a loop)
    except OSError:
        for s in sockets:
            s.close()
        raise
    return sockets


class TunedListenService(StreamServerEndpointService):
    """``strports.service``, whose listening socket gets the stream settings before the
    first connection (every accepted connection inherits them: stream.tune_socket)."""

    def __init__(self, description: str, factory: object, reactor: object) -> None:
        super().__init__(endpoints.serverFromString(reactor, description), factory)
        self._raiseSynchronously = True  # as strports.service: a bad endpoint stops start-up

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._tune)

    @staticmethod
    def _tune(port: object) -> object:
        tune_port(port)
        return port
