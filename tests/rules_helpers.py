"""Helpers for the rules-language tests: load a rules text, run a chain, summarise outcomes."""

from __future__ import annotations

from sse_offload.config import Config, parse_rules_text
from sse_offload.routing import (
    AuthRequired,
    Break,
    Continue,
    Offload,
    Outcome,
    Redirect,
    RequestState,
    Return,
    Static,
    run_chain,
)


def load(body: str, name: str = "t.ini") -> Config:
    """A Config from ``body`` (the ``[uwsgi]`` header is added)."""
    return parse_rules_text("[uwsgi]\n" + body, name, {})


def request_state(path: str = "/", **vars: str) -> RequestState:
    """A state with the usual CGI vars of ``GET path`` (``?`` splits off the query)."""
    path_info, _, query = path.partition("?")
    base = {
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": path,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "REMOTE_ADDR": "127.0.0.1",
    }
    return RequestState({**base, **vars})


def run(body: str, path: str = "/", **vars: str) -> tuple[Outcome, RequestState]:
    """Run the request chain of ``body`` for ``GET path``; the outcome and the state."""
    state = request_state(path, **vars)
    return run_chain(load(body).request_rules, state), state


def summary(outcome: Outcome) -> tuple[object, ...]:
    """The outcome without its rule, plus the line of the rule that produced it."""
    line = outcome.rule.pos.line if outcome.rule is not None else None
    if isinstance(outcome, Offload):
        return ("offload", outcome.mode, outcome.arg, line)
    if isinstance(outcome, Break):
        return ("break", outcome.status, line)
    if isinstance(outcome, Return):
        return ("return", outcome.status, line)
    if isinstance(outcome, Redirect):
        return ("redirect", outcome.status, outcome.location, line)
    if isinstance(outcome, Static):
        return ("static", outcome.path, line)
    if isinstance(outcome, AuthRequired):
        return ("401", outcome.realm, line)
    if isinstance(outcome, Continue):
        return ("continue", line)
    return ("pending", line)


# The seed README's configs, verbatim.
README_INI = """\
[uwsgi]
; eventually use absolue path for the plugin if it is not in the current directory
plugin = sse_offload
; bind on http port 9090
http-socket = :9090
; run clock.pl as a mule
mule = clock.pl
; map requests to /clock to the html file
static-map = /clock=clock.html
; route requests to ^/whattimeisit to the sse engine subscribed to the 'clock' redis channel
route = ^/whattimeisit sse:clock
; enable 1 offload thread
offload-threads = 1
"""

EXAMPLES_CLOCK_INI = """\
[uwsgi]
plugin = sse_offload
http-socket = :9090
mule = examples/clock.pl
static-map = /clock=examples/clock.html
route = ^/whattimeisit sse:clock
;wsgi-file = examples/clock.py
;final-route-if-not = empty:${X-SSE-OFFLOAD} sse:${X-SSE-OFFLOAD}
offload-threads = 1
"""

APP_GOVERNED_INI = """\
[uwsgi]
plugin = python
; eventually use absolue path for the plugin if it is not in the current directory
plugin = sse_offload
; bind on http port 9090
http-socket = :9090
; run clock.pl as a mule
mule = clock.pl
; map requests to /clock to the html file
static-map = /clock=clock.html

; load the wsgi app
wsgi-file = clock.py

; tell the routing engine to check for X-SSE-OFFLOAD variable
final-route-if-not = empty:${X-SSE-OFFLOAD} sse:${X-SSE-OFFLOAD}
; enable 1 offload thread
offload-threads = 1
"""
