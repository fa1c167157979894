"""The response side of the rules, for responses twisted.web writes.

Every response goes through the response side just before its head is written:
``collect-header``/``pull-header``/``del-header`` see its headers, the response and final
chains run (their logging actions always do, as uWSGI runs the final chain for every
request), and the ``add-header``/``addheader:`` lines are appended. A request closed without
a response (``break:``) runs the final chain alone. Until an app is configured, offloads in
the response-side chains are ignored for the responses the gateway makes itself
(docs/rules.md, "Chains").

An app's head (a backend's) goes through :meth:`ResponseSide.app_head`, which may turn the
response into a stream: from the response chain with the default SSE head, from the final
chain keeping the app's status and headers (docs/architecture.md, difference 7).
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web import server

from .answers import SSE_HEADERS, stream_head
from .backends import Verdict
from .gateway import Gateway
from .offload import stream_request
from .replies import GatewayRequest, deliver, plain, replace_headers, set_head, to_text
from .routing import RequestState, respond, run_chain
from .routing.response import added_headers

_log = Logger(namespace="sse_offload.web")


class ResponseSide:
    """The response side of one gateway's rules (module docstring)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def needed(self, state: RequestState) -> bool:
        """Is there anything to do with this request's response head?"""
        return self.gateway.response_side() or bool(
            state.add_headers or state.del_headers or state.logvars
        )

    def arm(self, request: server.Request, state: RequestState) -> None:
        """Run the response side when the response's head is about to be written."""
        if not self.needed(state):
            return
        assert isinstance(request, GatewayRequest), "the gateway's site makes GatewayRequests"
        request.before_head = lambda: self._respond(request, state)

    def disarm(self, request: server.Request) -> None:
        if isinstance(request, GatewayRequest):
            request.before_head = None

    def _respond(self, request: server.Request, state: RequestState) -> None:
        headers = [
            (to_text(name), to_text(value))
            for name, values in request.responseHeaders.getAllRawHeaders()
            for value in values
        ]
        decision = respond(self.gateway.config, state, request.code, headers)
        if decision.offload is not None:
            _log.info(
                "{rule}: {action} ignored: {uri} is answered by the gateway itself "
                "(no app is configured)",
                rule=str(decision.offload.rule.pos),
                action=str(decision.offload.rule.action),
                uri=request.uri,
            )
        replace_headers(request, decision.headers)
        self.emit_logs(state, request.code)

    def final_only(self, state: RequestState) -> None:
        """No response at all (``break:``): the final chain still runs, as uWSGI's does."""
        if self.gateway.config.final_rules:
            run_chain(self.gateway.config.final_rules, state)
        self.emit_logs(state, "-")

    def emit_logs(self, state: RequestState, status: int | str | None = None) -> None:
        """Emit the queued log lines; with ``status`` (the response is done deciding), also
        the request's ``logvar:`` line unless ``donotlog:`` said not to."""
        for level, message in state.take_logs():
            if level == "error":
                _log.error("{message}", message=message)
            elif level == "warn":
                _log.warn("{message}", message=message)
            else:
                _log.info("{message}", message=message)
        if status is not None and state.logvars and not state.donotlog:
            _log.info(
                "{method} {uri} {status} {logvars}",
                method=state.vars.get("REQUEST_METHOD", ""),
                uri=state.vars.get("REQUEST_URI", ""),
                status=status,
                logvars=" ".join(f"{k}={v}" for k, v in state.logvars.items()),
            )

    # --- the app's response ----------------------------------------------------------------
    def app_head(
        self,
        request: server.Request,
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
        self.disarm(request)  # the response side runs here, not again at the head's write
        gateway = self.gateway
        decision = respond(gateway.config, state, status or 200, headers or [])
        self.emit_logs(state, status)
        offload = decision.offload
        never_stream = request.method == b"HEAD" or status in (204, 304)
        if offload is not None and not (never_stream and headers is not None):
            if decision.replace_headers or headers is None:
                # The response chain (or an app that sent no head): the defaults.
                head = list(SSE_HEADERS) + added_headers(gateway.config, state)
                code, phrase = 200, None
            else:
                head = stream_head(decision.headers, offload.mode)
                code, phrase = status, reason
            body = stream_request(
                gateway, request, state, offload, (code, phrase, head), _nothing
            )
            deliver(request, body)
            return "stream"
        if headers is None:
            _log.error(
                "the app returned without a response head (no start_response) for {uri}",
                uri=request.uri,
            )
            deliver(request, plain(request, 500, b"500 Internal Server Error\n"))
            return "done"
        set_head(request, status, reason, decision.headers)
        if decision.discard_body:
            # The response chain said break: uWSGI sends the head and ignores the body.
            request.responseHeaders.removeHeader(b"Content-Length")
            request.responseHeaders.removeHeader(b"Transfer-Encoding")
            request.setHeader(b"Content-Length", b"0")
            request.write(b"")
            request.finish()
            return "done"
        return "pass"


def _nothing() -> None:
    """The response side already ran."""
