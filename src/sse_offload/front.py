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

import time
from typing import Any, Final

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ISSLTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web import http, server

from .answers import SSE_HEADERS
from .channel import HEADER_DEADLINE, close_slow_head
from .http_vars import MAX_HEAD, head_vars
from .replies import GatewayRequest, Routed, to_bytes
from .stream import SSEStream, peer_text, plain_transport
from .web import GatewayResource

#: Bytes read at once from a new connection: a browser's request head fits many times.
READ_SIZE: Final = 65536
_date_second = -1
_date_text = b""


def http_date(now: float) -> bytes:
    """The Date header's value, formatted once per second."""
    global _date_second, _date_text
    second = int(now)
    if second != _date_second:
        _date_second, _date_text = second, http.datetimeToString(second)
    return _date_text


class HeadWatch:
    """Connections still sending their first request head, and the deadline for it.

    One timer for all of them (twisted.web's channel arms one per connection): a browser's
    head is in the first read, so most connections never enter here.
    """

    def __init__(self, clock: IReactorTime, deadline: float) -> None:
        self.clock = clock
        self.deadline = deadline
        self.waiting: dict[FrontProtocol, float] = {}
        self._call: IDelayedCall | None = None

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

    For a stream it started, it is also the stream's
    :class:`~sse_offload.stream.StreamOwner`.
    """

    #: The request's Origin when ``--cors-origins`` is set (the stream head answers it).
    origin: str | None = None

    def __init__(self, site: GatewaySite, addr: IAddress) -> None:
        self.site = site
        self.addr = addr
        self.ip = str(getattr(addr, "host", ""))
        self._buffer = b""
        self.stream: SSEStream | None = None

    # --- the connection ---------------------------------------------------------------------
    def connectionMade(self) -> None:
        transport = self.transport
        if ISSLTransport.providedBy(transport) or getattr(transport, "TLS", False):
            self._delegate()  # TLS: twisted.web's, which negotiates HTTP/2 too
            return
        data = b""
        if plain_transport(transport):
            # The client sent its request right after connecting: it is usually here
            # already, which saves a reactor turn.
            try:
                data = transport.socket.recv(READ_SIZE)  # type: ignore[union-attr]
            except OSError:
                pass  # nothing yet (EAGAIN), or an error the reactor will report
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
        vars = head_vars(buffer[:end], self.addr, self.site.port_of(transport), self._local_host)
        if vars is None:
            self._hand_over(buffer, None)
            return
        resource = self.site.resource
        if resource.gateway.cors is not None:
            self.origin = vars.get("HTTP_ORIGIN")
        state = resource.new_state(vars)
        outcome = resource.request_chain(state)
        if not resource.start_fast(self, self.ip, state, outcome):
            self._hand_over(buffer, Routed(state, outcome))

    def _local_host(self) -> str | None:
        """SERVER_NAME when the request has no Host header: the address it came to (none
        on a unix socket, where twisted.web answers such a request itself)."""
        host = self.transport.getHost()  # type: ignore[union-attr]
        return str(host.host) if isinstance(host, (IPv4Address, IPv6Address)) else None

    def _hand_over(self, data: bytes, routed: Routed | None) -> None:
        """From now on twisted.web's channel serves this connection, from ``data`` on."""
        protocol = self._delegate(routed)
        if data:
            protocol.dataReceived(data)

    def _delegate(self, routed: Routed | None = None) -> Any:
        protocol = server.Site.buildProtocol(self.site, self.addr)
        if routed is not None:
            protocol._channel.hand_over(routed)
        transport = self.transport
        if plain_transport(transport):
            transport.protocol = protocol  # type: ignore[union-attr]
        else:
            # A wrapping transport (TLS) keeps its own reference to us: pass calls through.
            self.dataReceived = protocol.dataReceived  # type: ignore[method-assign]
            self.connectionLost = protocol.connectionLost  # type: ignore[method-assign]
        protocol.makeConnection(transport)
        return protocol

    # --- the owner of a stream started here (stream.StreamOwner) -----------------------------
    def open(self, stream: SSEStream) -> None:
        self.stream = stream
        transport: Any = self.transport
        stream.attach(transport, chunked=True, head=self.site.stream_head(self.origin))
        transport.registerProducer(stream, True)

    def finish(self) -> None:
        """The server ends the stream: the last chunk, then close (no second request)."""
        transport = self.transport
        assert transport is not None
        transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.write(b"0\r\n\r\n")
        transport.loseConnection()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def peer(self) -> str:
        return peer_text(self.addr)


class GatewaySite(server.Site):
    """twisted.web's Site, whose connections start with a :class:`FrontProtocol`, and whose
    requests are :class:`~sse_offload.replies.GatewayRequest`."""

    requestFactory = GatewayRequest

    def __init__(
        self, resource: GatewayResource, header_deadline: float = HEADER_DEADLINE, **kw: Any
    ) -> None:
        super().__init__(resource, **kw)
        self.resource: GatewayResource = resource
        self.heads = HeadWatch(self.reactor, header_deadline)
        self._ports: dict[object, str] = {}
        self._head_start = b"HTTP/1.1 200 OK\r\nServer: " + server.version + b"\r\nDate: "
        self._head_end = b"".join(
            b"\r\n" + to_bytes(name) + b": " + to_bytes(value) for name, value in SSE_HEADERS
        ) + b"\r\nTransfer-Encoding: chunked\r\n\r\n"

    def buildProtocol(self, addr: IAddress) -> FrontProtocol:  # type: ignore[override]
        return FrontProtocol(self, addr)

    def stream_head(self, origin: str | None = None) -> bytes:
        """The head of a stream the request chain offloaded (what twisted.web would send),
        with the CORS headers for a request from ``origin`` when ``--cors-origins`` is set
        (no rule adds headers to a stream started here: it would not be on this path)."""
        cors = self.resource.gateway.cors
        if cors is not None:
            extra = b"".join(b"\r\n" + n + b": " + v for n, v in cors.headers(origin))
            return self._head_start + http_date(time.time()) + extra + self._head_end
        return self._head_start + http_date(time.time()) + self._head_end

    def port_of(self, transport: object) -> str:
        """SERVER_PORT: the listening port (one getsockname per listening socket); empty
        for a unix socket (twisted.web's unix.Server is a tcp.Server, whose host address
        has no port: look at the address, not the class)."""
        listener = getattr(transport, "server", None)
        port = self._ports.get(listener)
        if port is None:
            host = transport.getHost()  # type: ignore[attr-defined]
            port = str(host.port) if isinstance(host, (IPv4Address, IPv6Address)) else ""
            self._ports[listener] = port
        return port
