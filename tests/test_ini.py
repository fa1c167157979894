"""The ini reader and the loader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules_helpers import APP_GOVERNED_INI, EXAMPLES_CLOCK_INI, README_INI
from sse_offload.config import (
    Config,
    IniEntry,
    MuleSpec,
    RulesError,
    SourcePos,
    StaticMap,
    load_rules,
    parse_rules_text,
)


def load(text: str, environ: dict[str, str] | None = None, name: str = "rules/x.ini") -> Config:
    return parse_rules_text(text, name, {} if environ is None else environ)


def pairs(config: Config) -> list[tuple[str, str]]:
    return [(entry.key, entry.value) for entry in config.entries]


def warnings(config: Config) -> list[str]:
    return [w.message for w in config.warnings]


# --- the README files -------------------------------------------------------------------


def test_readme_ini_loads_with_the_expected_objects() -> None:
    config = load(README_INI)
    assert config.warnings == ()
    assert pairs(config) == [
        ("plugin", "sse_offload"),
        ("http-socket", ":9090"),
        ("mule", "clock.pl"),
        ("static-map", "/clock=clock.html"),
        ("route", "^/whattimeisit sse:clock"),
        ("offload-threads", "1"),
    ]
    line_text = "static-map = /clock=clock.html"
    assert config.static_maps == (
        StaticMap("/clock", "clock.html", SourcePos("rules/x.ini", 9, 14, line_text)),
    )
    assert config.mules == (
        MuleSpec("clock.pl", SourcePos("rules/x.ini", 7, 8, "mule = clock.pl")),
    )
    (rule,) = config.request_rules
    assert (rule.chain, rule.subject, rule.regex and rule.regex.pattern) == (
        "request",
        "PATH_INFO",
        "^/whattimeisit",
    )
    assert (rule.action.name, rule.action.arg) == ("sse", "clock")
    assert config.option("http-socket") == ":9090"
    assert config.literal_servers() == frozenset()


def test_examples_clock_ini_commented_lines_are_not_read() -> None:
    config = load(EXAMPLES_CLOCK_INI)
    assert config.warnings == ()
    assert [m.script for m in config.mules] == ["examples/clock.pl"]
    assert [(s.mount, s.path) for s in config.static_maps] == [("/clock", "examples/clock.html")]
    assert "wsgi-file" not in dict(pairs(config))


def test_app_governed_ini_loads_without_warnings() -> None:
    config = load(APP_GOVERNED_INI)
    assert config.values("plugin") == ("python", "sse_offload")
    assert config.option("wsgi-file") == "clock.py"
    assert config.request_rules == ()
    (final,) = config.final_rules
    assert final.condition is not None and final.negate
    assert (final.condition.name, final.condition.arg) == ("empty", "${X-SSE-OFFLOAD}")
    # an app is configured: no "not supported yet", no note that rules see gateway responses
    assert config.warnings == ()


def test_response_side_rules_without_an_app_get_a_note() -> None:
    config = load("[uwsgi]\nfinal-route-if-not = empty:${X-SSE-OFFLOAD} sse:${X-SSE-OFFLOAD}\n")
    (note,) = config.warnings
    assert note.severity == "note"
    assert note.message.startswith("response-side rules (response-route*,")


# --- line syntax ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[uwsgi]\nkey = value\n", [("key", "value")]),
        ("[uwsgi]\n  \tkey\t=  value \t\r\n", [("key", "value")]),
        ("[uwsgi]\r\nkey = value\r\n", [("key", "value")]),
        ("[uwsgi]\n\n\n   \nkey = v\n", [("key", "v")]),
        ("[uwsgi]\n; key = no\n# key = no\n  ;key = no\n", []),
        ("[uwsgi]\nplugin = foo ; note\n", [("plugin", "foo ; note")]),
        ("[uwsgi]\nplugin = foo # note\n", [("plugin", "foo # note")]),
        ("[uwsgi]\nstatic-map = /a=b=c\n", [("static-map", "/a=b=c")]),
        ("[uwsgi]\nmaster\n", [("master", "")]),
        ("[uwsgi]\nkey =\n", [("key", "")]),
        ('[uwsgi]\nkey = "quoted"\n', [("key", '"quoted"')]),
        ("[uwsgi]\na = 1\nb = 2\na = 3\n", [("a", "1"), ("b", "2"), ("a", "3")]),
        ("[uwsgi]\nno-such-option = 1\n", [("no-such-option", "1")]),
        ("[uwsgi]\nKey = 1\n", [("Key", "1")]),
        ("[uwsgi]\nkey = last line without newline", [("key", "last line without newline")]),
    ],
)
def test_line_syntax(text: str, expected: list[tuple[str, str]]) -> None:
    assert pairs(load(text)) == expected


def test_only_the_uwsgi_section_is_read() -> None:
    text = "before = 0\n[other]\na = 1\n[uwsgi]\nb = 2\n[other]\nc = 3\n[uwsgi]\nd = 4\n"
    assert pairs(load(text)) == [("b", "2"), ("d", "4")]


def test_section_name_is_the_line_without_its_first_and_last_character() -> None:
    assert pairs(load("[uwsgi ]\na = 1\n")) == []
    assert pairs(load("[uwsgi]x\na = 1\n")) == []


@pytest.mark.parametrize("text", ["", "a = 1\n", "[other]\na = 1\n", "[uwsgi]\n; nothing\n"])
def test_missing_uwsgi_section_is_a_warning_not_an_error(text: str) -> None:
    config = load(text)
    assert config.entries == ()
    (warning,) = config.warnings
    assert warning.severity == "warning"
    assert "[uwsgi]" in warning.message
    assert warning.format().startswith("rules/x.ini: warning: ")


def test_unknown_keys_are_kept_without_warning() -> None:
    config = load("[uwsgi]\nsocket-timeout = 4\nmaster = true\n")
    assert config.warnings == ()
    assert config.option("socket-timeout") == "4"


def test_option_is_the_last_value_and_values_are_all_in_order() -> None:
    config = load("[uwsgi]\nredis = a\nlisten = tcp:1\nredis = b\nlisten = tcp:2\n")
    assert config.option("redis") == "b"
    assert config.option("keepalive") is None
    assert config.values("listen") == ("tcp:1", "tcp:2")
    assert config.values("nothing") == ()


@pytest.mark.parametrize(
    "key",
    [
        "http-socket",
        "plugin",
        "plugins",
        "offload-threads",
        "offload-thread",
        "listen",
        "redis",
        "keepalive",
        "rules",
        "processes",
        "master",
        "socket-timeout",
    ],
)
def test_keys_read_elsewhere_or_ignored_are_accepted_silently(key: str) -> None:
    config = load(f"[uwsgi]\n{key} = x\n")
    assert config.warnings == ()
    assert config.option(key) == "x"


@pytest.mark.parametrize(
    "key",
    ["workers", "static-map2", "attach-daemon"],
)
def test_keys_not_built_yet_are_warned_about_at_their_line(key: str) -> None:
    config = load(f"[uwsgi]\n\n  {key} = x y\n")
    (warning,) = config.warnings
    assert warning.message == f"{key!r} is not supported yet; ignored"
    assert warning.pos == SourcePos("rules/x.ini", 3, 3, f"  {key} = x y")
    assert config.option(key) == "x y"


def test_value_position_is_the_column_where_the_value_starts() -> None:
    config = load("[uwsgi]\n\t  route =   ^/x sse:y  \n")
    (entry,) = config.entries
    assert entry == IniEntry(
        "route", "^/x sse:y", SourcePos("rules/x.ini", 2, 14, "\t  route =   ^/x sse:y  ")
    )


def test_key_without_value_points_past_the_key() -> None:
    (entry,) = load("[uwsgi]\n  master\n").entries
    assert entry.pos.col == 9


# --- static-map and mule ----------------------------------------------------------------


def test_static_map_splits_at_the_first_equal_sign() -> None:
    config = load("[uwsgi]\nstatic-map = /a=b=c\nstatic-map = /x=\n")
    assert [(s.mount, s.path) for s in config.static_maps] == [("/a", "b=c"), ("/x", "")]


def test_static_map_without_equal_sign_is_an_error() -> None:
    with pytest.raises(RulesError) as info:
        load("[uwsgi]\nstatic-map = /clock\n")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.pos == SourcePos("rules/x.ini", 2, 14, "static-map = /clock")
    assert "MOUNT=PATH" in diagnostic.message


def test_empty_mule_runs_nothing() -> None:
    config = load("[uwsgi]\nmule =\nmule = a.py\nmule\n")
    assert [m.script for m in config.mules] == ["a.py"]


# --- magic variables, $(ENV) and %(name) ------------------------------------------------


def test_percent_d_is_the_absolute_directory_with_trailing_slash(tmp_path: Path) -> None:
    path = tmp_path / "clock.ini"
    config = load("[uwsgi]\nmule = %dclock.pl\n", name=str(path))
    assert config.option("mule") == f"{tmp_path}/clock.pl"


def test_percent_d_of_a_relative_path_is_absolute() -> None:
    config = load("[uwsgi]\nd = %d\n", name="rules/x.ini")
    assert config.option("d") == os.path.abspath("rules") + "/"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("%n", "clock"),
        ("%n.log", "clock.log"),
        ("100%%", "100%"),
        ("%%d", "%d"),
        ("%(", "%("),
        ("a%", "a%"),
    ],
)
def test_magic_variables(value: str, expected: str) -> None:
    config = load(f"[uwsgi]\nv = {value}\n", name="/etc/sse/clock.ini")
    assert config.option("v") == expected
    assert config.warnings == ()


def test_unknown_magic_pair_is_kept_and_warned_about_at_its_column() -> None:
    # difference 13: uWSGI removes "%2F" silently; we keep it and say so.
    config = load("[uwsgi]\nroute = ^/a%2Fb sse:x\n")
    assert config.option("route") == "^/a%2Fb sse:x"
    (warning,) = config.warnings
    assert warning.pos == SourcePos("rules/x.ini", 2, 12, "route = ^/a%2Fb sse:x")
    assert "'%2'" in warning.message


def test_environment_variables_are_expanded_and_unset_ones_kept() -> None:
    config = load("[uwsgi]\nredis = $(REDIS)/$(NOPE)\n", {"REDIS": "127.0.0.1:7000"})
    assert config.option("redis") == "127.0.0.1:7000/$(NOPE)"


def test_environment_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSE_TEST_CHANNEL", "clock")
    config = parse_rules_text("[uwsgi]\nroute = ^/ sse:$(SSE_TEST_CHANNEL)\n", "x.ini")
    assert config.request_rules[0].action.arg == "clock"


def test_magic_runs_before_environment_expansion() -> None:
    config = load("[uwsgi]\nv = $(A)%%\n", {"A": "%n"})
    assert config.option("v") == "%n%"


def test_placeholder_takes_the_first_definition() -> None:
    config = load("[uwsgi]\nport = 1\nhttp-socket = :%(port)\nport = 2\nx = %(nope)\n")
    assert config.option("http-socket") == ":1"
    assert config.option("x") == "%(nope)"


def test_routing_variables_survive_the_ini_expansion() -> None:
    config = load("[uwsgi]\nroute = ^/(.*) sse:${qs[ch]}$1\n", {"qs": "no"})
    assert config.request_rules[0].action.arg == "${qs[ch]}$1"


# --- files ------------------------------------------------------------------------------


def test_load_rules_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "clock.ini"
    path.write_text(README_INI)
    config = load_rules(str(path), {})
    assert config.path == str(path)
    assert config.request_rules[0].pos.file == str(path)


def test_non_utf8_bytes_survive(tmp_path: Path) -> None:
    path = tmp_path / "latin.ini"
    path.write_bytes(b"[uwsgi]\nroute = ^/caf\xe9 sse:x\n")
    rule = load_rules(str(path), {}).request_rules[0]
    assert rule.regex is not None
    assert rule.regex.search(b"/caf\xe9".decode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("name", ["missing.ini", "."])
def test_unreadable_file_is_a_rules_error(tmp_path: Path, name: str) -> None:
    path = str(tmp_path / name)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.pos is not None and diagnostic.pos.line == 0
    assert str(info.value).startswith(f"{path}: error: cannot read rules file: ")


# --- literal servers ------------------------------------------------------


def test_literal_servers_are_the_server_values_written_in_the_rules() -> None:
    config = load(
        "[uwsgi]\n"
        "route = ^/a sse:server=127.0.0.1:4040,subscribe=a\n"
        "route = ^/b sseraw:subscribe=b,server=/tmp/r.sock\n"
        "route = ^/c sse:server=${qs[s]},subscribe=c\n"
        "route = ^/(d) sse:server=10.0.0.$1,subscribe=d\n"
        "route = ^/e sse:server=a\\,b:1,subscribe=e\n"
        "route = ^/f sse:server=,subscribe=f\n"
        "route = ^/g sse:clock\n"
    )
    assert config.literal_servers() == frozenset({"127.0.0.1:4040", "/tmp/r.sock", "a,b:1"})


# --- property ---------------------------------------------------------------------------

_ini_alphabet = st.sampled_from(list("[]=;#%$(){}:^/ \t\r\nabcdesu\\é\udcff0123456789"))
_ini_text = st.text(_ini_alphabet, max_size=200) | st.text(max_size=200)


@given(body=_ini_text)
def test_any_text_loads_or_raises_rules_error(body: str) -> None:
    for text in (body, "[uwsgi]\n" + body):
        try:
            config = load(text)
        except RulesError as exc:
            assert exc.diagnostics
            assert all(d.severity == "error" for d in exc.diagnostics)
            str(exc)
        else:
            assert all(w.severity in ("warning", "note") for w in config.warnings)
            for warning in config.warnings:
                warning.format()
