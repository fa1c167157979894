"""The response side, pure: response headers into vars, the response and final chains
."""

from __future__ import annotations

import pytest

from rules_helpers import load, request_state, summary
from sse_offload.routing import respond, take_response_header

README_COLLECT = """\
collect-header = Content-Type RESPONSE_TYPE
collect-header = X-SSE-Channel X_SSE_CHANNEL
final-route-if = equal:${RESPONSE_TYPE};event/stream sse:${X_SSE_CHANNEL}
"""
README_PULL = """\
collect-header = Content-Type RESPONSE_TYPE
pull-header = X-SSE-Channel X_SSE_CHANNEL
final-route-if = equal:${RESPONSE_TYPE};event/stream sse:${X_SSE_CHANNEL}
"""
APP_HEADERS = [("Content-Type", "event/stream"), ("Cache-Control", "no-cache"),
               ("X-SSE-Channel", "foobar")]


def test_readme_collect_header_offloads_and_sends_the_header() -> None:
    state = request_state("/sse")
    decision = respond(load(README_COLLECT), state, 200, APP_HEADERS)
    assert decision.offload is not None and decision.offload.arg == "foobar"
    assert not decision.replace_headers  # final chain: the app's head is kept
    assert decision.headers == APP_HEADERS
    assert state.vars["RESPONSE_TYPE"] == "event/stream"
    assert state.vars["X_SSE_CHANNEL"] == "foobar"


def test_readme_pull_header_offloads_and_hides_the_header() -> None:
    state = request_state("/sse")
    decision = respond(load(README_PULL), state, 200, APP_HEADERS)
    assert decision.offload is not None and decision.offload.arg == "foobar"
    assert decision.headers == APP_HEADERS[:2]


@pytest.mark.parametrize(
    "content_type", ["event/stream; charset=utf-8", "Event/Stream", "text/event-stream"]
)
def test_equal_is_exact_so_other_types_pass_through(content_type: str) -> None:
    decision = respond(load(README_PULL), request_state(), 200,
                       [("Content-Type", content_type), ("X-SSE-Channel", "c")])
    assert decision.offload is None
    assert summary(decision.final) == ("continue", None)


def test_missing_channel_header_subscribes_to_the_empty_channel() -> None:
    # As the original; `sse-offload check` warns about this rule.
    decision = respond(load(README_PULL), request_state(), 200, [("Content-Type", "event/stream")])
    assert decision.offload is not None and decision.offload.arg == ""


@pytest.mark.parametrize(
    ("rules", "headers", "sent", "vars"),
    [
        # names match case-insensitively; values are stored verbatim
        ("collect-header = content-type T\n", [("CONTENT-TYPE", " a ")],
         [("CONTENT-TYPE", " a ")], {"T": " a "}),
        # every matching collect applies; lookups see the last value
        ("collect-header = X A\ncollect-header = X B\n", [("X", "1"), ("X", "2")],
         [("X", "1"), ("X", "2")], {"A": "2", "B": "2"}),
        # the first pull wins and stops the collects
        ("collect-header = X C\npull-header = X P1\npull-header = X P2\n", [("X", "1")],
         [], {"P1": "1"}),
        # a deleted header is neither sent nor collected
        ("del-header = X\ncollect-header = X C\n", [("X", "1"), ("Y", "2")], [("Y", "2")], {}),
        ("rem-header = x\n", [("X", "1")], [], {}),
        # the alias of collect-header
        ("response-header-collect = X C\n", [("X", "1")], [("X", "1")], {"C": "1"}),
    ],
)
def test_header_vars(rules: str, headers, sent, vars) -> None:
    config = load(rules)
    state = request_state()
    before = dict(state.vars)
    kept = [(n, v) for n, v in headers if take_response_header(config, state, n, v)]
    assert kept == sent
    assert {k: v for k, v in state.vars.items() if k not in before} == vars


def test_delheader_from_the_request_chain_applies_to_the_response() -> None:
    config = load("collect-header = X C\n")
    state = request_state()
    state.del_headers.add("x")
    assert not take_response_header(config, state, "X", "1")
    assert "C" not in state.vars


def test_added_headers_come_last_and_are_never_collected() -> None:
    config = load("add-header = A: 1\ncollect-header = A C\nresponse-route-run = addheader:B: 2\n"
                  "response-route-run = delheader:Z\n")
    state = request_state()
    state.add_headers.append(("R", "0"))
    decision = respond(config, state, 200, [("Z", "z"), ("K", "k")])
    assert decision.headers == [("K", "k"), ("A", "1"), ("R", "0"), ("B", "2")]
    assert "C" not in state.vars


def test_response_chain_offload_replaces_the_head_and_final_is_then_ignored() -> None:
    config = load("response-route-run = sse:r\nfinal-route-run = sse:f\n")
    decision = respond(config, request_state(), 200, [("Content-Type", "text/html")])
    assert decision.offload is not None and decision.offload.arg == "r"
    assert decision.replace_headers
    assert summary(decision.final)[:3] == ("offload", "sse", "f")  # ran, but ignored


def test_final_chain_offload_is_ignored_when_already_streaming() -> None:
    state = request_state()
    state.streaming = True
    decision = respond(load("final-route-run = sse:f\n"), state, 200, [])
    assert decision.offload is None


@pytest.mark.parametrize(("status", "fires"), [(404, True), (200, False)])
def test_status_rules(status: int, fires: bool) -> None:
    config = load("response-route-status = 404 addvar:SEEN=${uwsgi[status]}\n"
                  "final-route-status = 404 log:missing ${REQUEST_URI}\n")
    state = request_state("/nope")
    respond(config, state, status, [])
    assert (state.vars.get("SEEN") == "404") is fires
    assert (state.logs == [("info", "missing /nope")]) is fires


def test_response_chain_break_discards_the_body() -> None:
    decision = respond(load("response-route-run = break:\n"), request_state(), 200, [])
    assert decision.discard_body
    assert not respond(load(""), request_state(), 200, []).discard_body


def test_app_vars_are_seen_by_the_final_chain() -> None:
    # The README's app-governed example: the app adds X-SSE-OFFLOAD with uwsgi.add_var.
    config = load("final-route-if-not = empty:${X-SSE-OFFLOAD} sse:${X-SSE-OFFLOAD}\n")
    state = request_state("/whattimeisit")
    state.vars["X-SSE-OFFLOAD"] = "clock"
    decision = respond(config, state, 200, [])
    assert decision.offload is not None and decision.offload.arg == "clock"
    assert respond(config, request_state("/other"), 200, []).offload is None


def test_a_client_header_cannot_forge_an_app_var() -> None:
    from sse_offload.routing import cgi_vars

    vars = cgi_vars(b"GET", b"/", b"HTTP/1.1", [(b"X-SSE-OFFLOAD", b"evil")])
    assert "X-SSE-OFFLOAD" not in vars and vars["HTTP_X_SSE_OFFLOAD"] == "evil"
