"""Property tests: any text fed to the reader either loads or raises RulesError, and every
error points inside the file (issue 3, acceptance 3)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_offload.config import Config, RulesError, parse_rules_text
from sse_offload.config.actions import KNOWN_ACTIONS
from sse_offload.config.grammar import KNOWN_CONDITIONS
from sse_offload.config.loader import ROUTING_KEYS
from sse_offload.routing import RequestState, respond, run_chain

KEYS = [
    *sorted(ROUTING_KEYS),
    "static-map", "mule", "collect-header", "pull-header", "add-header", "del-header",
    "plugin", "final-rout-if", "x",
]
_piece = st.sampled_from(
    [*KNOWN_ACTIONS, *KNOWN_CONDITIONS, "^/", "(", ")", "[", "$1", "$", "${A}", "${qs[a]}",
     "%d", "%%", "%(x)", "$(HOME)", "@(", ")", ":", ";", " ", "\t", "=", ",", "/", "\\",
     "label", "404", "a", "é", "\udcff", "\r", "{", "}", "0"]
)
_value = st.lists(_piece, max_size=12).map("".join)
_line = st.one_of(
    st.tuples(st.sampled_from(KEYS), _value).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.text(max_size=40),
    st.just("[uwsgi]"),
    st.just("[other]"),
)
_file = st.lists(_line, max_size=12).map(lambda lines: "[uwsgi]\n" + "\n".join(lines))


def _check(text: str) -> Config | None:
    lines = text.split("\n")
    try:
        config = parse_rules_text(text, "p.ini", {"HOME": "/home/x"})
    except RulesError as exc:
        assert exc.diagnostics
        for diagnostic in exc.diagnostics:
            assert diagnostic.severity == "error"
            pos = diagnostic.pos
            assert pos is not None and pos.file == "p.ini"
            assert 1 <= pos.line <= len(lines), (pos, text)
            line = lines[pos.line - 1].rstrip("\r")
            assert pos.text == line
            assert 1 <= pos.col <= len(line) + 1, (pos, line)
            diagnostic.format()
        str(exc)
        return None
    for warning in config.warnings:
        assert warning.severity in ("warning", "note")
        warning.format()
    return config


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(text=_file)
def test_rule_like_text_loads_or_raises_rules_error_inside_the_file(text: str) -> None:
    config = _check(text)
    if config is not None:
        # Whatever loads also runs: the engine never raises on a loaded config.
        state = RequestState({"PATH_INFO": "/a", "QUERY_STRING": "a=1", "REMOTE_ADDR": "::1"})
        run_chain(config.request_rules, state)
        respond(config, state, 200, [("Content-Type", "text/plain")])


@settings(max_examples=300)
@given(text=st.text(max_size=300))
def test_arbitrary_text_loads_or_raises_rules_error_inside_the_file(text: str) -> None:
    _check(text)
    _check("[uwsgi]\n" + text)
