"""PATH_INFO from the raw request path."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_offload.routing import normalize_path_info


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/whattimeisit", "/whattimeisit"),
        (b"/", "/"),
        (b"", "/"),
        (b"/a/", "/a/"),
        (b"/a//b", "/a/b"),
        (b"//a///b//", "/a/b/"),
        (b"/a/./b", "/a/b"),
        (b"/./", "/"),
        (b"/a/.", "/a/"),
        (b"/a/../b", "/b"),
        (b"/a/b/..", "/a/"),
        (b"/a/..", "/"),
        (b"/../../etc/passwd", "/etc/passwd"),
        (b"/a/.../b", "/a/.../b"),
        (b"/a/.b/..c", "/a/.b/..c"),
        (b"/x#frag", "/x"),
        (b"/x%23y", "/x#y"),  # only a literal '#' ends the path
        (b"/%41%62", "/Ab"),
        (b"/a%20b", "/a b"),
        (b"/100%%", "/100%"),
        (b"/%%41", "/%41"),
        (b"/a%2Fb", "/a/b"),
        (b"/%zz", "/\x00"),  # uWSGI's hex2num: a bad escape is a NUL byte
        (b"/a%4", "/a"),  # an incomplete escape at the end is dropped
        (b"/a%", "/a"),
        (b"/%e2%82%ac", "/\u20ac"),
        (b"/caf\xe9", "/caf\udce9"),  # any byte survives
        (b"/%ff", "/\udcff"),
        # decided against uWSGI (which keeps "/../"): decode first, then resolve
        (b"/%2e%2e/etc", "/etc"),
        (b"/static/..%2f..%2fsecret", "/secret"),
        (b"relative/x", "/relative/x"),
    ],
)
def test_normalize_path_info(raw: bytes, expected: str) -> None:
    assert normalize_path_info(raw) == expected


_raw_path = st.binary(max_size=40) | st.lists(
    st.sampled_from([b"/", b".", b"..", b"%", b"%2e", b"%2F", b"a", b"#", b"%%", b"\xff"]),
    max_size=15,
).map(b"".join)


def _segments(path: str) -> list[str]:
    return path.split("/")[1:]


@given(raw=_raw_path)
def test_result_never_leaves_the_root(raw: bytes) -> None:
    path = normalize_path_info(raw)
    assert path.startswith("/")
    assert "//" not in path
    inner = _segments(path.rstrip("/")) if path != "/" else []
    assert "." not in inner and ".." not in inner


@given(raw=_raw_path)
def test_result_is_a_fixed_point(raw: bytes) -> None:
    path = normalize_path_info(raw)
    # Re-encoded, the result normalises to itself; with nothing to decode it is idempotent.
    encoded = quote(path.encode("utf-8", "surrogateescape"), safe="/").encode()
    assert normalize_path_info(encoded) == path
    if "%" not in path and "#" not in path:
        assert normalize_path_info(path.encode("utf-8", "surrogateescape")) == path
