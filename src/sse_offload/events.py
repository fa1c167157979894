"""SSE events with fields, pure: Redis Stream entry ids, JSON envelopes, event framing.

A plain pub/sub payload becomes ``data:`` lines only (sse.py). Two sources give more:

- a **Redis Stream entry** (``sse:stream=KEY``): its id is the event's ``id:``, which a
  reconnecting EventSource sends back as ``Last-Event-ID``; its ``data`` field (or, without
  one, its first field's value) is the data, and ``event`` and ``retry`` fields are copied;
- a **JSON envelope** (``envelope=json``): ``{"event":..,"id":..,"retry":..,"data":..}``.

Every field is framed injection-safe: data is split on every SSE line terminator as in
sse.py, and an event name or id holding a line terminator (or, for an id, NUL, which
browsers ignore the field for) is refused, never copied, so a publisher's text cannot add
fields to the wire.
"""

from __future__ import annotations

import json
import re
from typing import Final, NamedTuple

_LINE_BREAK: Final = re.compile(rb"\r\n|\r|\n")
_BAD_NAME: Final = re.compile(rb"[\r\n]")
_BAD_ID: Final = re.compile(rb"[\r\n\x00]")
_ENTRY_ID: Final = re.compile(rb"(\d{1,20})-(\d{1,20})")

#: A stream position: (milliseconds, sequence) of a Redis Stream entry id.
Position = tuple[int, int]
#: Before every entry: the position of a stream nobody has written to.
ORIGIN: Final[Position] = (0, 0)


class Event(NamedTuple):
    """One SSE event: ``data`` and the optional fields (bytes, already checked)."""

    data: bytes
    event: bytes | None = None
    id: bytes | None = None
    retry: int | None = None


class EnvelopeError(ValueError):
    """A message that is not a valid envelope: the text says why, for the log line."""


def frame_event(e: Event) -> bytes:
    """``e`` on the wire: ``event:``, ``id:``, ``retry:``, then one ``data:`` line per line
    of data (an empty data is one empty ``data:`` line, so the event is still dispatched)."""
    parts = []
    if e.event:
        parts.append(b"event: " + e.event + b"\n")
    if e.id is not None:
        parts.append(b"id: " + e.id + b"\n")
    if e.retry is not None:
        parts.append(b"retry: %d\n" % e.retry)
    parts.append(b"data: " + _LINE_BREAK.sub(b"\ndata: ", e.data) + b"\n\n")
    return b"".join(parts)


def parse_position(text: bytes | str) -> Position | None:
    """``1700000000000-3`` as (ms, seq); None for anything else (``$``, ``-``, junk)."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    m = _ENTRY_ID.fullmatch(raw.strip())
    if m is None:
        return None
    ms, seq = int(m.group(1)), int(m.group(2))
    if ms >= 1 << 64 or seq >= 1 << 64:
        return None
    return ms, seq


def position_id(p: Position) -> bytes:
    return b"%d-%d" % p


def compound_id(positions: list[Position]) -> bytes:
    """The ``id:`` of a stream of several Redis Streams: each one's position, in the order
    of the rule's ``stream=`` list, comma-separated (nchan's multiplexed ids look alike)."""
    return b",".join(position_id(p) for p in positions)


def parse_last_event_id(text: str, count: int) -> list[Position | None] | None:
    """A ``Last-Event-ID`` for a stream of ``count`` Redis Streams: one position each
    (None where that part is not an entry id). None: no id at all (a fresh client)."""
    text = text.strip()
    if not text:
        return None
    parts = text.split(",")
    if len(parts) != count:
        return [None] * count
    return [parse_position(part) for part in parts]


def entry_event(entry_id: bytes, fields: list[bytes], envelope: bool = False) -> Event:
    """A Redis Stream entry (``XADD key * data ... [event ...] [retry ...]``) as an event
    whose id is the entry id. With ``envelope`` the data field holds a JSON envelope,
    whose own ``id`` is ignored: the entry id is what a client resumes from."""
    values = dict(zip(fields[::2], fields[1::2], strict=False))
    data = values.get(b"data")
    if data is None:
        data = fields[1] if len(fields) >= 2 else b""
    if envelope:
        try:
            e = parse_envelope(data)
        except EnvelopeError:
            e = Event(data)  # the entry is kept (it holds a position); logged by the caller
        return e._replace(id=entry_id)
    event = values.get(b"event")
    if event is not None and _BAD_NAME.search(event):
        event = None
    retry = values.get(b"retry")
    return Event(
        data, event or None, entry_id, int(retry) if retry and retry.isdigit() else None
    )


def parse_envelope(payload: bytes) -> Event:
    """``{"data": .., "event": .., "id": .., "retry": ..}`` as an event; ``data`` that is
    not a string is sent as its compact JSON. Raises :class:`EnvelopeError`."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise EnvelopeError(f"not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise EnvelopeError("not a JSON object")
    unknown = set(obj) - {"data", "event", "id", "retry"}
    if unknown:
        raise EnvelopeError(f"unknown key(s) {', '.join(sorted(unknown))}")
    data = obj.get("data", "")
    raw = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return Event(
        raw.encode("utf-8", "surrogatepass"),
        _field(obj, "event", _BAD_NAME),
        _field(obj, "id", _BAD_ID),
        _retry(obj.get("retry")),
    )


def _field(obj: dict[str, object], name: str, bad: re.Pattern[bytes]) -> bytes | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EnvelopeError(f"{name} is not a string")
    raw = value.encode("utf-8", "surrogatepass")
    if bad.search(raw):
        raise EnvelopeError(f"{name} holds a line break")
    return raw


def _retry(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise EnvelopeError("retry is not a whole number of milliseconds >= 0")
    return value
