"""CORS on twisted.web requests: a stream route's headers, its preflight, and the publish
endpoint's seam (cors.py decides what the headers are; this only puts them on a Request)."""

from __future__ import annotations

from typing import Final

from twisted.web import server

from .cors import CorsPolicy, combine
from .replies import plain

#: What the publish endpoint takes: a POST with a bearer token and a JSON body.
PUBLISH_METHODS: Final = b"POST, OPTIONS"
PUBLISH_REQUEST_HEADERS: Final = b"Authorization, Content-Type"


def request_origin(request: server.Request) -> str | None:
    """The request's ``Origin`` header (the first, as text), or None."""
    value = request.getHeader(b"origin")
    return value.decode("latin-1") if value else None


def add_cors_headers(request: server.Request, headers: list[tuple[bytes, bytes]]) -> None:
    """Add ``headers`` to ``request``'s head just before it is written, after the rules'
    response side, so that a rule's ``addheader:`` (or the app's own CORS headers) win
    (:func:`~sse_offload.cors.combine`)."""
    if not headers:
        return
    inner = getattr(request, "before_head", None)

    def hook() -> None:
        if inner is not None:
            inner()
        present = request.responseHeaders
        have = {name.lower(): values for name, values in present.getAllRawHeaders()}
        for name, value in combine(headers, have):
            present.setRawHeaders(name, [value])

    if hasattr(request, "before_head"):
        request.before_head = hook  # a GatewayRequest: run at the head's first write
    else:
        hook()


def preflight(request: server.Request, cors: CorsPolicy, origin: str | None) -> bytes:
    """Answer an ``OPTIONS`` request of a stream route: 204 or 403
    (:meth:`CorsPolicy.preflight <sse_offload.cors.CorsPolicy.preflight>`); the body."""
    status, headers = cors.preflight(origin)
    add_cors_headers(request, headers)
    if status != 204:
        return plain(request, status, b"403 Forbidden: origin not allowed\n")
    request.setResponseCode(status)
    return b""


class PublishCors:
    """``--cors-origins`` on the publish endpoint (publish.py's ``CorsPolicy`` seam)."""

    def __init__(self, policy: CorsPolicy) -> None:
        self.policy = policy

    def headers(self, request: server.Request, preflight: bool) -> list[tuple[bytes, bytes]]:
        """The CORS headers of an answer to ``request`` (an ``OPTIONS`` when
        ``preflight``); the endpoint sets its own status and ``Allow``."""
        origin = request_origin(request)
        if not preflight:
            return self.policy.headers(origin)
        if origin is None:
            return []
        _, headers = self.policy.preflight(origin, PUBLISH_METHODS, PUBLISH_REQUEST_HEADERS)
        return headers
