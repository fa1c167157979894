"""Routing: run rule chains over request vars and interpret the sse action argument."""

from sse_offload.routing.cgi import normalize_path_info
from sse_offload.routing.engine import Break, Continue, Offload, Outcome, run_chain
from sse_offload.routing.expand import expand
from sse_offload.routing.kvlist import SseTarget, parse_kvlist, parse_sse_arg

__all__ = [
    "Break",
    "Continue",
    "Offload",
    "Outcome",
    "SseTarget",
    "expand",
    "normalize_path_info",
    "parse_kvlist",
    "parse_sse_arg",
    "run_chain",
]
