"""Backends behind the gateway: an in-process WSGI app or an upstream HTTP server.

A backend takes a request the request chain let through (``serve``) and reports the app's
status and headers to the front's :class:`AppHead` (``response_side.ResponseSide``), which
runs the response side and either starts a stream or lets the backend pass the body through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from twisted.web.server import Request

    from sse_offload.routing import RequestState

#: What :meth:`AppHead.app_head` answers: pass the body through, or the request became a
#: stream / was answered and the app's body is to be discarded.
Verdict = Literal["pass", "stream", "done"]


class AppHead(Protocol):
    """Where a backend reports the app's response head."""

    def app_head(
        self,
        request: Request,
        state: RequestState,
        status: int,
        reason: bytes | None,
        headers: list[tuple[str, str]] | None,
    ) -> Verdict:
        """Run the response side for the app's head (None: the app sent none); the
        verdict says what to do with the app's body."""
        ...


class Backend(Protocol):
    """Where a request goes when no rule answered it."""

    def serve(self, request: Request, state: RequestState, front: AppHead) -> None:
        """Serve ``request``; call ``front.app_head`` when the app's head is known."""
        ...
