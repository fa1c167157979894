"""What ``POST /publish/<channel>`` sends to Redis, made from the request body (pure).

The body is ``{"data": "...", "event": "...", "id": "...", "retry": N}``; only ``data`` is
required. To a channel, a body with ``data`` alone is published as the data bytes, what a
plain ``sse:`` stream frames as they are; a body with any other field is published as the
compact JSON envelope an ``envelope=json`` stream reads (events.py). To a Redis Stream the
fields become the entry's fields the Streams mode reads (``data``, ``event``, ``retry``);
an entry's id is the one Redis gives it, so a body cannot set ``id`` there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from .events import EnvelopeError, parse_envelope

#: The keys a body may hold (those of the envelope, events.py).
FIELDS: Final = ("event", "id", "retry", "data")


class MessageError(ValueError):
    """A body that cannot be published (400); the text says why."""


class MessageTooLarge(MessageError):
    """A message over the size limit (413)."""


@dataclass(frozen=True)
class Message:
    """The payload of a PUBLISH, or the field list of an XADD (``stream`` is True)."""

    payload: bytes = b""
    fields: tuple[bytes, ...] = ()
    stream: bool = False


def build_message(body: bytes, stream: bool, limit: int) -> Message:
    """The message ``body`` asks for, for a channel or (``stream``) a Redis Stream, of at most
    ``limit`` bytes. Raises :class:`MessageError` (or :class:`MessageTooLarge`)."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MessageError("body is not JSON") from None
    if not isinstance(obj, dict):
        raise MessageError("body is not a JSON object")
    unknown = set(obj) - set(FIELDS)
    if unknown:
        raise MessageError(f"unknown key(s): {', '.join(sorted(unknown))}")
    data = obj.get("data")
    if not isinstance(data, str):
        raise MessageError("data is missing or not a string")
    try:
        # The checks of the envelope reader (no line break in event or id; retry a whole
        # number >= 0), so what is published is what a stream will frame, field by field.
        parse_envelope(json.dumps(obj).encode())
    except EnvelopeError as e:
        raise MessageError(str(e)) from None
    if stream:
        message = _entry(obj, data)
        size = sum(len(f) for f in message.fields)
    else:
        if len(obj) == 1:
            payload = _bytes(data)
        else:
            envelope = {key: obj[key] for key in FIELDS if obj.get(key) is not None}
            payload = _bytes(json.dumps(envelope, separators=(",", ":"), ensure_ascii=False))
        message = Message(payload=payload)
        size = len(payload)
    if size > limit:
        raise MessageTooLarge(f"message of {size} bytes is over the limit of {limit}")
    return message


def _entry(obj: dict[str, object], data: str) -> Message:
    if obj.get("id") is not None:
        raise MessageError("id cannot be set on a stream entry: its id is the one Redis gives")
    fields = [b"data", _bytes(data)]
    event = obj.get("event")
    if isinstance(event, str) and event:
        fields += [b"event", _bytes(event)]
    retry = obj.get("retry")
    if isinstance(retry, int):
        fields += [b"retry", b"%d" % retry]
    return Message(fields=tuple(fields), stream=True)


def _bytes(text: str) -> bytes:
    # Lone surrogates ("\ud800" in the JSON) are kept as the envelope reader keeps them.
    return text.encode("utf-8", "surrogatepass")
