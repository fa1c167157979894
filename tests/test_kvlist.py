"""uWSGI kvlists and the sse action argument."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_offload.routing import SseTarget, parse_kvlist, parse_sse_arg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "server=127.0.0.1:4040,subscribe=foobar",
            {"server": "127.0.0.1:4040", "subscribe": "foobar"},
        ),
        ("server=a, subscribe=x", {"server": "a", " subscribe": "x"}),  # no trimming
        ("k = v", {"k ": " v"}),
        ("a=1,novalue,b=2", {"a": "1", "b": "2"}),  # items without '=' are ignored
        ("a=1,a=2", {"a": "2"}),  # the last one wins
        ("a=b=c:d", {"a": "b=c:d"}),  # the value runs from the first '='
        ("a=", {"a": ""}),
        ("=x", {"": "x"}),
        ("", {}),
        (",,", {}),
        ("a=x\\,y,b=2", {"a": "x,y", "b": "2"}),  # backslash escapes the comma
        ("a=x\\\\,b=2", {"a": "x\\", "b": "2"}),  # ... and itself
        ("a=x\\y", {"a": "xy"}),  # any escaped character is kept, the backslash dropped
        ("a=x\\", {"a": "x"}),  # a trailing backslash vanishes
        ("k\\=x=y", {"k": "x=y"}),  # the comma pass removed the escape: '=' splits here
        ("k\\\\\\=x=y", {"kx": "y"}),  # an escaped char inside a key is dropped (uWSGI)
        ("Subscribe=x", {"Subscribe": "x"}),
    ],
)
def test_parse_kvlist(text: str, expected: dict[str, str]) -> None:
    assert parse_kvlist(text) == expected


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("clock", SseTarget("clock", None, 4096)),
        ("a,b", SseTarget("a,b", None, 4096)),  # single mode: taken verbatim
        ("a b:c", SseTarget("a b:c", None, 4096)),
        ("", SseTarget("", None, 4096)),  # empty is the empty channel, not a missing one
        ("server=127.0.0.1:4040,subscribe=foobar", SseTarget("foobar", "127.0.0.1:4040", 4096)),
        ("subscribe=foo,server=/tmp/r.sock", SseTarget("foo", "/tmp/r.sock", 4096)),
        ("server=127.0.0.1:4040", SseTarget(None, "127.0.0.1:4040", 4096)),  # no channel
        ("subscribe=a=b", SseTarget("a=b", None, 4096)),
        ("x=1", SseTarget(None, None, 4096)),  # any '=' selects kv mode
        ("Subscribe=x", SseTarget(None, None, 4096)),  # keys are case-sensitive
        ("server=a, subscribe=x", SseTarget(None, "a", 4096)),  # " subscribe" is not a key
        ("subscribe=x,unknown=1", SseTarget("x", None, 4096)),
        ("subscribe=x,buffer_size=8192", SseTarget("x", None, 8192)),
        ("subscribe=x,buffer_size=0", SseTarget("x", None, 4096)),
        ("subscribe=x,buffer_size=big", SseTarget("x", None, 4096)),
        ("subscribe=x,buffer_size=", SseTarget("x", None, 4096)),
        ("subscribe=x,buffer_size=12k", SseTarget("x", None, 12)),  # C atoi
        ("subscribe=x,buffer_size= +32", SseTarget("x", None, 32)),
        ("subscribe=x,buffer_size=-5", SseTarget("x", None, 4096)),
        ("subscribe=a\\,b", SseTarget("a,b", None, 4096)),
    ],
)
def test_parse_sse_arg(arg: str, expected: SseTarget) -> None:
    assert parse_sse_arg(arg) == expected


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,")


_key = st.text(st.characters(blacklist_characters="=,\\"), max_size=8)


@given(items=st.dictionaries(_key, st.text(max_size=20), max_size=5))
def test_escaped_values_round_trip(items: dict[str, str]) -> None:
    text = ",".join(f"{key}={escape(value)}" for key, value in items.items())
    assert parse_kvlist(text) == items


@given(text=st.text(max_size=40))
def test_parse_sse_arg_never_raises(text: str) -> None:
    target = parse_sse_arg(text)
    assert target.buffer_size > 0
    if "=" not in text:
        assert target == SseTarget(text, None, 4096)
