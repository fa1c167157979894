"""Server-Sent Events framing: pure functions from a payload to wire bytes.

A payload is split on every SSE line terminator (``\\r\\n``, ``\\r``, ``\\n``), so a
published payload can never inject ``event:``/``id:``/``retry:`` fields; the original plugin
split on ``\\n`` only and let ``\\r`` through (docs/architecture.md, difference 5). An empty
payload sends nothing, as the original.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

# One pattern, compiled once: the three SSE line terminators (WHATWG HTML §9.2.5).
_LINE_BREAK: Final = re.compile(rb"\r\n|\r|\n")

#: The keepalive comment of an idle ``sse`` stream (docs/architecture.md, difference 6).
KEEPALIVE: Final = b":\n\n"

#: Sent to ``sse`` streams once the hub is back after a Redis outage: what was published
#: meanwhile is lost (pub/sub keeps nothing). A comment by default; ``gap=event`` in the
#: action asks for an event a page can listen for (``source.addEventListener("gap", ...)``).
GAP_COMMENT: Final = b": redis reconnected; messages may have been missed\n\n"
GAP_EVENT: Final = b"event: gap\ndata: redis reconnected; messages may have been missed\n\n"


class Mode(StrEnum):
    """How a Redis payload becomes stream bytes: ``sse`` frames it, ``sseraw`` passes it."""

    SSE = "sse"
    RAW = "sseraw"


def frame_sse(payload: bytes) -> bytes:
    """One ``data:`` line per payload line, then the blank line ending the event.

    Returns ``b""`` for an empty payload (nothing is sent, as the original plugin).
    """
    if not payload:
        return b""
    if b"\n" not in payload and b"\r" not in payload:
        return b"data: " + payload + b"\n\n"
    return b"data: " + _LINE_BREAK.sub(b"\ndata: ", payload) + b"\n\n"


def frame_raw(payload: bytes) -> bytes:
    """``sseraw``: the payload verbatim, as the original plugin documents it (its binary
    ignored the flag and framed anyway)."""
    return payload


FRAMERS: Final = {Mode.SSE: frame_sse, Mode.RAW: frame_raw}


def frame(payloads: list[bytes], mode: Mode) -> bytes:
    """All ``payloads`` framed for ``mode`` and joined into one byte string (maybe empty)."""
    framer = FRAMERS[mode]
    if len(payloads) == 1:
        return framer(payloads[0])
    return b"".join([framer(p) for p in payloads])


def retry_field(ms: int) -> bytes:
    """A ``retry:`` field on its own: the reconnection delay an EventSource is to use."""
    return b"retry: %d\n\n" % ms


def http_chunk(body: bytes) -> bytes:
    """``body`` as one HTTP/1.1 chunk (RFC 9112 §7.1); built once, written to every listener."""
    return b"%x\r\n%b\r\n" % (len(body), body)
