"""uWSGI's key/value list (``server=...,subscribe=...``) and the sse action argument.

Both follow the original exactly (seed-behaviour §1.2 items 3-6; U:core/utils.c
``uwsgi_kvlist_parse``), because a config written for the plugin must mean the same here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sse_offload.routing.expand import c_atoi

#: The plugin's default read size (SO:sse.c); DESIGN §4.10 accepts it and never caps messages.
DEFAULT_BUFFER_SIZE = 4096


def parse_kvlist(text: str) -> dict[str, str]:
    """Parse ``k=v,k=v``: ``,`` splits items, the first ``=`` splits key and value.

    A backslash keeps the next character literally (``\\,`` is a comma inside a value);
    no trimming; items without ``=`` are ignored; a repeated key: the last one wins.
    """
    items: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if char == "," and not escaped:
            items.append("".join(current))
            current = []
        elif char == "\\" and not escaped:
            escaped = True
        else:
            current.append(char)
            escaped = False
    items.append("".join(current))

    result: dict[str, str] = {}
    for item in items:
        key: list[str] = []
        escaped = False
        for index, char in enumerate(item):
            if char == "=" and not escaped:
                result["".join(key)] = item[index + 1 :]
                break
            if char == "\\" and not escaped:
                escaped = True
            elif escaped:
                # As uWSGI: a character escaped inside a key is dropped from it.
                escaped = False
            else:
                key.append(char)
    return result


@dataclass(frozen=True)
class SseTarget:
    """What an ``sse``/``sseraw`` argument asks for, after expansion.

    ``server`` None means "the configured default"; ``channel`` None means no
    ``subscribe`` was given (the request cannot be served).
    """

    channel: str | None
    server: str | None
    buffer_size: int
    gap: str | None = None  # after a Redis outage: "comment" (default) or "event"


def parse_sse_arg(expanded: str) -> SseTarget:
    """Interpret an expanded ``sse:``/``sseraw:`` argument.

    Without ``=`` the whole string is the channel (even empty); otherwise it is a kvlist
    with keys ``server``, ``subscribe`` and ``buffer_size``, and ours: ``gap`` (``event``
    asks for a named ``gap`` event after a Redis outage instead of a comment).
    """
    if "=" not in expanded:
        return SseTarget(expanded, None, DEFAULT_BUFFER_SIZE)
    items = parse_kvlist(expanded)
    size = c_atoi(items.get("buffer_size", ""))
    # A negative size wraps to a huge unsigned one in the original; it is ignored anyway.
    return SseTarget(
        items.get("subscribe"),
        items.get("server"),
        size if size > 0 else DEFAULT_BUFFER_SIZE,
        items.get("gap"),
    )
