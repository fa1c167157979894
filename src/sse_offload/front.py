"""The first request of a connection, read without twisted.web: the connect path of a stream.

An EventSource opens a connection, sends one GET and keeps the response open. For that one
request twisted.web builds a channel and a Request (header objects, a content file, cookies,
a Date string) and writes the head through the transport's buffer, one reactor turn later:
measured, about 60 % of the CPU a new stream cost (issue #6). :class:`FrontProtocol` reads
the first request head itself; when it is a plain HTTP/1.1 GET that the request chain turns
into a stream, the stream starts here, its head written with one send(2), and no Request
is made. Anything else (another outcome, a request with a body, HTTP/1.0, an unusual head,
a refused or full stream, rules that look at responses, TLS) goes to twisted.web's channel
with the bytes read so far and, when the chain already ran, its outcome, so the rules never
run twice for one request.

The fast path takes only heads it parses strictly (what twisted.web would parse the same
way): tests/test_front.py checks that both paths give the rules the same vars.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from twisted.internet import tcp, unix
from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web import http, server

from .channel import HEADER_DEADLINE, close_slow_head
from .routing import cgi_vars
from .stream import plain_transport
from .web import SSE_HEADERS

if TYPE_CHECKING:
    from .stream import SSEStream
    from .web import GatewayResource

#: Bytes read at once from a new connection: a browser's request head fits many times.
READ_SIZE: Final = 65536
#: A first request head longer than this (twisted.web's own limit is 16 KiB), or with more
#: header lines, goes to twisted.web, which answers it or refuses it as it always has.
MAX_HEAD: Final = 8192
MAX_HEADER_LINES: Final = 100

#: RFC 9110 token characters (header names).
_TCHARS: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: ``GET SP target SP HTTP/1.1``, the target a path (origin-form) of printable ASCII
#: (twisted.web takes a few more bytes, ``*`` and absolute URLs).
_REQUEST_LINE: Final = re.compile(rb"GET (/[\x21-\x7e]*) HTTP/1\.1")
#: Headers that twisted.web must handle: a body, 100-continue, a connection to close.
_NOT_FAST: Final = frozenset({b"content-length", b"transfer-encoding", b"expect"})
_HOST: Final = http._hostHeaderExpression  # what Request.getRequestHostname matches

_date_second = -1
_date_text = b""


def http_date(now: float) -> bytes:
    """The Date header's value, formatted once per second."""
    global _date_second, _date_text
    second = int(now)
    if second != _date_second:
        _date_second, _date_text = second, http.datetimeToString(second)
    return _date_text


def parse_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """The target and headers of a ``GET ... HTTP/1.1`` head (without its final CRLFCRLF),
    or None when the fast path does not take it."""
    lines = head.split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None or len(lines) > MAX_HEADER_LINES or b"\x00" in head:
        return None
    # No CR or LF but the line ends: no folding, no bare LF line ends (twisted.web's rules
    # for those differ from a strict parser's, so they take such heads).
    if head.count(b"\r") != len(lines) - 1 or head.count(b"\n") != len(lines) - 1:
        return None
    headers = []
    seen = set()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        lower = name.lower()
        if not colon or not name or name.translate(None, _TCHARS) or lower in seen:
            return None  # not a token, or repeated (twisted.web groups repeated names)
        if lower in _NOT_FAST or (lower == b"connection" and b"close" in value.lower()):
            return None  # a body needs its decoder; a connection to close, its header
        seen.add(lower)
        headers.append((name, value.strip(b" \t")))
    return match.group(1), headers


def head_vars(
    head: bytes, peer: IAddress, server_port: str, local_host: Callable[[], str | None]
) -> dict[str, str] | None:
    """The request vars of a head the fast path takes (None: it does not), as
    :func:`sse_offload.web.request_vars` makes them from twisted.web's Request.
    ``local_host()``: the server's address, SERVER_NAME when there is no Host header."""
    parsed = parse_head(head)
    if parsed is None:
        return None
    target, headers = parsed
    host = next((value for name, value in headers if name.lower() == b"host"), None)
    if host is not None:
        # always matches: Request.getRequestHostname's expression
        server_name = _HOST.match(host).group("host").decode("utf-8", "surrogateescape")
    else:
        local = local_host()
        if local is None:
            return None  # a unix socket and no Host: twisted.web's answer
        server_name = local
    return cgi_vars(
        b"GET", target, b"HTTP/1.1", headers,
        remote_addr=str(getattr(peer, "host", "")),
        remote_port=str(getattr(peer, "port", "")),
        server_name=server_name,
        server_port=server_port,
    )


class HeadWatch:
    """Connections still sending their first request head, and the deadline for it.

    One timer for all of them (twisted.web's channel arms one per connection): a browser's
    head is in the first read, so most connections never enter here.
    """

    def __init__(self, clock: IReactorTime, deadline: float) -> None:
        self.clock = clock
        self.deadline = deadline
        self.waiting: dict[FrontProtocol, float] = {}
        self._call: DelayedCall | None = None

    def add(self, protocol: FrontProtocol) -> None:
        if protocol not in self.waiting:
            self.waiting[protocol] = self.clock.seconds() + self.deadline
            if self._call is None:
                self._call = self.clock.callLater(self._period(), self.sweep)

    def remove(self, protocol: FrontProtocol) -> None:
        self.waiting.pop(protocol, None)

    def _period(self) -> float:
        return min(1.0, self.deadline / 4)

    def sweep(self) -> None:
        self._call = None
        now = self.clock.seconds()
        late = [p for p, at in self.waiting.items() if at <= now]
        for protocol in late:
            del self.waiting[protocol]
            close_slow_head(protocol.transport, protocol.ip or str(protocol.addr), self.deadline)
        if self.waiting:
            self._call = self.clock.callLater(self._period(), self.sweep)


class FrontProtocol(Protocol):
    """The protocol of every connection to the gateway's site (see the module docstring).

    For a stream it started, it is also what :class:`~sse_offload.stream.SSEStream` calls
    its request: ``write``, ``channel``, ``unregisterProducer``, ``finish``,
    ``getClientAddress``.
    """

    def __init__(self, site: GatewaySite, addr: IAddress) -> None:
        self.site = site
        self.addr = addr
        self.ip = str(getattr(addr, "host", ""))
        self._buffer = b""
        self.stream: SSEStream | None = None

    # --- the connection ---------------------------------------------------------------------
    def connectionMade(self) -> None:
        transport = self.transport
        if not plain_transport(transport):
            self._delegate()
            return
        # The client sent its request right after connecting: it is usually here already,
        # which saves a reactor turn.
        try:
            data = transport.socket.recv(READ_SIZE)
        except OSError:
            data = b""  # nothing yet (EAGAIN), or an error the reactor will report
        if data:
            self.dataReceived(data)
        else:
            self.site.heads.add(self)

    def dataReceived(self, data: bytes) -> None:
        if self.stream is not None:
            return  # a stream's client has nothing more to say; what it sends is dropped
        buffer = self._buffer + data if self._buffer else data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                self.site.heads.remove(self)
                self._hand_over(buffer, None)
            else:
                self._buffer = buffer
                self.site.heads.add(self)
            return
        self._buffer = b""
        self.site.heads.remove(self)
        if end + 4 != len(buffer) or end > MAX_HEAD:
            self._hand_over(buffer, None)  # more than one head: twisted.web pipelines them
            return
        self._first_request(buffer, end)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.heads.remove(self)
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.finished()

    # --- the first request ------------------------------------------------------------------
    def _first_request(self, buffer: bytes, end: int) -> None:
        transport = self.transport
        vars = head_vars(
            buffer[:end], self.addr, self.site.port_of(transport),
            lambda: str(transport.getHost().host) if isinstance(transport, tcp.Server) else None,
        )
        if vars is None:
            self._hand_over(buffer, None)
            return
        resource = self.site.resource
        state = resource.new_state(vars)
        outcome = resource.request_chain(state)
        if not resource.start_fast(self, state, outcome):
            self._hand_over(buffer, (state, outcome))

    def _hand_over(self, data: bytes, routed: tuple[Any, Any] | None) -> None:
        """From now on twisted.web's channel serves this connection, from ``data`` on."""
        protocol = self._delegate(routed)
        if data:
            protocol.dataReceived(data)

    def _delegate(self, routed: tuple[Any, Any] | None = None) -> Any:
        protocol = server.Site.buildProtocol(self.site, self.addr)
        protocol._channel.routed = routed
        transport = self.transport
        if plain_transport(transport):
            transport.protocol = protocol
        else:
            # A wrapping transport (TLS) keeps its own reference to us: pass calls through.
            self.dataReceived = protocol.dataReceived  # type: ignore[method-assign]
            self.connectionLost = protocol.connectionLost  # type: ignore[method-assign]
        protocol.makeConnection(transport)
        return protocol

    # --- a stream started here ----------------------------------------------------------------
    def start_stream(self, stream: SSEStream) -> None:
        self.stream = stream
        transport = self.transport
        assert isinstance(transport, (tcp.Server, unix.Server))
        stream.start_on(transport, self.site.stream_head())

    @property
    def channel(self) -> FrontProtocol:
        return self

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def getClientAddress(self) -> IAddress:
        return self.addr

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()

    def finish(self) -> None:
        """The server ends the stream: the last chunk, then close (no second request)."""
        self.transport.write(b"0\r\n\r\n")
        self.transport.loseConnection()


class GatewaySite(server.Site):
    """twisted.web's Site, whose connections start with a :class:`FrontProtocol`."""

    def __init__(
        self, resource: GatewayResource, header_deadline: float = HEADER_DEADLINE, **kw: Any
    ) -> None:
        super().__init__(resource, **kw)
        self.resource: GatewayResource = resource
        self.heads = HeadWatch(self.reactor, header_deadline)
        self._ports: dict[object, str] = {}
        self._head_start = b"HTTP/1.1 200 OK\r\nServer: " + server.version + b"\r\nDate: "
        self._head_end = b"".join(
            b"\r\n" + name + b": " + value for name, value in SSE_HEADERS
        ) + b"\r\nTransfer-Encoding: chunked\r\n\r\n"

    def buildProtocol(self, addr: IAddress) -> FrontProtocol:  # type: ignore[override]
        return FrontProtocol(self, addr)

    def stream_head(self) -> bytes:
        """The head of a stream the request chain offloaded (what twisted.web would send)."""
        return self._head_start + http_date(time.time()) + self._head_end

    def port_of(self, transport: tcp.Server | unix.Server) -> str:
        """SERVER_PORT: the listening port (one getsockname per listening socket)."""
        if not isinstance(transport, tcp.Server):
            return ""
        port = self._ports.get(transport.server)
        if port is None:
            port = self._ports[transport.server] = str(transport.getHost().port)
        return port
