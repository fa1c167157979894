"""ChainMemo: remembered outcomes of a pure request chain are the outcomes run_chain gives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_offload.config import Config, parse_rules_text
from sse_offload.routing import ChainMemo, RequestState, run_chain
from sse_offload.routing.memo import memo_subjects


def load(routes: str) -> Config:
    return parse_rules_text("[uwsgi]\n" + routes, "t.ini", {})


PURE = """\
route = ^/ev/(.*)$ sse:$1
route-uri = \\?raw=(\\w+) sseraw:server=127.0.0.1:6379,subscribe=$1
route-label = later
route = ^/gone break:
route = ^/teapot return:418
route = ^/old/(.*) redirect:/new/$1
route-run = continue:
"""


@pytest.mark.parametrize(
    ("routes", "subjects"),
    [
        (PURE, ("PATH_INFO", "REQUEST_URI")),
        ("route = ^/x sse:x\n", ("PATH_INFO",)),
        ("", ()),
        # each of these makes the outcome depend on more than the subjects, or changes state
        ("route = ^/x sse:${HTTP_COOKIE}\n", None),
        ("route = ^/x log:seen\nroute = ^/x sse:x\n", None),
        ("route = ^/x addheader:X: 1\n", None),
        ("route = ^/x setpathinfo:/y\nroute = ^/y sse:y\n", None),
        ("route-if = equal:${REQUEST_METHOD};POST return:405\n", None),
        ("route = ^/x goto:later\nroute-label = later\n", None),
        ("route = ^/x basicauth:realm,user:pass\n", None),
    ],
)
def test_which_chains_are_remembered(routes: str, subjects: tuple[str, ...] | None) -> None:
    assert memo_subjects(load(routes).request_rules) == subjects


def _state(path: str, uri: str, cookie: str) -> RequestState:
    return RequestState(
        {"PATH_INFO": path, "REQUEST_URI": uri, "QUERY_STRING": "", "HTTP_COOKIE": cookie}
    )


PATHS = st.sampled_from(["/ev/a", "/ev/b", "/ev/${HTTP_COOKIE}", "/gone", "/teapot",
                         "/old/x", "/other", "/ev/"])
URIS = st.sampled_from(["/", "/?raw=feed", "/?raw=other", "/?raw=${HTTP_COOKIE}"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(PATHS, URIS, st.sampled_from(["c1", "c2"])), max_size=20))
def test_a_memo_answers_what_run_chain_answers(requests: list[tuple[str, str, str]]) -> None:
    rules = load(PURE).request_rules
    memo = ChainMemo(rules, size=5)  # small, so that it also starts again on the way
    for path, uri, cookie in requests:
        assert memo.run(_state(path, uri, cookie)) == run_chain(rules, _state(path, uri, cookie))


def test_a_capture_naming_a_var_is_expanded_per_request() -> None:
    # uWSGI expands ${VAR} found in a capture: such outcomes are never remembered.
    memo = ChainMemo(load(PURE).request_rules)
    first = memo.run(_state("/ev/${HTTP_COOKIE}", "/", "alice"))
    second = memo.run(_state("/ev/${HTTP_COOKIE}", "/", "bob"))
    assert (first.arg, second.arg) == ("alice", "bob")  # type: ignore[union-attr]


def test_a_memo_is_bounded() -> None:
    memo = ChainMemo(load(PURE).request_rules, size=3)
    for i in range(10):
        memo.run(_state(f"/ev/{i}", "/", ""))
        assert len(memo._outcomes) <= 3
