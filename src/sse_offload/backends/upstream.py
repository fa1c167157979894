"""The upstream HTTP proxy: requests go to an app server (gunicorn, Django's runserver).

Built on ``twisted.web.client.Agent``, not twisted.web's ReverseProxyResource, which speaks
HTTP/1.0 upstream, has no back-pressure (it buffered 200 MiB for one slow client when
measured) and never closes the upstream when the client leaves. The upstream's head arrives
before its body, so the response side decides between a stream and a pass-through before
any body byte is read; the body is relayed with the upstream connection registered as the
client request's producer, so a slow client pauses the upstream and memory stays bounded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import client
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.server import Request

from sse_offload.routing import RequestState

if TYPE_CHECKING:
    from sse_offload.backends import AppHead

log = Logger()

#: Seconds to connect to the upstream. nginx's proxy_connect_timeout is 60 s, sized for
#: remote hosts; an app server on the same host or LAN answers in milliseconds.
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
#: Seconds from sending the request to the upstream's response head: nginx's
#: proxy_read_timeout default. There is no body timeout: a passed-through stream may last.
DEFAULT_HEAD_TIMEOUT: Final = 60.0
#: Idle keep-alive connections kept per upstream. Agent's default of 2 makes every
#: concurrent request beyond two open a new connection.
MAX_PERSISTENT: Final = 32
#: Body bytes of an offloaded response read and dropped before the upstream connection is
#: closed instead (an app that streams a body and also asks for an offload).
DISCARD_LIMIT: Final = 64 * 1024

#: RFC 9110 §7.6.1 hop-by-hop headers, plus the ones the proxy sets itself.
HOP_BY_HOP: Final = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "proxy-authenticate", "proxy-authorization",
    }
)
_FORWARDED: Final = (b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Host")


class UpstreamError(ValueError):
    """A bad ``--proxy`` address."""


@dataclass(frozen=True)
class UpstreamSpec:
    """Where the upstream listens, and the proxy's timeouts and trusted proxies."""

    url: str  # http://host:port or unix:/path
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    head_timeout: float = DEFAULT_HEAD_TIMEOUT
    trusted: tuple[str, ...] = ()  # addresses or networks whose X-Forwarded-* are kept

    @property
    def unix_path(self) -> str | None:
        """The socket path of a ``unix:`` upstream."""
        if self.url.startswith("unix:"):
            return self.url[len("unix:") :].removeprefix("//")
        return None


def parse_upstream(text: str) -> str:
    """Check an upstream address: ``http://host:port`` or ``unix:/path``; return it."""
    text = text.strip()
    if text.startswith("unix:"):
        if not text[5:].removeprefix("//"):
            raise UpstreamError(f"expected unix:/path, got {text!r}")
        return text
    if text.startswith("http://"):
        rest = text[len("http://") :].rstrip("/")
        if not rest or "/" in rest:
            raise UpstreamError(f"expected http://host:port (no path), got {text!r}")
        return "http://" + rest
    raise UpstreamError(f"expected http://host:port or unix:/path, got {text!r}")


def _hop_by_hop(headers: Headers) -> set[bytes]:
    named = {
        token.strip().lower()
        for value in headers.getRawHeaders(b"connection", [])
        for token in value.split(b",")
    }
    return {n.encode() for n in HOP_BY_HOP} | named


def strip_hop_by_hop(headers: Headers) -> list[tuple[bytes, bytes]]:
    """``headers`` less hop-by-hop ones (and those ``Connection`` names), in order."""
    drop = _hop_by_hop(headers)
    return [
        (name, value)
        for name, values in headers.getAllRawHeaders()
        if name.lower() not in drop
        for value in values
    ]


class _TrustedPeers:
    def __init__(self, trusted: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def __contains__(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in n for n in self.networks)


def forwarded_headers(request: Request, trusted: bool) -> list[tuple[bytes, bytes]]:
    """X-Forwarded-For/-Proto/-Host: appended to (For) or kept from (Proto, Host) what a
    trusted proxy sent; replacing what anyone else sent."""
    peer = str(getattr(request.getClientAddress(), "host", "")) or "unix"
    incoming = request.requestHeaders
    chain = b", ".join(incoming.getRawHeaders(b"x-forwarded-for", [])) if trusted else b""
    forwarded_for = chain + b", " + peer.encode() if chain else peer.encode()
    proto = incoming.getRawHeaders(b"x-forwarded-proto", [None])[-1] if trusted else None
    host = incoming.getRawHeaders(b"x-forwarded-host", [None])[-1] if trusted else None
    return [
        (b"X-Forwarded-For", forwarded_for),
        (b"X-Forwarded-Proto", proto or (b"https" if request.isSecure() else b"http")),
        (b"X-Forwarded-Host", host or (request.getHeader(b"host") or b"")),
    ]


class _Relay(Protocol):
    """Copies the upstream body to the client, the upstream pausing with the client."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.client_gone = False
        request.notifyFinish().addErrback(self._client_gone)

    def connectionMade(self) -> None:
        self.request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        if not self.client_gone:
            self.request.write(data)

    def connectionLost(self, reason: Failure = client.ResponseDone) -> None:  # type: ignore[assignment]
        if self.client_gone:
            return
        self.request.unregisterProducer()
        if not reason.check(client.ResponseDone, client.PotentialDataLoss):
            log.error(
                "upstream body of {uri} cut short: {error}",
                uri=self.request.uri, error=reason.getErrorMessage(),
            )
            self.request.loseConnection()
            return
        self.request.finish()

    def _client_gone(self, _: Failure) -> None:
        self.client_gone = True
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]


class _Discard(Protocol):
    """Reads and drops an offloaded response's body; a long one closes the connection."""

    def __init__(self) -> None:
        self.seen = 0

    def dataReceived(self, data: bytes) -> None:
        self.seen += len(data)
        if self.seen > DISCARD_LIMIT and self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = client.ResponseDone) -> None:  # type: ignore[assignment]
        """Nothing to do."""


class _UnixEndpoints:
    def __init__(self, reactor: Any, path: str, timeout: float) -> None:
        self.reactor, self.path, self.timeout = reactor, path, timeout

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(self.reactor, self.path, timeout=self.timeout)


class UpstreamBackend(service.Service):
    """Proxies requests to ``spec.url``, with a connection pool closed with the service."""

    def __init__(self, spec: UpstreamSpec, reactor: Any, name: str = "upstream") -> None:
        self.spec = spec
        self.reactor = reactor
        self.trusted = _TrustedPeers(spec.trusted)
        self.pool = client.HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = MAX_PERSISTENT
        path = spec.unix_path
        if path is not None:
            self.agent = client.Agent.usingEndpointFactory(
                reactor, _UnixEndpoints(reactor, path, int(spec.connect_timeout) or 1), self.pool
            )
            self.base = b"http://localhost"
        else:
            self.agent = client.Agent(
                reactor, connectTimeout=spec.connect_timeout, pool=self.pool
            )
            self.base = spec.url.encode()
        self.setName(name)

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        return self.pool.closeCachedConnections()

    def serve(self, request: Request, state: RequestState, front: AppHead) -> None:
        """Send ``request`` upstream; the head goes to ``front.app_head``."""
        if request.getHeader(b"upgrade") is not None:
            log.info("refused an upgrade ({what}) for {uri}: not proxied",
                     what=request.getHeader(b"upgrade"), uri=request.uri)
            self._fail(request, 501, b"501 Not Implemented: upgrades (WebSocket) are not proxied\n")
            return
        method = state.vars.get("REQUEST_METHOD", "GET").encode("utf-8", "surrogateescape")
        uri = state.vars.get("REQUEST_URI", "") or request.uri.decode("latin-1")
        target = self.base + uri.encode("utf-8", "surrogateescape")
        headers = Headers()
        drop = {n.lower() for n in _FORWARDED}
        for name, value in strip_hop_by_hop(request.requestHeaders):
            if name.lower() not in drop and name.lower() != b"content-length":
                headers.addRawHeader(name, value)
        peer_host = str(getattr(request.getClientAddress(), "host", ""))
        for name, value in forwarded_headers(request, peer_host in self.trusted):
            headers.addRawHeader(name, value)
        content = request.content
        size = 0
        if content is not None:
            content.seek(0, 2)
            size = content.tell()
            content.seek(0)
        has_body = content is not None and (
            size > 0 or request.getHeader(b"content-length") is not None
        )
        body = client.FileBodyProducer(content) if has_body and content is not None else None
        d = self.agent.request(method, target, headers, body)
        # Not Deferred.addTimeout: Agent wraps the cancellation in ResponseNeverReceived.
        timed_out: list[bool] = []

        def head_timeout() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.reactor.callLater(self.spec.head_timeout, head_timeout)

        def stop_timer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(stop_timer)
        gone: list[object] = []
        request.notifyFinish().addBoth(gone.append)

        def got_head(response: IResponse) -> None:
            if gone:
                response.deliverBody(_Discard())
                return
            head = [
                (
                    name.decode("latin-1"),
                    value.decode("utf-8", "surrogateescape"),
                )
                for name, value in strip_hop_by_hop(response.headers)
            ]
            if isinstance(response.length, int) and method != b"HEAD":
                # Agent keeps Content-Length apart (a connection header to it); it is the
                # app's, for the rules and for a passed-through body.
                head.append(("Content-Length", str(response.length)))
            verdict = front.app_head(request, state, response.code, response.phrase, head)
            if verdict == "pass":
                response.deliverBody(_Relay(request))
            else:
                response.deliverBody(_Discard())

        def failed(failure: Failure) -> None:
            if gone:
                return
            if timed_out or failure.check(
                defer.TimeoutError, error.TimeoutError, error.ConnectingCancelledError
            ):
                log.error("upstream {upstream} timed out for {uri}: {error}",
                          upstream=self.spec.url, uri=request.uri,
                          error=failure.getErrorMessage())
                self._fail(request, 504, b"504 Gateway Timeout\n")
                return
            log.error("upstream {upstream} failed for {uri}: {error}",
                      upstream=self.spec.url, uri=request.uri, error=failure.getErrorMessage())
            self._fail(request, 502, b"502 Bad Gateway\n")

        d.addCallbacks(got_head, failed)
        d.addErrback(lambda f: log.failure("proxying {uri}", f, uri=request.uri))

    @staticmethod
    def _fail(request: Request, status: int, body: bytes) -> None:
        if request.finished or request._disconnected:
            return
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
        request.finish()
