"""Every route-if condition with its edge cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules_helpers import run, summary
from sse_offload.config import RulesError
from sse_offload.config.grammar import CONDITION_ALIASES, CONDITIONS
from sse_offload.routing.conditions import CONDITIONS as ENGINE_CONDITIONS

LONG_V6 = "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1"

# (condition, vars, expected): True fires, False does not, "error" ends the chain (BREAK).
TABLE: list[tuple[str, dict[str, str], bool | str]] = [
    # equal and its aliases: byte-exact, case-sensitive
    ("equal:${A};x", {"A": "x"}, True),
    ("equal:${A};x", {"A": "xx"}, False),
    ("equal:${A};x", {}, False),
    ("isequal:a;a", {}, True),
    ("eq:;", {}, True),
    ("==:a;A", {}, False),
    ("equal:abc", {}, False),  # no ';': always false
    ("equal:${A};${B}", {"A": "a;b", "B": "a;b"}, True),  # a ';' in a value never splits
    ("equal:${A};b", {"A": "a;b"}, False),
    ("equal:a;b;c", {}, False),  # split at the first ';': "a" vs "b;c"
    ("equal:b;c;c", {}, False),
    ("equal:x;x;", {}, False),
    # startswith / endswith: an empty needle is true
    ("startswith:/api/v1;/api", {}, True),
    ("startswith:/a;", {}, True),
    ("startswith:/a;/ab", {}, False),
    ("endswith:style.css;.css", {}, True),
    ("endswith:x;", {}, True),
    ("endswith:a;ba", {}, False),
    # contains: a plain substring test (uWSGI's scan says False to the first two)
    ("contains:aab;ab", {}, True),
    ("contain:abc;", {}, True),
    ("contains:abc;d", {}, False),
    ("contains:${HTTP_USER_AGENT};Bot", {"HTTP_USER_AGENT": "GoodBot/1.0"}, True),
    # regexp: a search; the pattern's own '$' anchors survive (uWSGI's translation drops
    # a final '$')
    ("regexp:${PATH_INFO};^/a/[0-9]+$", {"PATH_INFO": "/a/12"}, True),
    ("regexp:${PATH_INFO};^/a/[0-9]+$", {"PATH_INFO": "/a/12/x"}, False),
    ("re:/b;^/a", {}, False),
    ("re:x/ay;/a", {}, True),
    ("regexp:${X};${P}", {"X": "abc", "P": "^ab"}, True),
    ("regexp:${X};${P}", {"X": "abc", "P": "("}, "error"),  # an invalid pattern: BREAK
    ("regexp:abc", {}, False),
    # numbers: C strtol, garbage reads as 0
    ("ishigher:10;9", {}, True),
    (">:9;10", {}, False),
    (">:abc;-1", {}, True),
    (">:${N};11", {"N": " 12x"}, True),
    ("ishigherequal:5;5", {}, True),
    (">=:4;5", {}, False),
    ("islower:-3;2", {}, True),
    ("<:2;2", {}, False),
    ("islowerequal:2;2", {}, True),
    ("<=:3;2", {}, False),
    (">:${CONTENT_LENGTH};1000", {"CONTENT_LENGTH": "1001"}, True),
    # empty: a missing var is empty; $N has no capture in a non-regexp rule
    ("empty:${X}", {}, True),
    ("empty:${X}", {"X": "a"}, False),
    ("empty:", {}, True),
    ("empty:$1", {}, True),
    ("empty:a$1", {}, False),
    # ipv4in: default /32; too-long operands are errors, bad ones false
    ("ipv4in:${REMOTE_ADDR};10.0.0.0/8", {"REMOTE_ADDR": "10.1.2.3"}, True),
    ("ipv4in:${REMOTE_ADDR};10.0.0.0/8", {"REMOTE_ADDR": "192.168.1.1"}, False),
    ("ipv4in:10.0.0.5;10.0.0.5", {}, True),
    ("ipv4in:10.0.0.6;10.0.0.5", {}, False),
    ("ipv4in:10.0.0.200;10.0.0.128/25", {}, True),
    ("ipv4in:10.0.0.100;10.0.0.128/25", {}, False),
    ("ipv4in:1.2.3.4;0.0.0.0/0", {}, True),
    ("ipv4in:nonsense;10.0.0.0/8", {}, False),
    ("ipv4in:1.2.3.4;1.2.3.0/33", {}, False),
    ("ipv4in:1.2.3.4", {}, False),
    ("ipv4in:${REMOTE_ADDR};10.0.0.0/8", {"REMOTE_ADDR": LONG_V6}, "error"),
    ("ipv4in:1.2.3.4;100.100.100.100/24", {}, "error"),
    ("ipv4in:1.2.3.4;100.100.100.0/24", {}, False),
    # ipv6in: default /128
    ("ipv6in:2001:db8::1;2001:db8::/32", {}, True),
    ("ipv6in:2001:db9::1;2001:db8::/32", {}, False),
    ("ipv6in:::1;::1", {}, True),
    ("ipv6in:::2;::1", {}, False),
    ("ipv6in:10.0.0.1;::/0", {}, False),
    ("ipv6in:${A};::/0", {"A": "0000:" * 8 + "1"}, "error"),
    ("ipv6in:::1;" + "0" * 41 + "/1", {}, "error"),
]


@pytest.mark.parametrize(("condition", "vars", "expected"), TABLE)
def test_condition(condition: str, vars: dict[str, str], expected: bool | str) -> None:
    fired, _ = run(f"route-if = {condition} return:200\n", **vars)
    negated, _ = run(f"route-if-not = {condition} return:200\n", **vars)
    if expected == "error":
        # An error ends the chain with BREAK, negated or not.
        assert summary(fired) == ("break", None, 2)
        assert summary(negated) == ("break", None, 2)
    else:
        assert (summary(fired)[0] == "return") is expected
        assert (summary(negated)[0] == "return") is (not expected)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "file")
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    return {name: str(tmp_path / name) for name in ("file", "dir", "link", "broken", "script")}


@pytest.mark.parametrize(
    ("condition", "true_for"),
    [
        ("exists", {"file", "dir", "link", "script"}),
        ("isfile", {"file", "link", "script"}),
        ("isdir", {"dir"}),
        ("islink", {"link", "broken"}),
        ("isexec", {"script", "dir"}),
    ],
)
def test_path_conditions(tree: dict[str, str], condition: str, true_for: set[str]) -> None:
    for name in (*tree, "missing", "", "nul"):
        path = tree.get(name, f"{tree['dir']}/missing" if name == "missing" else "")
        if name == "nul":
            path = tree["file"] + "\0x"
        outcome, _ = run(f"route-if = {condition}:${{P}} return:200\n", P=path)
        assert (summary(outcome)[0] == "return") is (name in true_for), (condition, name)


def test_regexp_captures_feed_the_action() -> None:
    outcome, _ = run(
        "route-if = regexp:${PATH_INFO};^/user/(\\w+)/(\\d+) sse:u-$1-$2-$3\n",
        "/user/ann/42/x",
    )
    assert summary(outcome) == ("offload", "sse", "u-ann-42-", 2)


def test_regexp_captures_include_the_whole_match_as_dollar_zero() -> None:
    outcome, _ = run("route-if = regexp:abcd;b(c) sse:$0|$1\n")
    assert summary(outcome) == ("offload", "sse", "bc|c", 2)


def test_negated_regexp_has_no_captures() -> None:
    outcome, _ = run("route-if-not = regexp:abc;^(x) sse:[$0$1]\n")
    assert summary(outcome) == ("offload", "sse", "[]", 2)


def test_condition_operands_are_translated_each_on_its_own() -> None:
    outcome, _ = run("route-if = equal:${qs[a]};${cookie[a]} return:200\n", "/?a=1",
                     HTTP_COOKIE="a=1")
    assert summary(outcome) == ("return", 200, 2)


def test_error_stops_the_chain_before_later_rules() -> None:
    outcome, state = run(
        "route-if = ipv4in:${REMOTE_ADDR};10.0.0.0/8 return:403\nroute-run = return:200\n",
        REMOTE_ADDR=LONG_V6,
    )
    assert summary(outcome) == ("break", None, 2)
    ((level, message),) = state.logs
    assert level == "error" and message.startswith("t.ini:2:12: ipv4in: operand too long")


def test_every_condition_has_an_engine_function_and_a_table_row() -> None:
    assert set(ENGINE_CONDITIONS) == set(CONDITIONS)
    names = {row[0].split(":", 1)[0] for row in TABLE} | {"exists", "isfile", "isdir",
                                                          "islink", "isexec"}
    assert names >= set(CONDITIONS) | set(CONDITION_ALIASES)


@pytest.mark.parametrize(
    ("value", "col", "message"),
    [
        ("nosuch:x return:200", 12, "unknown condition 'nosuch'; known conditions: "),
        ("equl:a;a return:200", 12, "did you mean 'equal'?"),
        ("lord:x return:200", 12, "condition 'lord' is not supported: it needs a uWSGI Legion"),
        ("incache:key=x return:200", 12, "condition 'incache' is not supported"),
        ("empty return:200", 17, "expected ':' after the condition name, found a space"),
        ("empty:${X}", 22, "expected a space and an action after the condition"),
        ("regexp:a;( return:200", 21, "invalid regex: missing ), unterminated subpattern"),
        ("empty:x nosuch:1", 20, "unknown action 'nosuch'"),
    ],
)
def test_condition_errors_point_at_the_mistake(value: str, col: int, message: str) -> None:
    with pytest.raises(RulesError) as info:
        run(f"route-if = {value}\n")
    diagnostic = info.value.diagnostics[0]
    assert diagnostic.pos is not None and (diagnostic.pos.line, diagnostic.pos.col) == (2, col)
    assert message in diagnostic.message


def test_bad_condition_and_bad_action_on_one_line_are_both_reported() -> None:
    with pytest.raises(RulesError) as info:
        run("route-if = nosuch:x nosuch2:1\n")
    assert [d.pos.col for d in info.value.diagnostics if d.pos] == [12, 21]


def test_two_operand_condition_without_semicolon_is_warned_about() -> None:
    from rules_helpers import load

    (warning,) = load("route-if = equal:abc return:200\n").warnings
    assert warning.pos is not None and warning.pos.col == 18
    assert "without a ';' it is always false" in warning.message
