"""Starting a stream: one path for the front protocol's fast path and for twisted.web.

Both paths first ask :meth:`Gateway.plan <sse_offload.gateway.Gateway.plan>` whether the
offload can stream, then call :func:`begin_stream` with a
:class:`~sse_offload.stream.StreamOwner`: the front protocol itself (front.py), or a
:class:`RequestOwner` around twisted.web's Request. What differs between them is only how
the head is sent and how the end is heard, and that is the owner's.

A stream that cannot start is answered here (:func:`refuse`): a 500, 400, 401 or 403 with
a log line, or, when the gateway is full, ``retry:`` for an EventSource and 503 for the rest.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

from twisted.logger import Logger
from twisted.web import http, server

from .answers import (
    BAD_TARGET,
    LONG_CHANNEL,
    NO_CHANNEL,
    REFUSED_SERVER,
    SSE_HEADERS,
    last_event_id,
)
from .cors_web import add_cors_headers, preflight
from .gateway import FULL, Gateway, StreamPlan
from .redis_protocol import CHANNEL, PATTERN, SHARDED
from .replies import plain, set_head, to_bytes
from .routing import Offload, RequestState, SseTarget
from .sse import Mode, retry_field
from .stream import SSEStream, StreamOwner, peer_text
from .stream_auth import FORBIDDEN, UNAUTHORIZED, expire_at, refuse_auth

#: When the gateway is full: an EventSource is told to come back after 5 to 15 s (the
#: browsers' own default retry is 3 s; spreading the comebacks avoids a thundering herd).
RETRY_FULL_MS: Final = 5000

#: An action's mode name -> Mode (an Enum call costs microseconds on every new stream).
_MODES: Final = {mode.value: mode for mode in Mode}

_log = Logger(namespace="sse_offload.web")


class _Release:
    """A stream's ``on_close``: leave its channel and the counts. One slotted object per
    stream, where three nested closures cost ~0.7 KB of each idle stream's memory."""

    __slots__ = ("address", "channel", "gateway", "ip", "kind", "stream")

    def __init__(
        self, gateway: Gateway, plan: StreamPlan, stream: SSEStream, ip: str, kind: str
    ) -> None:
        self.gateway = gateway
        self.address = plan.address
        self.channel = plan.channel
        self.stream = stream
        self.ip = ip
        self.kind = kind

    def __call__(self) -> None:
        self.gateway.streams.hub.server(self.address).remove(self.channel, self.stream, self.kind)
        self.gateway.stream_closed(self.ip)


class _ReleaseAll:
    """``on_close`` of a stream of several channels, patterns or Redis Streams."""

    __slots__ = ("gateway", "ip", "leave")

    def __init__(self, gateway: Gateway, ip: str, leave: list[Callable[[], None]]) -> None:
        self.gateway, self.ip, self.leave = gateway, ip, leave

    def __call__(self) -> None:
        for leave in self.leave:
            leave()
        self.gateway.stream_closed(self.ip)


def begin_stream(
    gateway: Gateway, owner: StreamOwner, ip: str, mode: str, plan: StreamPlan
) -> SSEStream:
    """Start the stream ``plan`` allows: the owner sends its head, the stream joins its
    channels (or patterns, or Redis Streams) and is counted against the limits until it
    ends."""
    target = plan.target
    stream = SSEStream(
        owner, _MODES[mode], gateway.max_queued,
        gap_event=target.gap == "event", watch=gateway.streams.watch,
    )
    stream.channel = plan.channel
    stream.envelope = target.envelope
    gateway.stats["requests_stream"] += 1
    stream.start()
    if stream.closed:
        return stream
    kind = _single_source(target)
    if kind is not None:  # the common case: one channel, pattern or sharded channel
        if gateway.streams.join(plan.address, plan.channel, stream, kind):
            gateway.stream_opened(ip)
            stream.on_close = _Release(gateway, plan, stream, ip, kind)
            _expire_with_token(gateway, plan, stream)
        return stream
    leave = _join_all(gateway, plan, stream)
    if leave is not None:
        gateway.stream_opened(ip)
        stream.on_close = _ReleaseAll(gateway, ip, leave)
        _expire_with_token(gateway, plan, stream)
    return stream


def _expire_with_token(gateway: Gateway, plan: StreamPlan, stream: SSEStream) -> None:
    """An ``auth=jwt`` stream whose token has ``exp`` ends then (after its release is set,
    which the timer's cancel wraps)."""
    if plan.expires is not None:
        expire_at(gateway.streams.clock, stream, plan.expires)


def _join_all(
    gateway: Gateway, plan: StreamPlan, stream: SSEStream
) -> list[Callable[[], None]] | None:
    """Join every source of ``plan``; the functions that leave them, or None (closed)."""
    streams, target, address = gateway.streams, plan.target, plan.address
    if target.streams:
        stream.gap = None  # a Redis Stream reads on after an outage: nothing is missed
        keys = [_encode(k) for k in target.streams]
        cursor = streams.join_streams(address, keys, stream, target, plan.last_event_id)
        return [cursor.release]
    server = streams.hub.server(address)
    leave: list[Callable[[], None]] = []
    for kind, names in ((CHANNEL, target.channels), (PATTERN, target.patterns),
                        (SHARDED, target.sharded)):
        for name in names:
            channel = _encode(name)
            if not streams.join(address, channel, stream, kind):  # closes the stream
                for undo in leave:
                    undo()
                return None
            leave.append(lambda c=channel, k=kind: server.remove(c, stream, k))  # type: ignore[misc]
    return leave


def _single_source(target: SseTarget) -> str | None:
    """The kind of the one channel, pattern or sharded channel ``target`` listens to;
    None when it listens to several, or to Redis Streams."""
    if target.streams:
        return None
    counts = (len(target.channels), len(target.patterns), len(target.sharded))
    if sum(counts) != 1:
        return None
    return CHANNEL if counts[0] else PATTERN if counts[1] else SHARDED


def _encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class RequestOwner:
    """twisted.web's Request as a stream's owner (HTTP/1.0, 1.1 and 2, TLS or not)."""

    __slots__ = ("request",)

    def __init__(self, request: server.Request) -> None:
        self.request = request

    def open(self, stream: SSEStream) -> None:
        request = self.request
        request.write(b"")  # an empty write sends the head, and nothing else
        channel = request.channel
        if isinstance(channel, http.HTTPChannel):
            stream.attach(channel.transport, bool(request.chunked))
        else:
            stream.attach_writer(request.write)  # HTTP/2: DATA frames are the request's
        request.registerProducer(stream, True)
        request.notifyFinish().addBoth(lambda _: stream.finished())

    def finish(self) -> None:
        self.request.unregisterProducer()
        self.request.finish()

    def abort(self) -> None:
        channel = self.request.channel
        transport = channel.transport if channel is not None else None
        if transport is not None:
            getattr(transport, "abortConnection", transport.loseConnection)()

    def peer(self) -> str:
        return peer_text(self.request.getClientAddress())


def set_sse_head(request: server.Request) -> None:
    """The head of a stream offloaded from the request chain."""
    request.setResponseCode(200)
    for name, value in SSE_HEADERS:
        request.setHeader(to_bytes(name), to_bytes(value))


def refuse(
    gateway: Gateway, request: server.Request, outcome: Offload, target: SseTarget, why: str
) -> bytes:
    """Log and count ``why`` (:meth:`Gateway.plan`) ``outcome`` cannot stream; set the
    answer's head on ``request`` and return its body."""
    rule, stats = outcome.rule, gateway.stats
    if why == FULL:
        return _full(gateway, request)
    if why.startswith((UNAUTHORIZED, FORBIDDEN)):
        stats["requests_refused_token"] += 1
        return refuse_auth(request, str(rule.pos), why)
    if why == NO_CHANNEL:
        _log.error(
            "{rule}: {mode} without a pubsub channel (no subscribe=) for {uri}",
            rule=str(rule.pos), mode=outcome.mode, uri=request.uri,
        )
        return plain(request, 500, b"500 Internal Server Error\n")
    if why == LONG_CHANNEL:
        _log.error(
            "{rule}: channel name of {length} characters for {uri} is over the "
            "{limit}-character limit",
            rule=str(rule.pos), length=len(target.channel or ""), uri=request.uri[:200],
            limit=gateway.max_channel_length,
        )
        stats["requests_bad_channel"] += 1
        return plain(request, 400, b"400 Bad Request: channel name too long\n")
    if why.startswith(BAD_TARGET):
        stats["requests_bad_channel"] += 1
        _log.error("{rule}: {why} for {uri}", rule=str(rule.pos), why=why, uri=request.uri[:200])
        return plain(request, 400, b"400 Bad Request\n")
    if why == REFUSED_SERVER:
        stats["requests_refused_server"] += 1
        _log.error(
            "{rule}: refused server {server!r} for {uri}: not a server the configuration "
            "names",
            rule=str(rule.pos), server=target.server, uri=request.uri,
        )
        return plain(request, 403, b"403 Forbidden\n")
    _log.error("{rule}: {error}", rule=str(rule.pos), error=why)  # a bad address
    return plain(request, 500, b"500 Internal Server Error\n")


def _full(gateway: Gateway, request: server.Request) -> bytes:
    """No room for another stream. An EventSource never reconnects after a non-200, so it
    gets 200, a ``retry:`` hint of its own (spreading the comebacks) and the end; any other
    client 503 with Retry-After."""
    gateway.stats["requests_over_capacity"] += 1
    _log.warn(
        "no room for another stream ({open} open): {uri} from {peer}",
        open=gateway.total_streams(), uri=request.uri[:200],
        peer=getattr(request.getClientAddress(), "host", "?"),
    )
    accept = request.getHeader(b"accept") or b""
    if b"text/event-stream" in accept:
        set_sse_head(request)
        return retry_field(random.randint(RETRY_FULL_MS, 3 * RETRY_FULL_MS))
    request.setHeader(b"Retry-After", b"%d" % (RETRY_FULL_MS // 1000))
    return plain(request, 503, b"503 Service Unavailable: too many streams\n")


def stream_request(
    gateway: Gateway,
    request: server.Request,
    state: RequestState,
    outcome: Offload,
    head: tuple[int, bytes | None, list[tuple[str, str]]] | None,
    on_head: Callable[[], None],
) -> bytes | int:
    """Start the stream ``outcome`` names on a twisted.web request, or answer why not.

    ``head`` (status, phrase, headers): the response side already ran (an app's head) and
    this is the head to send; None: the request chain offloaded, the defaults go out.
    ``on_head`` arms the response side for the head about to be written.
    """
    cors, origin = gateway.cors, state.vars.get("HTTP_ORIGIN")
    if cors is not None and request.method == b"OPTIONS":
        on_head()  # a preflight: answered before any token is asked for (it carries none)
        return preflight(request, cors, origin)
    ip = str(getattr(request.getClientAddress(), "host", ""))
    plan = gateway.plan(outcome, ip, last_event_id(state.vars), state.vars)
    if not isinstance(plan, StreamPlan):
        target, why = plan
        on_head()
        if cors is not None:  # so a page can tell a 401 from a network error
            add_cors_headers(request, cors.headers(origin))
        return refuse(gateway, request, outcome, target, why)
    state.streaming = True
    if head is None:
        set_sse_head(request)
    else:
        set_head(request, *head)
    on_head()
    if cors is not None:
        add_cors_headers(request, cors.headers(origin))
    if request.method == b"HEAD":
        return b""  # HEAD gets the head and ends (docs/architecture.md, difference 7)
    begin_stream(gateway, RequestOwner(request), ip, outcome.mode, plan)
    return server.NOT_DONE_YET
