"""The front resource: request vars -> the routing engine -> stream, static file or answer.

Every response goes through the response side of the rules (:func:`respond`) just before
its head is written: ``collect-header``/``pull-header``/``del-header`` see its headers,
the response and final chains run (their logging actions always do), and the
``add-header``/``addheader:`` lines are appended. A request closed without a response
(``break:``) runs the final chain alone. Until an app is configured, offloads in the
response-side chains are ignored for the responses the gateway makes itself (docs/rules.md,
"Chains").
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server, static
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from .config import Config
from .config.grammar import reason_phrase
from .pubsub import Hub, RedisServerConnection
from .redis_address import AddressError, RedisAddress, parse_address
from .routing import (
    AuthRequired,
    Break,
    ChainMemo,
    Continue,
    Offload,
    Outcome,
    PendingAuth,
    Redirect,
    RequestState,
    Return,
    SseTarget,
    Static,
    cgi_vars,
    parse_sse_arg,
    respond,
    run_chain,
    static_map_target,
)
from .routing.response import added_headers
from .routing.state import DEFAULT_WORKER_ID, Verifier
from .sse import Mode
from .stream import DEFAULT_MAX_QUEUED, SSEStream

if TYPE_CHECKING:
    from .backends import Backend
    from .front import FrontProtocol

#: When the gateway is full: an EventSource is told to come back after 5 to 15 s (the
#: browsers' own default retry is 3 s; spreading the comebacks avoids a thundering herd).
RETRY_FULL_MS: Final = 5000

#: Longest channel name a stream may ask for. Channels often come from URLs, and each
#: distinct name costs a SUBSCRIBE and a hub entry; Centrifugo caps names at 255 bytes by
#: default, we allow more for names built from several parts.
MAX_CHANNEL_NAME: Final = 1024

#: An action's mode name -> Mode (an Enum call costs microseconds on every new stream).
_MODES: Final = {mode.value: mode for mode in Mode}

#: DESIGN §4.7: the head of a stream offloaded from the request chain.
SSE_HEADERS: Final = (
    (b"Content-Type", b"text/event-stream"),
    (b"Cache-Control", b"no-cache"),
    (b"X-Accel-Buffering", b"no"),
)


#: DESIGN §4.7: headers of the app's head that a stream never carries (hop-by-hop and
#: framing ones: the stream is re-framed, and a Content-Length would end it).
FRAMING_HEADERS: Final = frozenset(
    {
        "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
        "trailer", "content-encoding", "proxy-connection", "te",
    }
)

#: What :meth:`GatewayResource.app_head` tells a backend: pass the body through, or the
#: request became a stream / was answered and the app's body is to be discarded.
Verdict = Literal["pass", "stream", "done"]


def stream_head(headers: list[tuple[str, str]], mode: str) -> list[tuple[str, str]]:
    """The app's headers as a stream's head (DESIGN §4.7): hop-by-hop and framing headers
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


def _text(raw: bytes) -> str:
    # DESIGN §5: any byte survives the trip through the routing engine.
    return raw.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def request_vars(request: Request) -> dict[str, str]:
    """The CGI-style vars uWSGI gives a request (seed-behaviour §3.9), as text."""
    host = request.getHost()
    peer = request.getClientAddress()
    hostname = request.getRequestHostname()
    headers = (
        (name, value)
        for name, values in request.requestHeaders.getAllRawHeaders()
        for value in values
    )
    return cgi_vars(
        request.method,
        request.uri,
        request.clientproto,
        headers,
        remote_addr=str(getattr(peer, "host", "")),
        remote_port=str(getattr(peer, "port", "")),
        server_name=_text(hostname) if hostname else "",
        server_port=str(getattr(host, "port", "")),
    )


def _run_in_thread(work: Callable[[], Any]) -> Deferred[Any]:
    return threads.deferToThread(work)


@dataclass
class Gateway:
    """What the front resource needs: the rules, the hub, and the servers streams may use.

    ``verifier`` checks htpasswd passwords (None: the process-wide store of
    :mod:`sse_offload.auth`); ``run_in_thread`` runs a slow password hash off the reactor.
    """

    config: Config
    hub: Hub
    default_address: RedisAddress
    allowed_servers: set[tuple[object, ...]] = field(default_factory=set)
    max_queued: int = DEFAULT_MAX_QUEUED
    verifier: Verifier | None = None
    run_in_thread: Callable[[Callable[[], Any]], Deferred[Any]] = _run_in_thread
    backend: Backend | None = None
    #: Open streams accepted (0: no limit), in all (the gateway) and per client address.
    max_clients: int = 0
    max_clients_per_ip: int = 0
    max_channel_length: int = MAX_CHANNEL_NAME
    open_streams: int = 0
    streams_by_ip: dict[str, int] = field(default_factory=dict)
    #: A worker of ``--processes N``: the :class:`sse_offload.counts.SharedCounts` through
    #: which ``max_clients`` caps the whole gateway (it may overshoot by N-1: counts.py says
    #: why). None: this process is the gateway, and ``open_streams`` the figure.
    #: ``max_clients_per_ip`` stays per process.
    counts: Any = None
    #: ``${uwsgi[wid]}``: this process's worker number, from 1.
    worker_id: int = DEFAULT_WORKER_ID

    def allow(self, addresses: Iterable[RedisAddress]) -> None:
        self.allowed_servers.update(a.key for a in addresses)

    def total_streams(self) -> int:
        """Open streams of the whole gateway (every worker's, with ``counts``)."""
        return self.open_streams if self.counts is None else int(self.counts.total())

    def has_room(self, ip: str) -> bool:
        """May another stream open, for a client at ``ip``?"""
        if self.max_clients and self.total_streams() >= self.max_clients:
            return False
        return not (
            self.max_clients_per_ip
            and self.streams_by_ip.get(ip, 0) >= self.max_clients_per_ip
        )

    def stream_opened(self, ip: str) -> None:
        """Count a stream (``stream_closed`` uncounts it)."""
        self.open_streams += 1
        self.streams_by_ip[ip] = self.streams_by_ip.get(ip, 0) + 1
        if self.counts is not None:
            self.counts.set(self.open_streams)

    def stream_closed(self, ip: str) -> None:
        self.open_streams -= 1
        if self.counts is not None:
            self.counts.set(self.open_streams)
        left = self.streams_by_ip[ip] - 1
        if left:
            self.streams_by_ip[ip] = left
        else:
            del self.streams_by_ip[ip]

    def response_side(self) -> bool:
        """Does anything in the rules look at, or change, the responses?"""
        c = self.config
        return bool(
            c.response_rules or c.final_rules or c.header_vars or c.add_headers or c.del_headers
        )


class _Release:
    """A stream's ``on_close``: leave its channel and the counts. One slotted object per
    stream, where three nested closures cost ~0.7 KB of each idle stream's memory."""

    __slots__ = ("channel", "gateway", "ip", "server", "stream")

    def __init__(
        self,
        gateway: Gateway,
        server: RedisServerConnection,
        channel: bytes,
        stream: SSEStream,
        ip: str,
    ) -> None:
        self.gateway = gateway
        self.server = server
        self.channel = channel
        self.stream = stream
        self.ip = ip

    def __call__(self) -> None:
        self.server.remove(self.channel, self.stream)
        self.gateway.stream_closed(self.ip)


def _plain(request: Request, status: int, body: bytes) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return body


def _nothing(request: Request, state: RequestState) -> None:
    """The response side already ran."""


def _deliver(request: Request, body: bytes | int) -> None:
    """Finish a request whose render returned NOT_DONE_YET, as server.Request.render would
    have with ``body``."""
    if body == server.NOT_DONE_YET or isinstance(body, int):
        return
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.write(b"" if request.method == b"HEAD" else body)
    request.finish()


#: Why an offload cannot stream (:func:`stream_target`); otherwise it is a bad server
#: address, and the text is its parse error.
NO_CHANNEL: Final = "no channel"
LONG_CHANNEL: Final = "channel name too long"
REFUSED_SERVER: Final = "server not named by the configuration"


def stream_target(gateway: Gateway, outcome: Offload) -> tuple[SseTarget, RedisAddress | str]:
    """The channel and server an offload names: ``(target, address)``. Where the stream
    cannot start, ``address`` is instead the reason: :data:`NO_CHANNEL`,
    :data:`LONG_CHANNEL`, :data:`REFUSED_SERVER`, or a bad server's parse error."""
    target = parse_sse_arg(outcome.arg)
    if target.channel is None:
        return target, NO_CHANNEL
    if len(target.channel) > gateway.max_channel_length:
        return target, LONG_CHANNEL
    if target.server is None:
        return target, gateway.default_address
    try:
        address = parse_address(target.server)
    except AddressError as e:
        return target, str(e)
    if address.key not in gateway.allowed_servers:
        return target, REFUSED_SERVER
    return target, address


class GatewayResource(resource.Resource):
    """Every request goes through here: isLeaf, the rules decide."""

    isLeaf = True
    log = Logger()

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway
        self._memo: ChainMemo | None = None

    def render(self, request: Request) -> bytes | int:
        channel = request.channel
        routed = getattr(channel, "routed", None)
        if routed is not None:
            # The front protocol (front.py) ran the request chain on this request's head
            # already: it is not run twice.
            channel.routed = None
            return self._decide(request, *routed)
        return self._route(request, self.new_state(request_vars(request)), 0)

    def new_state(self, vars: dict[str, str]) -> RequestState:
        state = RequestState(
            vars, verifier=self.gateway.verifier, worker_id=self.gateway.worker_id
        )
        # A password that needs a slow hash is checked in a thread, not here.
        state.slow_auth = False
        return state

    # --- the request chain -----------------------------------------------------------------
    def request_chain(self, state: RequestState) -> Outcome:
        """Run the request chain from its start (remembering outcomes where it may: a
        reload brings new rules, and a new memo)."""
        rules = self.gateway.config.request_rules
        memo = self._memo
        if memo is None or memo.rules is not rules:
            memo = self._memo = ChainMemo(rules)
        return memo.run(state)

    def _route(self, request: Request, state: RequestState, start: int) -> bytes | int:
        if start == 0:
            outcome = self.request_chain(state)
        else:
            outcome = run_chain(self.gateway.config.request_rules, state, start=start)
        return self._decide(request, state, outcome)

    def _decide(self, request: Request, state: RequestState, outcome: Outcome) -> bytes | int:
        self._emit_logs(state)
        if isinstance(outcome, PendingAuth):
            return self._verify_then_resume(request, state, outcome)
        return self._apply(request, state, outcome)

    def _verify_then_resume(
        self, request: Request, state: RequestState, pending: PendingAuth
    ) -> int:
        gone: list[object] = []
        request.notifyFinish().addBoth(gone.append)

        def resume(_: object) -> None:
            if not gone:
                _deliver(request, self._route(request, state, pending.index))

        def failed(failure: Failure) -> None:
            self.log.failure("checking a password for {uri}", failure, uri=request.uri)
            if not gone:
                _deliver(request, _plain(request, 500, b"500 Internal Server Error\n"))

        d = self.gateway.run_in_thread(pending.verify)
        d.addCallback(resume)
        d.addErrback(failed)
        return server.NOT_DONE_YET

    def _apply(self, request: Request, state: RequestState, outcome: Outcome) -> bytes | int:
        # requests by what the request chain decided: offload, break, return, redirect, ...
        self.gateway.hub.stats["requests_" + type(outcome).__name__.lower()] += 1
        if isinstance(outcome, Offload):
            return self._offload(request, state, outcome)
        if isinstance(outcome, Break) and outcome.status is None:
            # DESIGN §4.15: the original closes the connection without a response; the final
            # chain still runs (uWSGI runs it for every request).
            self._final_only(state)
            transport: Any = request.channel.transport if request.channel else None
            if transport is not None:
                transport.loseConnection()
            return server.NOT_DONE_YET
        backend = self.gateway.backend
        if (
            isinstance(outcome, Continue)
            and backend is not None
            and self._static_target(state) is None
        ):
            # The app's head goes through app_head(), which runs the response side; an
            # answer the backend makes itself (502, 504, an app's crash) through the hook.
            self._on_head(request, state)
            backend.serve(request, state, self)
            return server.NOT_DONE_YET
        self._on_head(request, state)
        if isinstance(outcome, Break):
            assert outcome.status is not None
            request.setResponseCode(outcome.status)
            request.setHeader(b"Content-Type", b"text/plain")
            request.setHeader(b"Connection", b"close")
            return b""
        if isinstance(outcome, Return):
            return self._answer(request, outcome.status, outcome.reason)
        if isinstance(outcome, Redirect):
            request.setHeader(b"Location", _bytes(outcome.location))
            return self._answer(request, outcome.status, reason_phrase(outcome.status) or "")
        if isinstance(outcome, Static):
            if outcome.path is None:
                return _plain(request, 404, b"404 Not Found\n")
            result: bytes | int = static.File(outcome.path).render(request)
            return result
        if isinstance(outcome, AuthRequired):
            request.setResponseCode(401, b"Authorization Required")
            request.setHeader(b"WWW-Authenticate", _bytes(f'Basic realm="{outcome.realm}"'))
            request.setHeader(b"Content-Type", b"text/plain")
            return b"Unauthorized"
        assert isinstance(outcome, Continue)
        static_file = self._static_map(request, state)
        if static_file is not None:
            return static_file
        return _plain(request, 404, b"404 Not Found\n")

    def _answer(self, request: Request, status: int, reason: str) -> bytes:
        # U:core/routing.c return: status, text/plain, Content-Length, body = the phrase.
        request.setResponseCode(status, _bytes(reason))
        request.setHeader(b"Content-Type", b"text/plain")
        return _bytes(reason)

    # --- the response side -------------------------------------------------------------------
    def _on_head(self, request: Request, state: RequestState) -> None:
        """Run the response side when the response's head is about to be written."""
        if not self.gateway.response_side() and not (
            state.add_headers or state.del_headers or state.logvars
        ):
            return
        original = request.write

        def write(data: bytes) -> None:
            request.__dict__.pop("write", None)  # once: later writes go straight through
            self._respond(request, state)
            original(data)

        request.write = write  # type: ignore[method-assign]

    def _respond(self, request: Request, state: RequestState) -> None:
        headers = [
            (_text(name), _text(value))
            for name, values in request.responseHeaders.getAllRawHeaders()
            for value in values
        ]
        decision = respond(self.gateway.config, state, request.code, headers)
        if decision.offload is not None:
            self.log.info(
                "{rule}: {action} ignored: {uri} is answered by the gateway itself "
                "(no app is configured)",
                rule=str(decision.offload.rule.pos),
                action=str(decision.offload.rule.action),
                uri=request.uri,
            )
        replaced = Headers()
        for name, value in decision.headers:
            replaced.addRawHeader(_bytes(name), _bytes(value))
        request.responseHeaders = replaced
        self._emit_logs(state, request.code)

    def _final_only(self, state: RequestState) -> None:
        if self.gateway.config.final_rules:
            run_chain(self.gateway.config.final_rules, state)
        self._emit_logs(state, "-")

    def _emit_logs(self, state: RequestState, status: int | str | None = None) -> None:
        """Emit the queued log lines; with ``status`` (the response is done deciding), also
        the request's ``logvar:`` line unless ``donotlog:`` said not to."""
        for level, message in state.take_logs():
            if level == "error":
                self.log.error("{message}", message=message)
            elif level == "warn":
                self.log.warn("{message}", message=message)
            else:
                self.log.info("{message}", message=message)
        if status is not None and state.logvars and not state.donotlog:
            self.log.info(
                "{method} {uri} {status} {logvars}",
                method=state.vars.get("REQUEST_METHOD", ""),
                uri=state.vars.get("REQUEST_URI", ""),
                status=status,
                logvars=" ".join(f"{k}={v}" for k, v in state.logvars.items()),
            )

    # --- static-map ----------------------------------------------------------------------
    def _static_target(self, state: RequestState) -> str | None:
        """The file a static-map serves for this request, if any."""
        # The vars, not the request: setmethod/setpathinfo/rewrite have their say here.
        if state.vars.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return None
        path_info = state.vars.get("PATH_INFO", "")
        for mapping in self.gateway.config.static_maps:
            if path_info.startswith(mapping.mount):
                target = static_map_target(mapping, path_info[len(mapping.mount) :])
                if target is not None:
                    return target
        return None

    def _static_map(self, request: Request, state: RequestState) -> bytes | int | None:
        target = self._static_target(state)
        if target is None:
            return None
        result: bytes | int = static.File(target).render(request)
        return result

    # --- the app's response ----------------------------------------------------------------
    def app_head(
        self,
        request: Request,
        state: RequestState,
        status: int,
        reason: bytes | None,
        headers: list[tuple[str, str]] | None,
    ) -> Verdict:
        """Run the response side for a backend's head; called in the reactor thread.

        ``headers`` is None when the app sent no head (a WSGI app that returned without
        calling start_response). Returns "pass" when the head is set on ``request`` and the
        backend is to stream the body; "stream" when the request became an SSE stream or was
        answered with an error; "done" when the request is finished. With "stream" and
        "done" the backend discards the app's body.
        """
        if request.finished or request._disconnected:
            return "done"
        request.__dict__.pop("write", None)  # the _on_head hook: the response side runs here
        decision = respond(self.gateway.config, state, status or 200, headers or [])
        self._emit_logs(state, status)
        offload = decision.offload
        never_stream = request.method == b"HEAD" or status in (204, 304)
        if offload is not None and not (never_stream and headers is not None):
            if decision.replace_headers or headers is None:
                # DESIGN §4.7: the response chain (or an app that sent no head): the defaults.
                head = [(_text(n), _text(v)) for n, v in SSE_HEADERS]
                head += added_headers(self.gateway.config, state)
                code, phrase = 200, None
            else:
                head = stream_head(decision.headers, offload.mode)
                code, phrase = status, reason
            _deliver(request, self._offload(request, state, offload, (code, phrase, head)))
            return "stream"
        if headers is None:
            self.log.error(
                "the app returned without a response head (no start_response) for {uri}",
                uri=request.uri,
            )
            _deliver(request, _plain(request, 500, b"500 Internal Server Error\n"))
            return "done"
        request.setResponseCode(status, reason)
        replaced = Headers()
        for name, value in decision.headers:
            replaced.addRawHeader(_bytes(name), _bytes(value))
        request.responseHeaders = replaced
        if decision.discard_body:
            # The response chain said break: uWSGI sends the head and ignores the body.
            replaced.removeHeader(b"Content-Length")
            replaced.removeHeader(b"Transfer-Encoding")
            request.setHeader(b"Content-Length", b"0")
            request.write(b"")
            request.finish()
            return "done"
        return "pass"

    # --- offload -------------------------------------------------------------------------
    def _offload(
        self,
        request: Request,
        state: RequestState,
        outcome: Offload,
        head: tuple[int, bytes | None, list[tuple[str, str]]] | None = None,
    ) -> bytes | int:
        """Start the stream ``outcome`` names. ``head`` (status, phrase, headers): the
        response side already ran (a backend's head) and this is the head to send; None:
        the request chain offloaded, the defaults go through the response side."""
        gateway = self.gateway
        on_head = self._on_head if head is None else _nothing
        target, address = stream_target(gateway, outcome)
        if isinstance(address, str):
            status, body = self._refuse(request, outcome, target, address)
            on_head(request, state)
            return _plain(request, status, body)
        ip = str(getattr(request.getClientAddress(), "host", ""))
        if not gateway.has_room(ip):
            return self._full(request, state, on_head)
        state.streaming = True
        if head is None:
            for name, value in SSE_HEADERS:
                request.setHeader(name, value)
            request.setResponseCode(200)
        else:
            code, phrase, header_list = head
            replaced = Headers()
            for name, value in header_list:
                replaced.addRawHeader(_bytes(name), _bytes(value))
            request.responseHeaders = replaced
            request.setResponseCode(code, phrase)
        if request.method == b"HEAD":
            on_head(request, state)
            return b""  # DESIGN §4.7: HEAD gets the head and ends
        stream = SSEStream(
            request, _MODES[outcome.mode], gateway.max_queued,
            gap_event=target.gap == "event", watch=gateway.hub.watch,
        )
        # After the stream took request.write for its own writes: the hook runs once, when
        # start() writes the head.
        on_head(request, state)
        stream.channel = _bytes(target.channel or "")
        stream.start()
        self._listen(stream, address, ip)
        return server.NOT_DONE_YET

    def _listen(self, stream: SSEStream, address: RedisAddress, ip: str) -> None:
        """A started stream joins its channel and is counted."""
        gateway = self.gateway
        channel = stream.channel
        gateway.hub.stats["requests_stream"] += 1
        if stream.closed:
            return
        redis_server = gateway.hub.server(address)
        redis_server.add(channel, stream)  # closes it at once after a too-long outage
        if not stream.closed:
            gateway.stream_opened(ip)
            stream.on_close = _Release(gateway, redis_server, channel, stream, ip)

    def start_fast(self, owner: FrontProtocol, state: RequestState, outcome: Outcome) -> bool:
        """Start the stream of a request the front protocol read itself (front.py), if the
        request chain offloaded it and nothing else is to happen to its response; False
        leaves the request to twisted.web and :meth:`render` (which then answers it). The
        chain's log lines are out either way."""
        gateway = self.gateway
        self._emit_logs(state)
        if not isinstance(outcome, Offload) or gateway.response_side() or (
            state.add_headers or state.del_headers or state.logvars
        ):
            return False
        target, address = stream_target(gateway, outcome)
        ip = owner.ip
        if isinstance(address, str) or not gateway.has_room(ip):
            return False
        gateway.hub.stats["requests_offload"] += 1
        state.streaming = True
        stream = SSEStream(
            owner, _MODES[outcome.mode], gateway.max_queued,  # type: ignore[arg-type]
            gap_event=target.gap == "event", watch=gateway.hub.watch,
        )
        stream.channel = _bytes(target.channel or "")
        owner.start_stream(stream)
        self._listen(stream, address, ip)
        return True

    def _refuse(
        self, request: Request, outcome: Offload, target: SseTarget, why: str
    ) -> tuple[int, bytes]:
        """Log and count ``why`` (:func:`stream_target`) ``outcome`` cannot stream; the
        status and body to answer."""
        gateway, rule = self.gateway, outcome.rule
        if why == NO_CHANNEL:
            self.log.error(
                "{rule}: {mode} without a pubsub channel (no subscribe=) for {uri}",
                rule=str(rule.pos), mode=outcome.mode, uri=request.uri,
            )
            return 500, b"500 Internal Server Error\n"
        if why == LONG_CHANNEL:
            self.log.error(
                "{rule}: channel name of {length} characters for {uri} is over the "
                "{limit}-character limit",
                rule=str(rule.pos), length=len(target.channel or ""), uri=request.uri[:200],
                limit=gateway.max_channel_length,
            )
            gateway.hub.stats["requests_bad_channel"] += 1
            return 400, b"400 Bad Request: channel name too long\n"
        if why == REFUSED_SERVER:
            gateway.hub.stats["requests_refused_server"] += 1
            # DESIGN §4.9: a server named by an expanded (client or app supplied) value must
            # be one the configuration names; the original let a query string pick any server.
            self.log.error(
                "{rule}: refused server {server!r} for {uri}: not a server the configuration "
                "names",
                rule=str(rule.pos), server=target.server, uri=request.uri,
            )
            return 403, b"403 Forbidden\n"
        self.log.error("{rule}: {error}", rule=str(rule.pos), error=why)  # a bad address
        return 500, b"500 Internal Server Error\n"

    def _full(
        self, request: Request, state: RequestState, on_head: Callable[..., None]
    ) -> bytes:
        """No room for another stream. An EventSource never reconnects after a non-200, so it
        gets 200, a ``retry:`` hint of its own (spreading the comebacks) and the end; any
        other client 503 with Retry-After."""
        self.gateway.hub.stats["requests_over_capacity"] += 1
        self.log.warn(
            "no room for another stream ({open} open): {uri} from {peer}",
            open=self.gateway.total_streams(), uri=request.uri[:200],
            peer=getattr(request.getClientAddress(), "host", "?"),
        )
        on_head(request, state)
        accept = request.getHeader(b"accept") or b""
        if b"text/event-stream" in accept:
            request.setResponseCode(200)
            for name, value in SSE_HEADERS:
                request.setHeader(name, value)
            return b"retry: %d\n\n" % random.randint(RETRY_FULL_MS, 3 * RETRY_FULL_MS)
        request.setHeader(b"Retry-After", b"%d" % (RETRY_FULL_MS // 1000))
        return _plain(request, 503, b"503 Service Unavailable: too many streams\n")
