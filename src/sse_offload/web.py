"""The front resource: request vars -> the routing engine -> stream, static file or answer.

The rules' outcome for a request is applied here; everything it needs lives in modules of
one concern each:

- gateway.py: the shared state and limits (``Gateway``), and whether an offload can stream;
- answers.py: what the gateway answers for an outcome, static-map lookups, a stream's head
  (pure functions, shared with ``sse-offload explain``);
- offload.py: starting a stream, one path for the front protocol and for twisted.web;
- response_side.py: the response side of the rules, and an app's head;
- replies.py: the gateway's twisted.web Request and writing answers to it;
- http_vars.py: the request vars.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server, static

from .answers import NOT_FOUND, gateway_answer, last_event_id, static_target
from .gateway import Gateway, StreamPlan
from .http_vars import request_vars
from .offload import begin_stream, stream_request
from .replies import GatewayRequest, deliver, plain, reply
from .response_side import ResponseSide
from .routing import (
    Break,
    ChainMemo,
    Continue,
    Offload,
    Outcome,
    PendingAuth,
    RequestState,
    Static,
    run_chain,
)

if TYPE_CHECKING:
    from .stream import StreamOwner


class GatewayResource(resource.Resource):
    """Every request goes through here: isLeaf, the rules decide."""

    isLeaf = True
    log = Logger()

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway
        self.response = ResponseSide(gateway)
        self._memo: ChainMemo | None = None

    def render(self, request: server.Request) -> bytes | int:
        routed = request.routed if isinstance(request, GatewayRequest) else None
        if routed is not None:
            # The front protocol (front.py) ran the request chain on this request's head
            # already: it is not run twice.
            return self._decide(request, routed.state, routed.outcome)
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

    def _route(self, request: server.Request, state: RequestState, start: int) -> bytes | int:
        if start == 0:
            outcome = self.request_chain(state)
        else:
            outcome = run_chain(self.gateway.config.request_rules, state, start=start)
        return self._decide(request, state, outcome)

    def _decide(
        self, request: server.Request, state: RequestState, outcome: Outcome
    ) -> bytes | int:
        self.response.emit_logs(state)
        if isinstance(outcome, PendingAuth):
            return self._verify_then_resume(request, state, outcome)
        return self._apply(request, state, outcome)

    def _verify_then_resume(
        self, request: server.Request, state: RequestState, pending: PendingAuth
    ) -> int:
        gone: list[object] = []
        request.notifyFinish().addBoth(gone.append)

        def resume(_: object) -> None:
            if not gone:
                deliver(request, self._route(request, state, pending.index))

        def failed(failure: Failure) -> None:
            self.log.failure("checking a password for {uri}", failure, uri=request.uri)
            if not gone:
                deliver(request, plain(request, 500, b"500 Internal Server Error\n"))

        d = self.gateway.run_in_thread(pending.verify)
        d.addCallback(resume)
        d.addErrback(failed)
        return server.NOT_DONE_YET

    def _apply(self, request: server.Request, state: RequestState, outcome: Outcome) -> bytes | int:
        # requests by what the request chain decided: offload, break, return, redirect, ...
        self.gateway.stats["requests_" + type(outcome).__name__.lower()] += 1
        if isinstance(outcome, Offload):
            return stream_request(
                self.gateway, request, state, outcome, None,
                lambda: self.response.arm(request, state),
            )
        if isinstance(outcome, Break) and outcome.status is None:
            # The original closes the connection without a response (docs/architecture.md,
            # difference 15); the final chain still runs (uWSGI runs it for every request).
            self.response.final_only(state)
            transport: Any = request.channel.transport if request.channel else None
            if transport is not None:
                transport.loseConnection()
            return server.NOT_DONE_YET
        served = static_target(self.gateway.config, state.vars) if isinstance(
            outcome, Continue
        ) else None
        file = served[1] if served is not None else None
        backend = self.gateway.backend
        if isinstance(outcome, Continue) and backend is not None and file is None:
            # The app's head goes through app_head(), which runs the response side; an
            # answer the backend makes itself (502, 504, an app's crash) through the hook.
            self.response.arm(request, state)
            backend.serve(request, state, self.response)
            return server.NOT_DONE_YET
        self.response.arm(request, state)
        answer = gateway_answer(outcome)
        if answer is not None:
            return reply(request, answer)
        if isinstance(outcome, Static):
            assert outcome.path is not None  # a missing file is answered above
            file = outcome.path
        if file is None:
            return reply(request, NOT_FOUND)
        result: bytes | int = static.File(file).render(request)
        return result

    # --- the fast path ---------------------------------------------------------------------
    def start_fast(
        self, owner: StreamOwner, ip: str, state: RequestState, outcome: Outcome
    ) -> bool:
        """Start the stream of a request the front protocol read itself (front.py), if the
        request chain offloaded it and nothing else is to happen to its response; False
        leaves the request to twisted.web and :meth:`render` (which then answers it). The
        chain's log lines are out either way."""
        gateway = self.gateway
        self.response.emit_logs(state)
        if not isinstance(outcome, Offload) or self.response.needed(state):
            return False
        plan = gateway.plan(outcome, ip, last_event_id(state.vars), state.vars)
        if not isinstance(plan, StreamPlan):
            return False  # twisted.web answers why
        gateway.stats["requests_offload"] += 1
        state.streaming = True
        begin_stream(gateway, owner, ip, outcome.mode, plan)
        return True
