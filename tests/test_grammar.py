"""The route grammar and its error messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_offload.config import Config, Diagnostic, RulesError, SourcePos, parse_rules_text
from sse_offload.config.actions import ACTIONS
from sse_offload.config.grammar import parse_route
from sse_offload.routing.engine import HANDLERS as ENGINE_ACTIONS


def load(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_rules_text(text, "rules/x.ini", {} if environ is None else environ)


def route(value: str) -> tuple[str, str, str]:
    """(regex, action name, arg) of a one-route file."""
    (rule,) = load(f"[uwsgi]\nroute = {value}\n").request_rules
    assert rule.regex is not None
    return rule.regex.pattern, rule.action.name, rule.action.arg


def errors(text: str) -> tuple[Diagnostic, ...]:
    with pytest.raises(RulesError) as info:
        load(text)
    return info.value.diagnostics


def route_error(value: str) -> Diagnostic:
    (diagnostic,) = errors(f"[uwsgi]\nroute = {value}\n")
    return diagnostic


# --- accepted syntax --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("^/whattimeisit sse:clock", ("^/whattimeisit", "sse", "clock")),
        (
            "^/foobar sse:server=127.0.0.1:4040,subscribe=foobar",
            ("^/foobar", "sse", "server=127.0.0.1:4040,subscribe=foobar"),
        ),
        (
            "^/foobar sseraw:server=127.0.0.1:4040,subscribe=foobar",
            ("^/foobar", "sseraw", "server=127.0.0.1:4040,subscribe=foobar"),
        ),
        (r"^/events/(\d+)$ sse:channel_$1", (r"^/events/(\d+)$", "sse", "channel_$1")),
        ("^/x sse:a b:c d", ("^/x", "sse", "a b:c d")),
        ("^/x sse::", ("^/x", "sse", ":")),
        ("^/x sse:", ("^/x", "sse", "")),
        ("^/x last:", ("^/x", "continue", "")),
        ("^/x continue:ignored", ("^/x", "continue", "ignored")),
        ("^/x break:", ("^/x", "break", "")),
        ("^/x break:404", ("^/x", "break", "404")),
        ("^/x break:404 Not Found", ("^/x", "break", "404 Not Found")),
        ("^/a:b sse:c", ("^/a:b", "sse", "c")),
        ("^/a\tb sse:c", ("^/a\tb", "sse", "c")),
        (r"^/a\sb sse:c", (r"^/a\sb", "sse", "c")),
    ],
)
def test_route_splits_at_first_space_then_first_colon(
    value: str, expected: tuple[str, str, str]
) -> None:
    assert route(value) == expected


def test_regex_is_compiled_with_search_semantics() -> None:
    (rule,) = load("[uwsgi]\nroute = ^/whattimeisit sse:clock\n").request_rules
    assert rule.regex is not None
    assert rule.regex.search("/whattimeisit2")
    assert not rule.regex.search("/x/whattimeisit")
    assert not rule.regex.search("/WhatTimeIsIt")


def test_rule_and_action_positions() -> None:
    (rule,) = load("[uwsgi]\n  route =  ^/x last:\n").request_rules
    text = "  route =  ^/x last:"
    assert rule.pos == SourcePos("rules/x.ini", 2, 12, text)
    assert rule.action.pos == SourcePos("rules/x.ini", 2, 16, text)


def test_the_engine_has_a_handler_for_every_action_of_the_grammar() -> None:
    assert set(ENGINE_ACTIONS) == set(ACTIONS)


# --- errors -----------------------------------------------------------------------------


def test_error_message_names_file_line_column_and_shows_a_caret() -> None:
    text = "[uwsgi]\n" + "; filler\n" * 6 + "route = ^/oops sse\n"
    with pytest.raises(RulesError) as info:
        load(text)
    assert str(info.value) == (
        "rules/x.ini:8:19: error: expected ':' after the action name\n"
        "    route = ^/oops sse\n"
        "                      ^"
    )


@pytest.mark.parametrize(
    ("value", "col", "message"),
    [
        ("^/x last", 17, "expected ':' after the action name"),
        ("^/x last foo", 17, "expected ':' after the action name, found a space"),
        ("^/x", 12, "expected a space and an action after the regex"),
        ("^/x\tsse:a", 18, "expected a space and an action after the regex"),
        ("^/x  sse:a", 13, "expected action name, found a space"),
        ("^/x :a", 13, "expected action name, found ':a'"),
        ("^/a b sse:x", 14, "expected ':' after the action name, found a space"),
    ],
)
def test_syntax_errors_say_what_was_expected(value: str, col: int, message: str) -> None:
    diagnostic = route_error(value)
    assert diagnostic.severity == "error"
    assert diagnostic.pos == SourcePos("rules/x.ini", 2, col, f"route = {value}")
    assert diagnostic.message == message


def test_last_without_colon_is_an_error() -> None:
    assert route_error("^/x last").message == "expected ':' after the action name"


def test_route_without_action_is_an_error() -> None:
    assert "after the regex" in route_error("^/whattimeisit").message


def test_empty_route_is_an_error() -> None:
    (diagnostic,) = errors("[uwsgi]\nroute =\n")
    assert diagnostic.message == "expected regex"
    assert diagnostic.pos is not None and diagnostic.pos.col == 8


def test_regex_cannot_contain_a_space() -> None:
    assert route_error("^/a b sse:x").pos == SourcePos("rules/x.ini", 2, 14, "route = ^/a b sse:x")


def test_unknown_action_lists_the_known_ones_and_suggests_the_closest() -> None:
    diagnostic = route_error("^/x ssee:clock")
    assert diagnostic.pos is not None and diagnostic.pos.col == 13
    assert diagnostic.message == (
        "unknown action 'ssee'; known actions: addheader, addvar, basicauth, basicauth-next,"
        " break, continue=last, delheader=remheader, donotlog, goto, log, logvar,"
        " redirect=redirect-302, redirect-permanent=redirect-301, return=break-with-status,"
        " rewrite, rewrite-last, setmethod, setpathinfo, seturi, sse, sseraw, static;"
        " did you mean 'sse'?"
    )


def test_unknown_action_without_a_close_match_has_no_suggestion() -> None:
    assert "did you mean" not in route_error("^/x zzzzzz:1").message


def test_action_names_are_case_sensitive() -> None:
    assert route_error("^/x SSE:clock").message.startswith("unknown action 'SSE'")


def test_uwsgi_action_this_gateway_does_not_implement_is_named_as_such() -> None:
    assert route_error("^/x disableheaders:").message.startswith(
        "action 'disableheaders' is a uWSGI action this gateway does not implement;"
        " known actions: addheader,"
    )


@pytest.mark.parametrize("arg", ["abc", "99", "600", "1000", "40", "-404", "404x", "٤٠٤"])
def test_break_status_must_be_an_http_status(arg: str) -> None:
    diagnostic = route_error(f"^/x break:{arg}")
    assert diagnostic.pos is not None and diagnostic.pos.col == 19
    assert "HTTP status (100-599)" in diagnostic.message


def test_invalid_regex_points_into_the_regex() -> None:
    diagnostic = route_error("^/(oops sse:x")
    assert diagnostic.pos == SourcePos("rules/x.ini", 2, 11, "route = ^/(oops sse:x")
    assert diagnostic.message == "invalid regex: missing ), unterminated subpattern"


def test_pcre_only_syntax_is_reported_as_a_regex_error() -> None:
    diagnostic = route_error("^/a\\z sse:x")
    assert diagnostic.message.startswith("invalid regex: bad escape \\z")
    assert diagnostic.pos is not None and diagnostic.pos.col == 12


def test_error_columns_follow_the_original_line_through_expansion() -> None:
    # "%%" and "$(P)" change the value's length; the caret must stay on the '('.
    (d1,) = errors("[uwsgi]\nroute = ^/%%(x sse:y\n")
    assert d1.pos is not None and d1.pos.col == 13
    with pytest.raises(RulesError) as info:
        load("[uwsgi]\nroute = $(P)(x sse:y\n", {"P": "^/abc"})
    (d2,) = info.value.diagnostics
    assert d2.pos is not None and d2.pos.col == 13
    assert d2.message == "invalid regex: missing ), unterminated subpattern"


def test_caret_keeps_tabs_so_it_lines_up() -> None:
    (diagnostic,) = errors("[uwsgi]\n\troute = ^/oops sse\n")
    assert diagnostic.format().splitlines()[1:] == [
        "    \troute = ^/oops sse",
        "    \t                  ^",
    ]


def test_three_bad_lines_report_three_errors_in_order() -> None:
    text = (
        "[uwsgi]\n"
        "route = ^/ok sse:clock\n"
        "route = ^/a last\n"
        "static-map = /nomap\n"
        "route = ^/(b sse:x\n"
        "route = ^/ok2 sse:clock\n"
    )
    with pytest.raises(RulesError) as info:
        load(text)
    assert [d.pos.line for d in info.value.diagnostics if d.pos] == [3, 4, 5]
    assert len(str(info.value).splitlines()) == 9


def test_rules_error_carries_the_warnings_too() -> None:
    with pytest.raises(RulesError) as info:
        load("[uwsgi]\nworkers = x\nroute = ^/a last\n")
    assert [w.message for w in info.value.warnings] == ["'workers' is not supported yet; ignored"]
    assert "workers" not in str(info.value)


# --- properties -------------------------------------------------------------------------

_route_alphabet = st.sampled_from(list(" :\t^$/()[]{}\\*+?|.,=abcsergl0123456789%\udcff"))


@given(value=st.text(_route_alphabet, max_size=40) | st.text(max_size=40))
def test_any_route_value_parses_or_raises_rules_error(value: str) -> None:
    try:
        rule = parse_route(value, lambda offset: SourcePos("f", 1, offset + 1, value))
    except RulesError as exc:
        (diagnostic,) = exc.diagnostics
        assert diagnostic.pos is not None
        assert 1 <= diagnostic.pos.col <= len(value) + 1
    else:
        assert rule.action.name in ACTIONS


@given(
    regex=st.from_regex(r"[^ \n]{1,12}", fullmatch=True),
    name=st.sampled_from(["sse", "sseraw", "last", "continue"]),
    arg=st.text(max_size=20).filter(lambda s: "\n" not in s and "\r" not in s),
)
def test_valid_routes_keep_the_argument_verbatim(regex: str, name: str, arg: str) -> None:
    try:
        rule = parse_route(f"{regex} {name}:{arg}", lambda o: SourcePos("f", 1, o + 1, ""))
    except RulesError as exc:
        assert exc.diagnostics[0].message.startswith("invalid regex")
    else:
        assert rule.regex is not None and rule.regex.pattern == regex
        assert rule.action.arg == arg


def test_regex_warnings_become_diagnostics_at_the_regex() -> None:
    # Python warns that "[[" may mean a nested set some day; the pattern is unique to this
    # test so that re's compile cache cannot swallow the warning.
    config = load("[uwsgi]\nroute = ^/t[[grammar_test]] sse:x\n")
    (warning,) = config.warnings
    assert warning.pos == SourcePos("rules/x.ini", 2, 9, "route = ^/t[[grammar_test]] sse:x")
    assert warning.message.startswith("regex: Possible nested set")
