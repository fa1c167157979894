"""``sse-offload explain``: the engine's own walk of the chains, printed."""

from __future__ import annotations

import base64
import io
import subprocess
from pathlib import Path

import pytest

from sse_offload.cli import _parser, explain_command
from test_check import README_CONFIGS, sse_offload_command


def explain(tmp_path: Path, rules: str, *args: str) -> tuple[int, str]:
    path = tmp_path / "rules.ini"
    path.write_text(rules if rules.startswith("[uwsgi]") else "[uwsgi]\n" + rules)
    out = io.StringIO()
    status = explain_command(_parser().parse_args(["explain", str(path), *args]), out)
    return status, out.getvalue()


def test_readme_app_governed_config_fires_sse_in_the_final_chain(tmp_path: Path) -> None:
    path = tmp_path / "clock.ini"
    path.write_text(README_CONFIGS["app_governed"])
    done = subprocess.run(
        [*sse_offload_command(), "explain", str(path), "GET /whattimeisit",
         "--var", "X-SSE-OFFLOAD=clock"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rule = "final-route-if-not = empty:${X-SSE-OFFLOAD} sse:${X-SSE-OFFLOAD}"
    (at,) = [i for i, line in enumerate(lines) if line.endswith(rule)]
    assert lines[at].startswith(f"  {path}:16  [0] ")
    assert lines[at + 1] == "      read X-SSE-OFFLOAD='clock'"
    assert lines[at + 2] == "      fired (condition is false): offload sse:clock"
    assert lines[-1].startswith(f"outcome: offload from the final chain ({path}:16:")
    assert "sse stream of channel 'clock' on the default Redis" in lines[-1]
    assert "app var X-SSE-OFFLOAD='clock'" in done.stdout


def test_without_the_var_the_app_response_passes_through(tmp_path: Path) -> None:
    status, out = explain(tmp_path, README_CONFIGS["app_governed"], "GET /whattimeisit")
    assert status == 0
    assert "      not fired: condition is true" in out
    assert out.splitlines()[-1] == "outcome: pass the response of the app through (200)"


def test_request_chain_offload_and_ignored_final_offload(tmp_path: Path) -> None:
    status, out = explain(
        tmp_path,
        "route = ^/events/(\\d+)$ sse:ch$1\nfinal-route-run = sse:other\n",
        "GET /events/42?x=1",
    )
    assert status == 0
    assert "      read PATH_INFO='/events/42'" in out
    assert "      fired (regex matched '/events/42'): offload sse:ch42" in out
    assert "sse:other ignored: the request is already a stream" in out
    assert "outcome: offload from the request chain" in out
    assert "sse stream of channel 'ch42' on the default Redis" in out


def test_each_rule_considered_is_listed_with_why(tmp_path: Path) -> None:
    rules = (
        "route-run = goto:auth\n"
        "route = ^/ return:500\n"
        "route-label = auth\n"
        "route = ^/private basicauth:Area,ann:pw\n"
        "route-if = equal:${REMOTE_USER};ann sse:ann\n"
    )
    token = base64.b64encode(b"ann:pw").decode()
    status, out = explain(tmp_path, rules, "GET /private", "-H", f"Authorization: Basic {token}")
    assert status == 0
    assert "      fired (always runs): jump to rule 2" in out
    assert "      skipped: skipped by goto" in out
    assert "      skipped: label 'auth'" in out
    assert "authenticated REMOTE_USER='ann'" in out
    assert "      read REMOTE_USER='ann'" in out
    assert "sse stream of channel 'ann'" in out.splitlines()[-1]
    status, out = explain(tmp_path, rules, "GET /private")
    assert out.splitlines()[-1].startswith("outcome: answer 401, realm 'Area' (request chain")


def test_static_map_404_and_status_rules(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("x")
    rules = (
        f"static-map = /page={tmp_path}/page.html\n"
        "final-route-status = 404 log:missing ${REQUEST_URI}\n"
    )
    _, out = explain(tmp_path, rules, "GET /page")
    assert f"outcome: serve the file {tmp_path}/page.html (static-map" in out
    _, out = explain(tmp_path, rules, "/nothing")
    assert "      fired (status matched): logged 'missing /nothing'; next rule" in out
    assert out.splitlines()[-1] == "outcome: 404 Not Found (made by the gateway)"


def test_response_headers_and_status_simulate_an_app(tmp_path: Path) -> None:
    status, out = explain(
        tmp_path, README_CONFIGS["pull_channel"], "GET /news",
        "--response-header", "Content-Type: event/stream",
        "--response-header", "X-SSE-Channel: foobar", "--status", "200",
    )
    assert status == 0
    assert "header var RESPONSE_TYPE='event/stream'" in out
    assert "header var X_SSE_CHANNEL='foobar'" in out
    assert "response head: 200 Content-Type: event/stream" in out  # the pulled one is gone
    assert "sse stream of channel 'foobar'" in out.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nonsense request"], "expected 'METHOD /path[?query] [HTTP/1.x]'"),
        (["GET /", "-H", "NoColon"], "expected 'Name: value'"),
        (["GET /", "--var", "novalue"], "expected NAME=VALUE"),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    status, out = explain(tmp_path, "route = ^/ sse:x\n", *args)
    assert status == 2 and message in out


def test_rules_errors_exit_1(tmp_path: Path) -> None:
    status, out = explain(tmp_path, "route = ^/ nosuch:x\n", "GET /")
    assert status == 1 and ":2:12: error: unknown action 'nosuch'" in out
