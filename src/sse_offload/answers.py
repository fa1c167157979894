"""What the gateway answers, as pure functions of the rules' outcomes: no Twisted here.

The front resource (web.py) applies these to twisted.web requests; ``sse-offload explain``
(explain.py) prints them. Both read the same functions, so the explainer cannot drift from
what the gateway does.

- :func:`gateway_answer`: the response the gateway makes itself for a request-chain outcome
  (``break:`` with a status, ``return:``, a redirect, a 401, a missing static file);
- :func:`static_target`: the file a ``static-map`` serves for a request's vars;
- :func:`stream_target`: the channel and Redis server an offload names, or why it cannot
  stream;
- :func:`stream_head`: an app's response head turned into a stream's head.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl

from .config import Config, StaticMap
from .config.actions import reason_phrase
from .config.values import DEFAULT_BUFFER_SIZE, TargetError
from .redis_address import AddressError, RedisAddress, parse_address
from .routing import (
    AuthRequired,
    Break,
    Offload,
    Outcome,
    Redirect,
    Return,
    SseTarget,
    Static,
    parse_sse_arg,
    static_map_target,
)

#: The head of a stream offloaded from the request chain (docs/architecture.md,
#: difference 7): the event-stream type, no caching, and no buffering by nginx in front.
SSE_HEADERS: Final = (
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
)

#: Headers of the app's head that a stream never carries (difference 7): hop-by-hop and
#: framing ones. The stream is re-framed, and a Content-Length would end it early.
FRAMING_HEADERS: Final = frozenset(
    {
        "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
        "trailer", "content-encoding", "proxy-connection", "te",
    }
)

#: Longest channel name a stream may ask for. Channels often come from URLs, and each
#: distinct name costs a SUBSCRIBE and a hub entry; Centrifugo caps names at 255 bytes by
#: default, we allow more for names built from several parts.
MAX_CHANNEL_NAME: Final = 1024

PLAIN_TEXT: Final = "text/plain"
UTF8_TEXT: Final = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Answer:
    """A response the gateway makes itself: status, reason phrase, headers and body."""

    status: int
    reason: str | None
    headers: tuple[tuple[str, str], ...]
    body: str


NOT_FOUND: Final = Answer(404, None, (("Content-Type", UTF8_TEXT),), "404 Not Found\n")


def gateway_answer(outcome: Outcome) -> Answer | None:
    """The response for a request-chain outcome the gateway answers itself; None for the
    others (offload, continue, a served static file, ``break:`` without a status)."""
    if isinstance(outcome, Break):
        if outcome.status is None:
            return None  # the connection is closed without a response, as the original
        return Answer(
            outcome.status, None,
            (("Content-Type", PLAIN_TEXT), ("Connection", "close")), "",
        )
    if isinstance(outcome, Return):
        # uWSGI's return: the status, text/plain, and the reason phrase as the body.
        return Answer(outcome.status, outcome.reason, (("Content-Type", PLAIN_TEXT),),
                      outcome.reason)
    if isinstance(outcome, Redirect):
        phrase = reason_phrase(outcome.status) or ""
        return Answer(
            outcome.status, phrase,
            (("Location", outcome.location), ("Content-Type", PLAIN_TEXT)), phrase,
        )
    if isinstance(outcome, AuthRequired):
        return Answer(
            401, "Authorization Required",
            (("WWW-Authenticate", f'Basic realm="{outcome.realm}"'),
             ("Content-Type", PLAIN_TEXT)),
            "Unauthorized",
        )
    if isinstance(outcome, Static) and outcome.path is None:
        return NOT_FOUND
    return None


def static_target(config: Config, vars: Mapping[str, str]) -> tuple[StaticMap, str] | None:
    """The ``static-map`` that serves a request with these vars, and the file, if any. The
    vars, not the request line: ``setmethod``/``setpathinfo``/``rewrite`` have had their say."""
    if vars.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        return None
    path_info = vars.get("PATH_INFO", "")
    for mapping in config.static_maps:
        if path_info.startswith(mapping.mount):
            target = static_map_target(mapping, path_info[len(mapping.mount) :])
            if target is not None:
                return mapping, target
    return None


#: Why an offload cannot stream (:func:`stream_target`); otherwise it is a bad server
#: address, and the text is its parse error.
NO_CHANNEL: Final = "no channel"
LONG_CHANNEL: Final = "channel name too long"
REFUSED_SERVER: Final = "server not named by the configuration"
#: The start of the reason for an argument parse_sse_arg refuses (its text follows).
BAD_TARGET: Final = "bad sse argument"
#: Redis Streams mode reads every key of a server with one XREAD, which a cluster refuses
#: for keys of different slots: it does not run on a cluster address (start-up refuses the
#: rules that say so; this covers a server= that came out of expansion).
CLUSTER_STREAMS: Final = "Redis Streams mode (stream=) does not run on a Redis Cluster address"


def stream_target(
    outcome: Offload,
    default_address: RedisAddress | None,
    allowed_servers: Collection[tuple[object, ...]],
    max_channel_length: int = MAX_CHANNEL_NAME,
) -> tuple[SseTarget, RedisAddress | str | None]:
    """The channel and server an offload names: ``(target, address)``; the address is
    ``default_address`` when the action names none. Where the stream cannot start,
    ``address`` is instead the reason: :data:`NO_CHANNEL`, :data:`LONG_CHANNEL`,
    :data:`REFUSED_SERVER`, :data:`CLUSTER_STREAMS`, or a bad server's parse error.

    A ``server=`` must be one the configuration names (``allowed_servers``, address keys):
    it may come out of variable expansion, a value a client or an app supplied, and the
    original plugin let a query string point the gateway at any host (difference 9).
    """
    template = outcome.rule.action.arg if outcome.expanded and outcome.rule.action else None
    try:
        target = parse_sse_arg(outcome.arg, template)
    except TargetError as e:
        return SseTarget(None, None, DEFAULT_BUFFER_SIZE), f"{BAD_TARGET}: {e}"
    if target.channel is None:
        return target, NO_CHANNEL
    if any(len(name) > max_channel_length for name in target.names()):
        return target, LONG_CHANNEL
    if target.server is None:
        address = default_address
    else:
        try:
            address = parse_address(target.server)
        except AddressError as e:
            return target, str(e)
        if address.key not in allowed_servers:
            return target, REFUSED_SERVER
    if target.streams and address is not None and address.kind == "cluster":
        return target, CLUSTER_STREAMS
    return target, address


def last_event_id(vars: Mapping[str, str]) -> str | None:
    """Where a client resumes: its ``Last-Event-ID`` header (an EventSource sends it when
    it reconnects), else ``lastEventId`` or ``last_event_id`` in the query string (a page
    can pass an id it kept on its first connect, which has no header)."""
    header = vars.get("HTTP_LAST_EVENT_ID")
    if header:
        return header
    query = vars.get("QUERY_STRING", "")
    if "ast" not in query:
        return None
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key in ("lastEventId", "last_event_id"):
            return value
    return None


def stream_head(headers: list[tuple[str, str]], mode: str) -> list[tuple[str, str]]:
    """The app's headers as a stream's head (difference 7): hop-by-hop and framing headers
    (and those ``Connection`` names) removed; in ``sse`` mode Content-Type is
    ``text/event-stream`` so browsers accept it."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    out = []
    has_type = False
    for name, value in headers:
        lower = name.lower()
        if lower in FRAMING_HEADERS or lower in named:
            continue
        if lower == "content-type" and mode == "sse":
            if has_type:
                continue
            value, has_type = "text/event-stream", True
        out.append((name, value))
    if mode == "sse" and not has_type:
        out.insert(0, ("Content-Type", "text/event-stream"))
    return out
