"""``$N`` and ``${VAR}`` translation of action arguments."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_offload.routing import expand
from sse_offload.routing.expand import translate

CAPS = ("/events/42/x", "42", "x")  # $0, $1, $2


@pytest.mark.parametrize(
    ("template", "captures", "expected"),
    [
        ("channel_$1", CAPS, "channel_42"),
        ("$0", CAPS, "/events/42/x"),
        ("$1-$2", CAPS, "42-x"),
        ("$3", CAPS, ""),  # above the group count
        ("a$9b", CAPS, "ab"),
        ("$12", CAPS, "422"),  # single digit only
        ("$1", ("/a", None), ""),  # group did not take part
        ("$0", ("/a",), "/a"),  # a regex without groups still has its whole match
        ("$0$1", (), ""),  # a rule without regex has no captures
        ("a$", CAPS, "a"),  # a lone '$' at the very end is dropped
        ("$", CAPS, ""),
        ("$x", CAPS, "$x"),
        ("$$1", CAPS, "$$1"),  # '$' and its follower go as a pair, as in uWSGI
        ("$²", CAPS, "$²"),  # only ASCII digits are captures
        ("100$ off", CAPS, "100$ off"),
        ("no dollars", CAPS, "no dollars"),
    ],
)
def test_capture_pass(template: str, captures: tuple[str | None, ...], expected: str) -> None:
    assert expand(template, captures, {}) == expected


VARS = {
    "A": "va",
    "X-SSE-OFFLOAD": "clock",
    "QUERY_STRING": "a=1&ch=news&ch=other&empty=&e2=&e2=late&eq=a=b&enc=a%20b",
    "HTTP_COOKIE": "sid=; sid=abc ;theme=dark;  spaced = no ; tail=t  ",
    "odd[x]": "plain var",
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${A}", "va"),
        ("[${A}]", "[va]"),
        ("${MISSING}", ""),
        ("${X-SSE-OFFLOAD}", "clock"),
        ("${a}", ""),  # exact, case-sensitive names
        ("${}", ""),
        ("${A}}", "va}"),
        ("${A", "${A"),  # unterminated: kept as written
        ("x${", "x${"),
        ("${{A}", ""),  # the key ends at the first '}': "{A" is looked up
        ("$A", "$A"),
        ("$${A}", "$${A}"),  # '$$' goes out as a pair, so '{A}' is plain text
        ("${qs[ch]}", "news"),  # the first match
        ("${qs[empty]}", ""),
        ("${qs[e2]}", "late"),  # an empty value counts as missing: the search goes on
        ("${qs[eq]}", "a=b"),
        ("${qs[enc]}", "a%20b"),  # not URL-decoded
        ("${qs[CH]}", ""),
        ("${qs[nope]}", ""),
        ("${cookie[sid]}", "abc"),
        ("${cookie[theme]}", "dark"),
        ("${cookie[tail]}", "t"),
        ("${cookie[spaced]}", ""),  # the key is "spaced " before '='
        ("${cookie[nope]}", ""),
        ("${odd[x]}", "plain var"),  # not a route var: the whole text is a var name
        ("${qs[a]}${cookie[theme]}", "1dark"),
    ],
)
def test_variable_pass(template: str, expected: str) -> None:
    assert expand(template, (), VARS) == expected


def test_route_vars_read_missing_query_and_cookie_as_empty() -> None:
    assert expand("${qs[a]}|${cookie[a]}", (), {}) == "|"


def test_variable_pass_runs_over_the_capture_output() -> None:
    # As uWSGI: a capture that contains ${...} is expanded again in pass 2.
    assert expand("$1", ("/x", "${A}"), VARS) == "va"


def test_captured_dollar_digit_is_not_expanded_twice() -> None:
    assert expand("$1", ("/x", "$2"), VARS) == "$2"


@pytest.mark.parametrize(
    ("template", "expanded"),
    [
        ("clock", False),
        ("a$", False),
        ("$x", False),
        ("${A", False),
        ("$1", True),
        ("$7", True),
        ("${MISSING}", True),
        ("${qs[ch]}", True),
    ],
)
def test_translate_says_whether_anything_was_substituted(template: str, expanded: bool) -> None:
    assert translate(template, CAPS, VARS)[1] is expanded


_template = st.text(st.sampled_from(list("${}[]0123456789abqsckie=;&%\\ ")), max_size=30)


@given(
    template=_template | st.text(max_size=30),
    captures=st.lists(st.none() | st.text(max_size=5), max_size=11),
    vars=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=5),
)
def test_expand_never_raises(
    template: str, captures: list[str | None], vars: dict[str, str]
) -> None:
    assert isinstance(expand(template, captures, vars), str)


@given(text=st.text().filter(lambda s: "$" not in s))
def test_text_without_dollar_is_unchanged(text: str) -> None:
    assert translate(text, ("x", "y"), {"A": "b"}) == (text, False)


# --- route vars of the complete language --------------------------------------

from sse_offload.routing import ROUTE_VARS, RequestState  # noqa: E402
from sse_offload.routing.expand import translate as translate_with_state  # noqa: E402

NOW = 1420070400.25  # 2015-01-01T00:00:00.25Z


def clocked_state(**vars: str) -> RequestState:
    state = RequestState(dict(vars), clock=lambda: NOW, start=NOW - 0.0015)
    state.status = None
    return state


ROUTE_VAR_TABLE = [
    ("${time[unix]}", {}, "1420070400"),
    ("${time[micros]}", {}, "1420070400250000"),
    ("${time[nope]}", {}, ""),
    ("${httptime[]}", {}, "Thu, 01 Jan 2015 00:00:00 GMT"),
    ("${httptime[3600]}", {}, "Thu, 01 Jan 2015 01:00:00 GMT"),
    ("${httptime[-86400]}", {}, "Wed, 31 Dec 2014 00:00:00 GMT"),
    ("${httptime[x]}", {}, "Thu, 01 Jan 2015 00:00:00 GMT"),  # atoi: garbage is 0
    ("${uwsgi[status]}", {}, "0"),  # no response yet
    ("${uwsgi[rtime]}", {}, "1500"),
    ("${uwsgi[sor]}", {}, "1420070400248500"),
    ("${uwsgi[wid]}", {}, "1"),
    ("${uwsgi[lq]}", {}, ""),
    ("${mime[F]}", {"F": "/x/clock.html"}, "text/html"),
    ("${mime[F]}", {"F": "a.css"}, "text/css"),
    ("${mime[F]}", {"F": "noext"}, ""),
    ("${mime[F]}", {}, ""),
    ("${base64[V]}", {"V": "user:pw"}, "dXNlcjpwdw=="),
    ("${base64[V]}", {}, ""),
    ("${hex[V]}", {"V": "Az\udcff"}, "417aff"),  # any byte survives (surrogateescape)
    ("${upper[V]}", {"V": "abc-é"}, "ABC-é"),  # ASCII only, as C toupper
    ("${lower[V]}", {"V": "ABC-É"}, "abc-É"),
    ("${upper[NOPE]}", {}, ""),
    ("${lower[qs[a]]}", {"qs[a]": "X"}, "x"),  # the argument is a var name, looked up as is
    ("${nofn[x]}", {"nofn[x]": "plain"}, "plain"),
]


@pytest.mark.parametrize(("template", "vars", "expected"), ROUTE_VAR_TABLE)
def test_route_vars(template: str, vars: dict[str, str], expected: str) -> None:
    assert translate_with_state(template, (), vars, clocked_state(**vars))[0] == expected


def test_uwsgi_uuid_is_stable_within_a_request_and_differs_between_requests() -> None:
    one, two = clocked_state(), clocked_state()
    a = translate_with_state("${uwsgi[uuid]}", (), {}, one)[0]
    assert len(a) == 36 and a.count("-") == 4
    assert translate_with_state("${uwsgi[uuid]}", (), {}, one)[0] == a
    assert translate_with_state("${uwsgi[uuid]}", (), {}, two)[0] != a


def test_uwsgi_status_and_pid() -> None:
    import os

    state = clocked_state()
    state.status = 404
    assert translate_with_state("${uwsgi[status]} ${uwsgi[pid]}", (), {}, state)[0] == (
        f"404 {os.getpid()}"
    )


def test_every_route_var_has_a_table_row() -> None:
    tested = {row[0][2:].split("[", 1)[0] for row in ROUTE_VAR_TABLE} | {"qs", "cookie"}
    assert set(ROUTE_VARS) <= tested


def test_reads_record_every_lookup_with_its_value() -> None:
    reads: list[tuple[str, str]] = []
    translate_with_state("${A}-${qs[x]}-${B}", (), {"A": "1", "QUERY_STRING": "x=2"}, None, reads)
    assert reads == [("A", "1"), ("qs[x]", "2"), ("B", "")]


@given(
    template=_template | st.text(max_size=30),
    captures=st.lists(st.none() | st.text(st.sampled_from("ab$}{1"), max_size=4), max_size=4),
)
def test_fast_paths_expand_exactly_as_the_two_passes(
    template: str, captures: list[str | None]
) -> None:
    from sse_offload.routing.expand import _captures_pass, _vars_pass

    vars = {"A": "va", "QUERY_STRING": "ch=x", "${A}": "odd", "": "empty-name"}
    pass1, r1 = _captures_pass(template, captures)
    pass2, r2 = _vars_pass(pass1, vars)
    assert translate(template, captures, vars) == (pass2, r1 or r2)
