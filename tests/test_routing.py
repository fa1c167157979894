"""The routing engine over the request chain."""

from __future__ import annotations

import re

import pytest

from sse_offload.config import Action, Config, Rule, SourcePos, parse_rules_text
from sse_offload.routing import Break, Continue, Offload, parse_sse_arg, run_chain
from sse_offload.routing.engine import HANDLERS

POS = SourcePos("t.ini", 1, 1, "")


def load(routes: str) -> Config:
    return parse_rules_text("[uwsgi]\n" + routes, "t.ini", {})


def run(routes: str, path: str = "/", **vars: str) -> Offload | Break | Continue:
    config = load(routes)
    return run_chain(config.request_rules, {"PATH_INFO": path, **vars})


def summary(outcome: Offload | Break | Continue) -> tuple[object, ...]:
    """The outcome without its rule, plus the line of the rule that produced it."""
    if isinstance(outcome, Offload):
        return ("offload", outcome.mode, outcome.arg, outcome.expanded, outcome.rule.pos.line)
    if isinstance(outcome, Break):
        return ("break", outcome.status, outcome.rule.pos.line)
    return ("continue", outcome.rule.pos.line if outcome.rule else None)


README_ROUTES = "route = ^/whattimeisit sse:clock\n"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/whattimeisit", ("offload", "sse", "clock", False, 2)),
        ("/whattimeisitANYTHING", ("offload", "sse", "clock", False, 2)),
        ("/whattimeisit/2", ("offload", "sse", "clock", False, 2)),
        ("/clock", ("continue", None)),
        ("/x/whattimeisit", ("continue", None)),
        ("", ("continue", None)),
    ],
)
def test_readme_route(path: str, expected: tuple[object, ...]) -> None:
    assert summary(run(README_ROUTES, path)) == expected


def test_regex_capture_feeds_the_channel() -> None:
    outcome = run("route = ^/events/(\\d+)$ sse:channel_$1\n", "/events/42")
    assert summary(outcome) == ("offload", "sse", "channel_42", True, 2)
    assert summary(run("route = ^/events/(\\d+)$ sse:channel_$1\n", "/events/x")) == (
        "continue",
        None,
    )


def test_expanded_argument_may_select_a_server_and_is_flagged() -> None:
    # The engine hands it over; refusing an unknown server is the front resource's job.
    outcome = run("route = ^/ev/(.*)$ sse:$1\n", "/ev/server=127.0.0.2:1,subscribe=x")
    assert summary(outcome) == ("offload", "sse", "server=127.0.0.2:1,subscribe=x", True, 2)


def test_query_string_var_can_switch_to_key_value_mode() -> None:
    # The original's security hole: the '=' in the client's value selects kv mode.
    config = load("route = ^/ch sse:${qs[ch]}\n")
    outcome = run_chain(
        config.request_rules,
        {"PATH_INFO": "/ch", "QUERY_STRING": "ch=server=1.2.3.4:25,subscribe=x"},
    )
    assert isinstance(outcome, Offload) and outcome.expanded
    target = parse_sse_arg(outcome.arg)
    assert (target.server, target.channel) == ("1.2.3.4:25", "x")
    assert target.server not in config.literal_servers()


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        (
            "route = ^/foobar sse:server=127.0.0.1:4040,subscribe=foobar\n",
            ("offload", "sse", "server=127.0.0.1:4040,subscribe=foobar", False, 2),
        ),
        (
            "route = ^/foobar sseraw:server=127.0.0.1:4040,subscribe=foobar\n",
            ("offload", "sseraw", "server=127.0.0.1:4040,subscribe=foobar", False, 2),
        ),
    ],
)
def test_readme_action_parameter_examples(routes: str, expected: tuple[object, ...]) -> None:
    outcome = run(routes, "/foobar")
    assert summary(outcome) == expected
    assert isinstance(outcome, Offload)
    target = parse_sse_arg(outcome.arg)
    assert (target.server, target.channel, target.buffer_size) == ("127.0.0.1:4040", "foobar", 4096)
    assert load(routes).literal_servers() == frozenset({"127.0.0.1:4040"})


@pytest.mark.parametrize(
    ("routes", "path", "expected"),
    [
        # the first rule that fires and stops the chain wins
        ("route = ^/a sse:one\nroute = ^/ sse:two\n", "/a", ("offload", "sse", "one", False, 2)),
        ("route = ^/a sse:one\nroute = ^/ sse:two\n", "/b", ("offload", "sse", "two", False, 3)),
        # continue and its alias last stop the chain
        ("route = ^/a continue:\nroute = ^/ sse:two\n", "/a", ("continue", 2)),
        ("route = ^/a last:\nroute = ^/ sse:two\n", "/a", ("continue", 2)),
        ("route = ^/a last:\nroute = ^/ sse:two\n", "/b", ("offload", "sse", "two", False, 3)),
        # break, with or without a status
        ("route = ^/a break:\nroute = ^/ sse:two\n", "/a", ("break", None, 2)),
        ("route = ^/a break:404\n", "/a", ("break", 404, 2)),
        ("route = ^/a break:503 Slow Down\n", "/a", ("break", 503, 2)),
        # sseraw keeps its mode
        ("route = ^/raw sseraw:feed\n", "/raw", ("offload", "sseraw", "feed", False, 2)),
        # an empty argument is the empty channel, not a missing one
        ("route = ^/e sse:\n", "/e", ("offload", "sse", "", False, 2)),
        # no rules at all
        ("", "/a", ("continue", None)),
    ],
)
def test_chain_walk(routes: str, path: str, expected: tuple[object, ...]) -> None:
    assert summary(run(routes, path)) == expected


def test_variables_are_expanded_in_the_argument() -> None:
    outcome = run("route = ^/ sse:${HTTP_X_CHANNEL}-$0\n", "/a", HTTP_X_CHANNEL="news")
    assert summary(outcome) == ("offload", "sse", "news-/", True, 2)


def test_non_participating_group_expands_to_nothing() -> None:
    assert summary(run("route = ^/a(/b)?$ sse:x$1y\n", "/a")) == ("offload", "sse", "xy", True, 2)


def test_missing_subject_is_searched_as_empty_text() -> None:
    config = load("route = ^$ break:\n")
    assert summary(run_chain(config.request_rules, {})) == ("break", None, 2)


def test_rule_subject_selects_the_var_searched() -> None:
    action = Action("sse", "$1", POS)
    rule = Rule("request", "QUERY_STRING", re.compile(r"ch=(\w+)"), action, POS)
    outcome = run_chain([rule], {"PATH_INFO": "/ch=path", "QUERY_STRING": "ch=qs"})
    assert isinstance(outcome, Offload) and outcome.arg == "qs"


def test_rule_without_regex_always_fires_with_no_captures() -> None:
    rule = Rule("request", None, None, Action("sse", "a$1b$0", POS), POS)
    outcome = run_chain([rule], {"PATH_INFO": "/x"})
    assert isinstance(outcome, Offload) and outcome.arg == "ab"


def test_regex_is_searched_anywhere_in_the_subject() -> None:
    # uWSGI regexes are unanchored: "/whattimeisit" also fires for "/x/whattimeisit".
    outcome = run("route = /whattimeisit sse:clock\n", "/x/whattimeisit")
    assert summary(outcome) == ("offload", "sse", "clock", False, 2)


def test_a_handler_returning_none_goes_on_with_the_next_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The extension point of the complete language: log/addvar/... return None (NEXT).
    seen: list[str] = []
    monkeypatch.setitem(HANDLERS, "log", lambda step: seen.append(step.translate()[0]))
    log = Rule("request", "PATH_INFO", re.compile("^/(.*)"), Action("log", "saw $1", POS), POS)
    sse = Rule("request", None, None, Action("sse", "clock", POS), POS)
    outcome = run_chain([log, sse], {"PATH_INFO": "/a"})
    assert seen == ["saw a"]
    assert isinstance(outcome, Offload) and outcome.rule is sse
