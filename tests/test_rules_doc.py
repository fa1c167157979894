"""docs/rules.md runs: every ``ini`` block is saved as rules.ini and each ``console`` block
after it is run against it, the output compared with the text shown (``…`` elides)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from passlib.hash import apr_md5_crypt, ldap_sha1

from sse_offload.cli import check, main
from sse_offload.config.actions import ACTION_TABLE
from sse_offload.config.grammar import CONDITION_NAMES
from sse_offload.config.loader import ROUTING_KEYS
from sse_offload.routing import ROUTE_VARS

ACTION_NAMES = {spec.name: spec.aliases for spec in ACTION_TABLE}

DOC = Path(__file__).resolve().parent.parent / "docs" / "rules.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


@dataclass
class Example:
    """An ini block of the doc and the console blocks that follow it."""

    line: int
    ini: str
    consoles: list[tuple[int, str]] = field(default_factory=list)


def examples() -> list[Example]:
    text = DOC.read_text()
    found: list[Example] = []
    for match in _FENCE.finditer(text):
        kind, body = match.group(1), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        if kind == "ini":
            found.append(Example(line, body))
        elif kind == "console":
            assert found, f"docs/rules.md:{line}: a console block before any ini block"
            found[-1].consoles.append((line, body))
    return found


def commands(body: str) -> list[tuple[str, list[str]]]:
    """(command line, expected output lines) of a console block."""
    out: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            assert out, f"output before any command: {line!r}"
            out[-1][1].append(line)
    return out


def _pattern(line: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in line.split("…")))


def matches(expected: list[str], actual: list[str]) -> str | None:
    """None if ``actual`` fits ``expected`` (runs of lines between ``…`` lines appear in
    order, contiguous; without a leading/trailing ``…`` they start/end the output), else
    what went wrong."""
    groups: list[list[str]] = [[]]
    for line in expected:
        if line == "…":
            groups.append([])
        else:
            groups[-1].append(line)
    position = 0
    for number, group in enumerate(groups):
        if not group:
            continue
        anchored = number == 0
        starts = [position] if anchored else range(position, len(actual) - len(group) + 1)
        for start in starts:
            window = actual[start : start + len(group)]
            if len(window) == len(group) and all(
                _pattern(e).fullmatch(a) for e, a in zip(group, window, strict=True)
            ):
                position = start + len(group)
                break
        else:
            return f"not found in order: {group!r}"
    if groups[-1] and position != len(actual):
        return f"output goes on after {groups[-1][-1]!r}: {actual[position:]!r}"
    return None


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory the examples run in (the files docs/rules.md says it holds)."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("<h1>home</h1>\n")
    (tmp_path / "www" / "app.js").write_text("console.log('app')\n")
    (tmp_path / "users.htpasswd").write_text(
        f"bob:{ldap_sha1.hash('s3cret')}\namy:{apr_md5_crypt.hash('pa55')}\n"
    )
    (tmp_path / "channel.txt").write_text("news\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSE_CHANNEL", "alerts")
    return tmp_path


ALL = examples()


@pytest.mark.parametrize("example", ALL, ids=[f"line{e.line}" for e in ALL])
def test_example(example: Example, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "rules.ini").write_text(example.ini)
    runs = [cmd for _, body in example.consoles for cmd in commands(body)]
    if not any(shlex.split(line)[1] == "check" for line, _ in runs):
        assert check(["rules.ini"]) == 0, "the example does not load"
        capsys.readouterr()
    problems = []
    for line, expected in runs:
        argv = shlex.split(line)
        assert argv[0] == "sse-offload"
        main(argv[1:])
        actual = capsys.readouterr().out.splitlines()
        problem = matches(expected, actual)
        if problem is not None:
            problems.append(f"$ {line}\n{problem}\nactual output:\n" + "\n".join(actual))
    assert not problems, "\n\n".join(problems)


def test_the_examples_use_every_key_condition_action_and_route_var() -> None:
    text = "\n".join(e.ini for e in ALL)
    keys = {line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line}
    routing = {k for k in ROUTING_KEYS if not k.startswith(("final-", "response-", "error-"))}
    missing = (routing | {"final-route-status", "response-route-status", "final-route-run",
                          "final-route-if", "final-route-if-not", "static-map",
                          "collect-header", "response-header-collect", "pull-header",
                          "add-header", "del-header", "rem-header"}) - keys
    assert not missing, f"keys without an example: {sorted(missing)}"
    names = [*ACTION_NAMES, *(a for v in ACTION_NAMES.values() for a in v),
             *CONDITION_NAMES, *(a for v in CONDITION_NAMES.values() for a in v)]
    missing = [n for n in names if not re.search(rf"[ =]{re.escape(n)}:", text)]
    assert not missing, f"actions/conditions without an example: {missing}"
    missing = [n for n in ROUTE_VARS if f"${{{n}[" not in text]
    assert not missing, f"route vars without an example: {missing}"


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        (["a", "…", "c"], ["a", "b", "c"], True),
        (["a", "c"], ["a", "b", "c"], False),
        (["…", "b"], ["a", "b"], True),
        (["…", "b"], ["a", "b", "c"], False),
        (["…", "x…z", "…"], ["xyz"], True),
        (["b"], ["a", "b"], False),
    ],
)
def test_the_matcher(expected: list[str], actual: list[str], ok: bool) -> None:
    assert (matches(expected, actual) is None) is ok
