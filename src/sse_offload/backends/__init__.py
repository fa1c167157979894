"""Backends behind the gateway: an in-process WSGI app or an upstream HTTP server.

A backend takes a request the request chain let through (``serve``) and reports the app's
status and headers to the front resource (:meth:`GatewayResource.app_head`), which runs the
response side and either starts a stream or lets the backend pass the body through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from twisted.web.server import Request

    from sse_offload.routing import RequestState
    from sse_offload.web import GatewayResource


class Backend(Protocol):
    """Where a request goes when no rule answered it."""

    def serve(self, request: Request, state: RequestState, front: GatewayResource) -> None:
        """Serve ``request``; call ``front.app_head`` when the app's head is known."""
        ...
