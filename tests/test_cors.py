"""``--cors-origins`` as pure functions (cors.py), table-driven, and on both HTTP paths in
memory (memory_helpers.Memory). End to end: tests/test_stream_access.py."""

from __future__ import annotations

import pytest

from memory_helpers import Memory
from sse_offload.cors import CorsError, CorsPolicy, combine

APP = "https://app.example"
LISTED = CorsPolicy.parse(f"{APP}, http://localhost:8000")
BOTH = CorsPolicy.parse(f"{APP},*")
STAR = CorsPolicy.parse("*")


@pytest.mark.parametrize(
    ("text", "origins", "any_origin"),
    [
        ("https://app.example", {"https://app.example"}, False),
        ("HTTPS://App.Example:443/", {"https://app.example"}, False),  # as a browser sends it
        ("http://localhost:8000, *", {"http://localhost:8000"}, True),
        ("http://[::1]:9000", {"http://[::1]:9000"}, False),
        ("http://a.example:80,,https://b.example:8443",
         {"http://a.example", "https://b.example:8443"}, False),
        ("*", set(), True),
    ],
)
def test_parse(text: str, origins: set[str], any_origin: bool) -> None:
    assert CorsPolicy.parse(text) == CorsPolicy(frozenset(origins), any_origin)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no origin given"),
        (" , ", "no origin given"),
        ("app.example", "is not an origin"),
        ("ftp://app.example", "is not an origin"),
        ("https://app.example/path", "more than scheme://host[:port]"),
        ("https://app.example?x=1", "more than scheme://host[:port]"),
        ("https://user@app.example", "more than scheme://host[:port]"),
        ("https://app.example:99999", "bad port"),
        ("https://*.app.example", "no wildcards"),
    ],
)
def test_parse_refuses_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(CorsError, match=why.replace("[", r"\[").replace("?", r"\?")):
        CorsPolicy.parse(text)


ALLOW = b"Access-Control-Allow-Origin"
CREDENTIALS = (b"Access-Control-Allow-Credentials", b"true")
VARY = (b"Vary", b"Origin")


@pytest.mark.parametrize(
    ("policy", "origin", "headers"),
    [
        # a listed origin: itself, with credentials
        (LISTED, APP, [(ALLOW, APP.encode()), CREDENTIALS, VARY]),
        (LISTED, "http://localhost:8000", [(ALLOW, b"http://localhost:8000"), CREDENTIALS, VARY]),
        # another one: nothing but Vary (the answer depends on the origin)
        (LISTED, "https://evil.example", [VARY]),
        (LISTED, "null", [VARY]),
        (LISTED, None, [VARY]),
        # "*" listed: other origins read without credentials, never with
        (BOTH, APP, [(ALLOW, APP.encode()), CREDENTIALS, VARY]),
        (BOTH, "https://evil.example", [(ALLOW, b"*"), VARY]),
        (STAR, "https://evil.example", [(ALLOW, b"*")]),
        (STAR, None, []),
    ],
)
def test_headers(policy: CorsPolicy, origin: str | None, headers: list) -> None:
    assert policy.headers(origin) == headers


@pytest.mark.parametrize(
    ("policy", "origin", "status", "allow_origin", "credentials"),
    [
        (LISTED, APP, 204, APP.encode(), True),
        (LISTED, "https://evil.example", 403, None, False),
        (BOTH, "https://evil.example", 204, b"*", False),
        (STAR, APP, 204, b"*", False),
    ],
)
def test_preflight(policy: CorsPolicy, origin: str, status: int, allow_origin: bytes | None,
                   credentials: bool) -> None:
    got_status, headers = policy.preflight(origin)
    named = dict(headers)
    assert got_status == status
    assert named.get(ALLOW) == allow_origin
    assert (CREDENTIALS in headers) is credentials
    if status == 204:
        assert named[b"Access-Control-Allow-Methods"] == b"GET, HEAD, OPTIONS"
        assert b"Authorization" in named[b"Access-Control-Allow-Headers"]
        assert b"Last-Event-ID" in named[b"Access-Control-Allow-Headers"]


def test_an_options_request_without_origin_is_not_a_preflight() -> None:
    assert LISTED.preflight(None) == (204, [(b"Allow", b"GET, HEAD, OPTIONS")])


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({}, [(ALLOW, b"o"), CREDENTIALS, VARY]),
        # a rule's (or the app's) own CORS header wins whole: none of ours
        ({b"access-control-allow-origin": [b"https://own.example"]}, [VARY]),
        ({b"access-control-allow-credentials": [b"true"]}, [VARY]),
        # Vary: Origin joins what is there, once
        ({b"vary": [b"Accept-Encoding"]}, [(ALLOW, b"o"), CREDENTIALS,
                                           (b"Vary", b"Accept-Encoding, Origin")]),
        ({b"vary": [b"accept, origin"]}, [(ALLOW, b"o"), CREDENTIALS]),
        ({b"vary": [b"*"]}, [(ALLOW, b"o"), CREDENTIALS]),
    ],
)
def test_combine(present: dict[bytes, list[bytes]], expected: list) -> None:
    assert combine([(ALLOW, b"o"), CREDENTIALS, VARY], present) == expected


# -- in memory, both paths -----------------------------------------------------------------

RULES = """\
[uwsgi]
route = ^/ev/(.*)$ sse:$1
route = ^/own/ addheader:Access-Control-Allow-Origin: https://own.example
route = ^/own/(.*)$ sse:$1
"""
FAST = "GET {path} HTTP/1.1\r\nHost: a\r\nOrigin: {origin}\r\n\r\n"
SLOW = "GET {path} HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nOrigin: {origin}\r\n\r\n"


def head(m: Memory, form: str, path: str, origin: str) -> list[tuple[bytes, bytes]]:
    _, transport = m.connect(form.format(path=path, origin=origin).encode())
    lines = transport.value().split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    return [tuple(line.split(b": ", 1)) for line in lines]  # type: ignore[misc]


@pytest.mark.parametrize("form", [FAST, SLOW], ids=["fast path", "twisted.web"])
def test_both_paths_put_the_same_cors_headers_on_a_stream(form: str) -> None:
    m = Memory(RULES, cors=BOTH)
    got = head(m, form, "/ev/news", APP)
    assert (ALLOW, APP.encode()) in got and CREDENTIALS in got and VARY in got
    got = head(m, form, "/ev/news", "https://evil.example")
    assert (ALLOW, b"*") in got and CREDENTIALS not in got


def test_a_rules_addheader_of_the_same_header_wins() -> None:
    m = Memory(RULES, cors=BOTH)
    got = head(m, FAST, "/own/news", APP)
    assert [v for n, v in got if n == ALLOW] == [b"https://own.example"]
    assert CREDENTIALS not in got and VARY in got


def test_without_cors_origins_no_header_is_added() -> None:
    m = Memory(RULES)
    for form in (FAST, SLOW):
        assert not [n for n, _ in head(m, form, "/ev/news", APP) if n.startswith(b"Access")]
