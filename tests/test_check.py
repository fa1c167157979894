"""``sse-offload check``: every error and warning of a rules file, and the checks behind it."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rules_helpers import APP_GOVERNED_INI, EXAMPLES_CLOCK_INI, README_INI, load
from sse_offload.cli import check, main
from sse_offload.config import RulesError, load_rules
from sse_offload.config.loader import one_edit_apart

FIVE_MISTAKES = """\
[uwsgi]
route = ^/(oops sse:x
route = ^/a last
route-if = equl:${A};b sse:x
route = ^/b ssee:clock
static-map = /nomap
route-run = goto:nowhere
redis = @(missing.txt)
"""


def sse_offload_command() -> list[str]:
    beside = Path(sys.executable).with_name("sse-offload")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("sse-offload")
    return [found] if found else [sys.executable, "-m", "sse_offload.cli"]


def run_check(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    files = [a for a in args if not a.startswith("--")]
    return check(files, strict="--strict" in args, out=out), out.getvalue()


def test_five_different_mistakes_are_all_reported_with_position_and_caret(tmp_path: Path) -> None:
    path = tmp_path / "bad.ini"
    path.write_text(FIVE_MISTAKES)
    done = subprocess.run(
        [*sse_offload_command(), "check", str(path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    expected = [
        (2, 11, "invalid regex: missing ), unterminated subpattern"),
        (3, 17, "expected ':' after the action name"),
        (4, 12, "unknown condition 'equl'; known conditions: "),
        (5, 13, "unknown action 'ssee'; known actions: "),
        (6, 14, "expected MOUNT=PATH after 'static-map ='"),
        (7, 13, "goto: no label 'nowhere' in the request chain"),
        (8, 9, "cannot read @(missing.txt): No such file or directory"),
    ]
    lines = out.splitlines()
    for line, col, message in expected:
        head = f"{path}:{line}:{col}: error: "
        (index,) = [i for i, text in enumerate(lines) if text.startswith(head)]
        assert message in lines[index], lines[index]
        source = FIVE_MISTAKES.splitlines()[line - 1]
        assert lines[index + 1] == f"    {source}"
        assert lines[index + 2] == "    " + " " * (col - 1) + "^"
    assert "did you mean 'equal'?" in out and "did you mean 'sse'?" in out
    assert lines[-1] == f"{path}: FAILED (7 errors, 0 warnings)"


def test_a_clean_file_exits_zero(tmp_path: Path) -> None:
    path = tmp_path / "ok.ini"
    path.write_text("[uwsgi]\nroute = ^/whattimeisit sse:clock\n")
    assert run_check(str(path)) == (0, f"{path}: ok (0 errors, 0 warnings)\n")


def test_warnings_pass_unless_strict(tmp_path: Path) -> None:
    path = tmp_path / "warn.ini"
    path.write_text("[uwsgi]\nfinal-rout-if = x\n")
    status, out = run_check(str(path))
    assert status == 0
    assert f"{path}:2:1: warning: unknown key 'final-rout-if', kept and ignored; did you mean" \
        " 'final-route-if'?" in out
    assert run_check(str(path), "--strict")[0] == 1
    assert main(["check", "--strict", str(path)]) == 1


def test_notes_never_fail_even_strict(tmp_path: Path) -> None:
    path = tmp_path / "note.ini"
    path.write_text("[uwsgi]\nfinal-route-run = log:done\n")
    status, out = run_check(str(path), "--strict")
    assert status == 0 and ": note: response-side rules" in out


def test_several_files_and_an_unreadable_one(tmp_path: Path) -> None:
    good = tmp_path / "good.ini"
    good.write_text("[uwsgi]\nroute = ^/ sse:x\n")
    status, out = run_check(str(good), str(tmp_path / "missing.ini"))
    assert status == 1
    assert f"{tmp_path / 'missing.ini'}: error: cannot read rules file: No such file" in out
    assert f"{good}: ok" in out


def test_file_ini_colon_section_reads_that_section(tmp_path: Path) -> None:
    path = tmp_path / "multi.ini"
    path.write_text("[uwsgi]\nroute = ^/a sse:a\n[staging]\nroute = ^/b sse:b\n")
    config = load_rules(f"{path}:staging")
    assert [r.action.arg for r in config.request_rules] == ["b"]
    assert config.request_rules[0].pos.line == 4


def test_at_file_reads_a_file_without_its_final_newline(tmp_path: Path) -> None:
    (tmp_path / "chan.txt").write_text("news\n")
    path = tmp_path / "r.ini"
    path.write_text(f"[uwsgi]\nroute = ^/ sse:@({tmp_path}/chan.txt)\n")
    assert load_rules(str(path)).request_rules[0].action.arg == "news"


# Every config of the original plugin's README (completed where it elides), verbatim; "..."
# is in the README's own snippets and reads as a key without a value.
README_CONFIGS = {
    "routing": README_INI,
    "examples_clock": EXAMPLES_CLOCK_INI,
    "app_governed": APP_GOVERNED_INI,
    "collect_type": """\
[uwsgi]
; this will place the value of Content-Type in RESPONSE_TYPE variable
collect-header = Content-Type RESPONSE_TYPE
...
""",
    "collect_route": """\
[uwsgi]
; this will place the value of Content-Type in RESPONSE_TYPE variable
collect-header = Content-Type RESPONSE_TYPE
; route to sse offload engine if RESPONSE_TYPE is event/stream
final-route-if = equal:${RESPONSE_TYPE};event/stream sse:channel
...
""",
    "collect_channel": """\
[uwsgi]
; this will place the value of Content-Type in RESPONSE_TYPE variable
collect-header = Content-Type RESPONSE_TYPE
collect-header = X-SSE-Channel X_SSE_CHANNEL
; route to sse offload engine if RESPONSE_TYPE is event/stream
final-route-if = equal:${RESPONSE_TYPE};event/stream sse:${X_SSE_CHANNEL}
...
""",
    "pull_channel": """\
[uwsgi]
; this will place the value of Content-Type in RESPONSE_TYPE variable
collect-header = Content-Type RESPONSE_TYPE
pull-header = X-SSE-Channel X_SSE_CHANNEL
; route to sse offload engine if RESPONSE_TYPE is event/stream
final-route-if = equal:${RESPONSE_TYPE};event/stream sse:${X_SSE_CHANNEL}
...
""",
    "params": "route = ^/foobar sse:server=127.0.0.1:4040,subscribe=foobar\n",
    "params_raw": "route = ^/foobar sseraw:server=127.0.0.1:4040,subscribe=foobar\n",
}


@pytest.mark.parametrize("name", sorted(README_CONFIGS))
def test_every_readme_config_is_accepted(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.ini"
    text = README_CONFIGS[name]
    path.write_text(text if text.startswith("[uwsgi]") else "[uwsgi]\n" + text)
    status, out = run_check(str(path))
    assert status == 0, out
    assert ": error:" not in out


# --- the cross-rule checks --------------------------------------------------------------------


def warnings_of(body: str) -> list[str]:
    return [w.message for w in load(body).warnings if w.severity == "warning"]


@pytest.mark.parametrize(
    ("body", "warned"),
    [
        ("final-route-if = equal:${T};x sse:${C}\n", True),
        ("final-route-if-not = empty:${C} sse:${C}\n", False),
        ("final-route-if-not = empty:${C}${D} sse:${C}\n", False),
        ("final-route-if-not = empty:${D} sse:${C}\n", True),
        ("route-if = empty:${C} break:\nroute-run = sse:${C}\n", False),
        ("route-if = empty:${C} log:x\nroute-run = sse:${C}\n", True),  # the guard must stop
        ("route = ^/ sse:prefix-${C}\n", False),
        ("route = ^/(.*) sse:$1\n", True),
        ("route = ^/(.+) sse:$1\n", False),
        ("route = ^/(\\d+)? sse:$1\n", True),
        ("route = ^/(a)|(b) sse:$1\n", True),
        ("route = ^/x sse:server=a:1,subscribe=${C}\n", True),
        ("route = ^/x sse:\n", True),
    ],
)
def test_empty_channel_warning(body: str, warned: bool) -> None:
    assert any("subscribes to the channel ''" in m for m in warnings_of(body)) is warned


@pytest.mark.parametrize(
    ("body", "warned"),
    [
        ("route = ^/x sse:server=${qs[s]},subscribe=x\n", True),
        ("route = ^/x sse:server=${HTTP_X_REDIS},subscribe=x\n", True),
        ("route = ^/x/(.*) sse:server=$1,subscribe=x\n", True),
        ("route = ^/x sse:server=${APP_SERVER},subscribe=x\n", False),  # an app var
        ("route = ^/x sse:server=127.0.0.1:1,subscribe=${qs[c]}\n", False),
        ("route = ^/x sse:${qs[ch]}\n", True),  # '=' in the value selects key=value mode
        ("route = ^/x sse:${base64[HTTP_X]}\n", True),
        ("route = ^/ev/(.*) sse:$1\n", True),
        ("route = ^/ev/(\\d+)$ sse:ch$1\n", False),  # digits cannot hold '='
        ("route = ^/ev/([a-z_]+)$ sse:ch$1\n", False),
        ("route = ^/ev/([^/]+)$ sse:ch$1\n", True),
        ("final-route-if-not = empty:${X-SSE-OFFLOAD} sse:${X-SSE-OFFLOAD}\n", False),
    ],
)
def test_client_controlled_server_warning(body: str, warned: bool) -> None:
    assert any("what the client sends" in m for m in warnings_of(body)) is warned


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("route-run = sse:all\nroute = ^/x sse:x\n", 3),
        ("route = ^ sse:all\nroute-label = l\nroute = ^/x sse:x\n", 4),
        ("route = .* break:\nroute-if = empty:x return:200\n", 3),
        ("route = ^/ sse:all\nroute = ^/x sse:x\n", None),  # "^/" does not match everything
        ("route-run = goto:l\nroute-run = sse:all\nroute-label = l\nroute = ^/x sse:x\n", None),
        ("route-run = goto:${X}\nroute-run = sse:all\nroute = ^/x sse:x\n", None),
        ("route-run = sse:all\nfinal-route-run = log:x\n", None),  # another chain
    ],
)
def test_unreachable_rule_warning(body: str, line: int | None) -> None:
    found = [w for w in load(body).warnings if "can never run" in w.message]
    assert [w.pos.line for w in found if w.pos] == ([line] if line else [])


def test_goto_checks() -> None:
    with pytest.raises(RulesError) as info:
        load("route-label = start\nroute-run = goto:strat\n")
    (error,) = info.value.diagnostics
    assert "no label 'strat' in the request chain (labels: 'start')" in error.message
    assert error.message.endswith("did you mean 'start'?")
    assert any("goto can only jump forward" in m
               for m in warnings_of("route-label = start\nroute-run = goto:start\n"))
    assert warnings_of("route-run = goto:end\nroute-label = end\nroute-run = goto:3\n") == []


def test_other_warnings(tmp_path: Path) -> None:
    messages = warnings_of(
        f"final-route-run = return:200\nroute = ^/ basicauth:R,{tmp_path}/none\n"
        f"route = ^/ static:{tmp_path}/none.html\n"
        "route-if = regexp:${PATH_INFO};${qs[re]} return:200\n"
        "route = ^/ sse:server=a:1\n"
        "error-route-run = log:x\n"
        "route-status = 200 log:x\n"
    )
    assert any("cannot answer in the final chain" in m for m in messages)
    assert any("cannot read the htpasswd file" in m for m in messages)
    assert any("is not a file (requests get 404)" in m for m in messages)
    assert any("regexp pattern is built from what the client sends" in m for m in messages)
    assert any("no subscribe=: every request it routes gets 500" in m for m in messages)
    assert any("the error chain is not supported" in m for m in messages)
    assert any("the request chain has no status" in m for m in messages)


@pytest.mark.parametrize(
    ("a", "b", "apart"),
    [
        ("final-rout-if", "final-route-if", True),
        ("route-iff", "route-if", True),
        ("rotue", "route", True),
        ("static-mpa", "static-map", True),
        ("route", "route", False),
        ("route-if", "route-if-not", False),
        ("mule", "rule", True),
        ("abc", "xyz", False),
    ],
)
def test_one_edit_apart(a: str, b: str, apart: bool) -> None:
    assert one_edit_apart(a, b) is apart
    assert one_edit_apart(b, a) is apart


def test_known_uwsgi_keys_are_not_taken_for_typos() -> None:
    assert warnings_of("master = true\nsocket = :3031\nworkers = 2\n") == [
        "'workers' is not supported yet; ignored"
    ]


def test_the_rule_files_users_start_from_pass_the_check() -> None:
    shipped = sorted((Path(__file__).resolve().parent.parent / "rules").glob("*.ini"))
    assert shipped
    for path in shipped:
        status, out = run_check(str(path))
        assert status == 0, out


@pytest.mark.parametrize("label", ["+2", " 2", "2x", "\t+2"])
def test_goto_targets_the_engine_follows_are_accepted_by_check(label: str) -> None:
    # The engine reads a goto label that names no rule with C atoi, as uWSGI does, so
    # `goto:+2` jumps to rule 2: check must accept it, and say where it goes, as the engine.
    from sse_offload.routing import RequestState, run_chain

    body = (
        f"route-run = goto:{label}\n"
        "route-run = return:500\n"
        "route-run = return:204\n"
    )
    config = load(body)  # raises RulesError if check refused the label
    assert warnings_of(body) == []
    outcome = run_chain(config.request_rules, RequestState({"PATH_INFO": "/"}))
    assert getattr(outcome, "status", None) == 204


def test_a_goto_label_that_is_no_rule_and_no_number_is_an_error() -> None:
    with pytest.raises(RulesError) as info:
        load("route-run = goto:+x\nroute-run = return:204\n")
    assert "not a rule number" in info.value.diagnostics[0].message


@pytest.mark.parametrize("arg", ["psubscribe=news.*", "stream=log", "stream=a;b,history=5"])
def test_patterns_and_stream_keys_are_something_to_listen_to(arg: str) -> None:
    # Only subscribe= was looked for: check said these routes always get 500, which they don't.
    messages = warnings_of(f"route = ^/x sse:{arg}\n")
    assert not any("no subscribe=" in m for m in messages), messages
