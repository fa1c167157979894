"""The gateway's listening sockets.

A ``tcp:``/``tcp6:`` address is a group of SO_REUSEPORT sockets (:data:`ACCEPT_QUEUES`),
tuned for streams (stream.tune_socket). With ``--processes N`` the master opens them in
startService and hands them to freshly spawned workers as inherited file descriptors
(workers never fork from a running reactor), so the kernel spreads new connections evenly
over the workers; a unix socket is shared (one accept queue). A one-process gateway adopts
the group itself (:class:`ReusePortListenService`); other endpoints (``ssl:``, ``unix:``)
are Twisted's own (:class:`TunedListenService`).
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass
from typing import Any, Final

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, endpoints
from twisted.internet.error import CannotListenError

from ..endpoints import DEFAULT_BACKLOG
from ..stream import tune_port, tune_socket

#: TCP listening sockets (SO_REUSEPORT, one address) of the whole gateway, shared out over
#: its processes. Each has its own accept queue, capped by net.core.somaxconn (4096 on
#: current kernels): a burst of 10,000 connections to one queue overflowed it, and each
#: dropped SYN came back only a second later (a second more to connect 10,000 clients, see
#: benchmarks/suite.py). Four queues hold 16,384 waiting connections.
ACCEPT_QUEUES: Final = 4


def sockets_per_process(processes: int) -> int:
    """TCP listening sockets each of ``processes`` gateway processes gets."""
    return max(1, -(-ACCEPT_QUEUES // processes))


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
    def inet_address(self) -> tuple[str, int]:
        """(host, port) of a ``tcp:``/``tcp6:`` spec; ValueError for a unix one."""
        if isinstance(self.address, str):
            raise ValueError(f"{self.address!r} is a unix socket path")
        return self.address

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
    host, port = spec.inet_address
    if port:
        # SO_REUSEPORT would let this gateway share the port with whatever listens there
        # already (another gateway of the same user, say, or workers whose master was
        # killed): bind it alone first, which fails as twisted.web's own listener would. The
        # probe has SO_REUSEADDR only, which Linux refuses beside any listening socket.
        with socket.socket(spec.family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
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


class ReusePortListenService(service.Service):
    """A ``tcp:``/``tcp6:`` listener of a one-process gateway: :func:`sockets_per_process`
    SO_REUSEPORT sockets (tuned, see stream.tune_socket) adopted by the reactor, as a worker
    of ``--processes`` adopts its own.

    It listens from ``privilegedStartService`` (twistd calls it before dropping privileges,
    so a port below 1024 works) or, when that was not called, from ``startService``: ``twist``
    and a plain ``IService.startService`` call only the latter, as Twisted's own
    StreamServerEndpointService allows.
    """

    def __init__(self, spec: ListenSpec, factory: Any, reactor: Any) -> None:
        self.spec = spec
        self.factory = factory
        self.reactor = reactor
        self.ports: list[Any] = []

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if not self.ports:
            self._listen()

    def _listen(self) -> None:
        try:
            sockets = open_sockets(self.spec, sockets_per_process(1))
        except OSError as e:
            host, port = self.spec.inet_address
            raise CannotListenError(host, port, e) from None  # as twisted's listenTCP says it
        for sock in sockets:
            port = self.reactor.adoptStreamPort(sock.fileno(), sock.family, self.factory)
            tune_port(port)  # records it (open_sockets tuned the socket already)
            self.ports.append(port)
            sock.close()  # adoptStreamPort duplicated it

    def stopService(self) -> Any:
        super().stopService()
        ports, self.ports = self.ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])


def listen_service(description: str, factory: Any, reactor: Any) -> service.Service:
    """The service listening on ``description`` for a one-process gateway."""
    try:
        spec = parse_listen(description)
    except ListenError:
        spec = None
    if spec is not None and spec.family != socket.AF_UNIX:
        return ReusePortListenService(spec, factory, reactor)
    return TunedListenService(description, factory, reactor)
