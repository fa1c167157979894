"""Routing: run rule chains over a request's state and interpret the sse action argument."""

from sse_offload.config.values import SseTarget, parse_kvlist, parse_sse_arg
from sse_offload.routing.cgi import cgi_vars, normalize_path_info
from sse_offload.routing.engine import HANDLERS, run_chain
from sse_offload.routing.expand import ROUTE_VARS, expand
from sse_offload.routing.memo import ChainMemo
from sse_offload.routing.outcomes import (
    AuthRequired,
    Break,
    Continue,
    Offload,
    Outcome,
    PendingAuth,
    Redirect,
    Return,
    Static,
    describe,
)
from sse_offload.routing.response import ResponseDecision, respond, take_response_header
from sse_offload.routing.state import RequestState, TraceEntry
from sse_offload.routing.static import static_map_target

__all__ = [
    "HANDLERS",
    "ROUTE_VARS",
    "AuthRequired",
    "Break",
    "ChainMemo",
    "Continue",
    "Offload",
    "Outcome",
    "PendingAuth",
    "Redirect",
    "RequestState",
    "ResponseDecision",
    "Return",
    "SseTarget",
    "Static",
    "TraceEntry",
    "cgi_vars",
    "describe",
    "expand",
    "normalize_path_info",
    "parse_kvlist",
    "parse_sse_arg",
    "respond",
    "run_chain",
    "static_map_target",
    "take_response_header",
]
