"""Action values read as uWSGI reads them: C ``atoi``, the key/value list
(``server=...,subscribe=...``), the sse action argument and ``goto`` targets.

Pure functions of the text, shared by the rules checker (config/lint.py) and the routing
engine, so that what ``sse-offload check`` accepts is exactly what the engine follows. They
follow the original exactly (uWSGI's ``uwsgi_kvlist_parse`` in core/utils.c, C ``atoi``),
because a config written for the plugin must mean the same here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: The plugin's default read size; ``buffer_size=`` is accepted and ignored: it never caps
#: message size here (docs/architecture.md, difference 10).
DEFAULT_BUFFER_SIZE = 4096

#: What C's isspace() skips before a number.
C_SPACE = " \t\n\v\f\r"


def c_atoi(text: str) -> int:
    """C ``atoi``/``strtol(.., 10)``: leading space, a sign, digits; anything else ends it."""
    digits = text.lstrip(C_SPACE)
    sign = 1
    if digits[:1] in ("+", "-"):
        sign = -1 if digits[0] == "-" else 1
        digits = digits[1:]
    end = 0
    while end < len(digits) and "0" <= digits[end] <= "9":
        end += 1
    return sign * int(digits[:end]) if end else 0


def c_number(text: str) -> bool:
    """Does C ``atoi`` read a number from ``text`` (spaces, a sign, then a digit), rather
    than give 0 for want of one?"""
    rest = text.lstrip(C_SPACE)
    if rest[:1] in ("+", "-"):
        rest = rest[1:]
    return rest[:1].isdigit()


def goto_target(label: str, labels: Sequence[str | None]) -> int | None:
    """The rule a ``goto:label`` jumps to in a chain whose rules have ``labels``: the first
    rule with that label, else the label read as a rule number by C ``atoi`` (``+2`` and
    ``2x`` are 2, as uWSGI reads them). None: neither (the engine reads it as 0, a jump
    backwards, which ends the request with BREAK)."""
    for index, other in enumerate(labels):
        if other == label:
            return index
    return c_atoi(label) if c_number(label) else None


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


#: The keys of an sse argument that uWSGI's plugin knows; ours (:data:`OWN_KEYS`) must be
#: written in the rule itself, never come out of a request var (see parse_sse_arg).
PLUGIN_KEYS = frozenset({"server", "subscribe", "buffer_size"})
OWN_KEYS = frozenset(
    {"gap", "psubscribe", "ssubscribe", "stream", "envelope", "reset", "history", "auth"}
)
#: Keys whose value may list several names, ``;``-separated.
LIST_KEYS = ("subscribe", "psubscribe", "ssubscribe", "stream")


class TargetError(ValueError):
    """An sse argument that cannot be served: the text is for the log line."""


@dataclass(frozen=True)
class SseTarget:
    """What an ``sse``/``sseraw`` argument asks for, after expansion.

    ``server`` None means "the configured default"; ``channel`` None means nothing to
    listen to was given (the request cannot be served); otherwise it names the sources for
    log lines. A stream listens to pub/sub ``channels``, ``patterns`` and ``sharded``
    channels (SSUBSCRIBE), or to Redis Streams (``streams``), never both kinds.
    """

    channel: str | None
    server: str | None
    buffer_size: int
    gap: str | None = None  # after a Redis outage: "comment" (default) or "event"
    channels: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    streams: tuple[str, ...] = ()
    envelope: bool = False  # payloads are JSON envelopes (events.parse_envelope)
    reset: str = "reset"  # the event name when a Last-Event-ID cannot be resumed
    history: int = 0  # a fresh client of a Redis Stream first gets this many past entries
    sharded: tuple[str, ...] = ()  # sharded channels (SSUBSCRIBE; SPUBLISH publishers)
    auth: str | None = None  # "jwt": the client needs a token granting every name

    def names(self) -> tuple[str, ...]:
        """Every channel, pattern, sharded channel and stream key, in the rule's order of
        keys."""
        return self.channels + self.patterns + self.sharded + self.streams


def parse_sse_arg(expanded: str, template: str | None = None) -> SseTarget:
    """Interpret an expanded ``sse:``/``sseraw:`` argument; ``template`` is the argument as
    the rule writes it, before expansion (None: the expanded text is trusted as written).

    Without ``=`` the whole string is the channel (even empty); otherwise it is a kvlist
    with the plugin's keys ``server``, ``subscribe`` and ``buffer_size``, and ours:
    ``gap=event`` (a named ``gap`` event after a Redis outage instead of a comment),
    ``psubscribe`` (glob patterns), ``ssubscribe`` (sharded channels), ``stream`` (Redis
    Streams, resumable), ``envelope=json``, ``reset=NAME``, ``history=N`` and ``auth=jwt``.

    A value from a request var must not change what the rule asks for: our keys must be
    in the template, and a value is split on ``;`` into several names only when the
    template's value has that many parts (``subscribe=$1`` with ``$1`` = ``a;b`` is the one
    channel ``a;b``, as in uWSGI). Raises :class:`TargetError` otherwise.
    """
    if "=" not in expanded:
        return SseTarget(expanded, None, DEFAULT_BUFFER_SIZE, channels=(expanded,))
    items = parse_kvlist(expanded)
    written = items if template is None else (
        parse_kvlist(template) if "=" in template else {}
    )
    for key in items.keys() & OWN_KEYS - written.keys():
        raise TargetError(f"{key}= came from a request var; it must be written in the rule")
    lists = {key: _names(key, items, written) for key in LIST_KEYS if key in items}
    if "stream" in lists and len(lists) > 1:
        raise TargetError("stream= cannot be mixed with subscribe=, psubscribe= or ssubscribe=")
    envelope = items.get("envelope", "")
    if envelope not in ("", "json"):
        raise TargetError(f"envelope={envelope}: the only envelope is json")
    auth = items.get("auth") or None
    if auth not in (None, "jwt"):
        raise TargetError(f"auth={auth}: the only auth is jwt")
    if items.get("auth") != written.get("auth"):
        # A later "auth=" out of a var would win (the last key does) and drop the check.
        raise TargetError("auth= must be what the rule writes; a request var changed it")
    history = items.get("history", "0")
    if not history.isdigit():
        raise TargetError(f"history={history}: not a whole number")
    size = c_atoi(items.get("buffer_size", ""))
    names = [n for key in LIST_KEYS for n in lists.get(key, ())]
    # A negative size wraps to a huge unsigned one in the original; it is ignored anyway.
    return SseTarget(
        ";".join(names) if lists else None,
        items.get("server"),
        size if size > 0 else DEFAULT_BUFFER_SIZE,
        items.get("gap"),
        lists.get("subscribe", ()),
        lists.get("psubscribe", ()),
        lists.get("stream", ()),
        envelope == "json",
        items.get("reset") or "reset",
        int(history),
        lists.get("ssubscribe", ()),
        auth,
    )


def _names(key: str, items: dict[str, str], written: dict[str, str]) -> tuple[str, ...]:
    value = items[key]
    parts = written.get(key, "").count(";") + 1 if key in written else 1
    if parts == 1:
        return (value,)
    names = tuple(value.split(";"))
    if len(names) != parts:
        raise TargetError(
            f"{key}= lists {len(names)} names where the rule writes {parts}: a request var "
            "added or removed some"
        )
    return names
