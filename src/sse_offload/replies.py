"""twisted.web's side of a response: the gateway's Request, and writing answers to it.

:class:`GatewayRequest` is the Request of the gateway's site. It carries two things
explicitly that the front needs across calls:

- ``routed``: the request chain's result, when the front protocol (front.py) already ran
  the chain on this request's head before handing the connection to twisted.web (the rules
  never run twice for one request);
- ``before_head``: what runs just before the response head is written, once: the response
  side of the rules (``collect-header``, the response and final chains, ``add-header``),
  which must see the head as it is about to go out, whoever wrote it (a static file, an
  answer, a stream).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.web import server
from twisted.web.http_headers import Headers

from .answers import UTF8_TEXT, Answer
from .routing import Outcome, RequestState


def to_text(raw: bytes) -> str:
    """Bytes of the wire as the rules' text: any byte survives (surrogateescape)."""
    return raw.decode("utf-8", "surrogateescape")


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class Routed:
    """The request chain's result for a request whose head the front protocol read."""

    state: RequestState
    outcome: Outcome


class GatewayRequest(server.Request):
    """twisted.web's Request, with the two explicit hooks of the module docstring."""

    routed: Routed | None = None
    before_head: Callable[[], None] | None = None

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # The first request of a connection the front protocol handed over (channel.py).
        take = getattr(self.channel, "take_routed", None)
        if take is not None:
            self.routed = take()

    def write(self, data: bytes) -> None:
        hook = self.before_head
        if hook is not None and not self.startedWriting:
            self.before_head = None
            hook()
        super().write(data)


def replace_headers(request: server.Request, headers: Iterable[tuple[str, str]]) -> None:
    """Replace the response's headers."""
    replaced = Headers()
    for name, value in headers:
        replaced.addRawHeader(to_bytes(name), to_bytes(value))
    request.responseHeaders = replaced


def set_head(
    request: server.Request, status: int, reason: bytes | None, headers: Iterable[tuple[str, str]]
) -> None:
    """Replace the response's status and headers."""
    replace_headers(request, headers)
    request.setResponseCode(status, reason)


def reply(request: server.Request, answer: Answer) -> bytes:
    """Set ``answer``'s status and headers on ``request``; its body, for render to return."""
    reason = None if answer.reason is None else to_bytes(answer.reason)
    request.setResponseCode(answer.status, reason)
    for name, value in answer.headers:
        request.setHeader(to_bytes(name), to_bytes(value))
    return to_bytes(answer.body)


def plain(request: server.Request, status: int, body: bytes) -> bytes:
    """A short text answer of the gateway's own (errors, refusals)."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", to_bytes(UTF8_TEXT))
    return body


def deliver(request: server.Request, body: bytes | int) -> None:
    """Finish a request whose render returned NOT_DONE_YET, as server.Request.render would
    have with ``body``."""
    if body == server.NOT_DONE_YET or isinstance(body, int):
        return
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.write(b"" if request.method == b"HEAD" else body)
    request.finish()
