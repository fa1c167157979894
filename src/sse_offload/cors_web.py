"""CORS on twisted.web requests: a stream's headers and the preflight answer (cors.py
decides what they are; this only puts them on a Request)."""

from __future__ import annotations

from twisted.web import server

from .cors import CorsPolicy


def add_cors_headers(request: server.Request, headers: list[tuple[bytes, bytes]]) -> None:
    """Add ``headers`` to ``request``'s head just before it is written, after the rules'
    response side: a header a rule set itself (``addheader:``) is kept and not doubled."""
    if not headers:
        return
    inner = getattr(request, "before_head", None)

    def hook() -> None:
        if inner is not None:
            inner()
        present = request.responseHeaders
        for name, value in headers:
            if not present.hasHeader(name):
                present.setRawHeaders(name, [value])

    if hasattr(request, "before_head"):
        request.before_head = hook  # a GatewayRequest: run at the head's first write
    else:
        hook()


def preflight(request: server.Request, cors: CorsPolicy, origin: str | None) -> bytes:
    """Answer an ``OPTIONS`` preflight of a stream route (GET only); the (empty) body."""
    status, headers = cors.preflight(origin, ("GET",))
    request.setResponseCode(status)
    for name, value in headers:
        request.setHeader(name, value)
    if status != 204:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"403 Forbidden: origin not allowed\n"
    return b""
