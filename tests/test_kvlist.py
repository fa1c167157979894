"""uWSGI kvlists and the sse action argument."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_offload.config.values import TargetError
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
    got = parse_sse_arg(arg)
    assert (got.channel, got.server, got.buffer_size) == (
        expected.channel, expected.server, expected.buffer_size
    )
    assert got.channels == (() if expected.channel is None else (expected.channel,))


@pytest.mark.parametrize(
    ("template", "expanded", "channels", "error"),
    [
        ("subscribe=a;b", "subscribe=a;b", ("a", "b"), None),
        ("subscribe=$1", "subscribe=a;b", ("a;b",), None),  # a ; from a var does not split
        ("subscribe=$1;$2", "subscribe=a;b;c", None, "lists 3 names where the rule writes 2"),
        ("$1", "subscribe=x,psubscribe=*", None, "psubscribe= came from a request var"),
        ("subscribe=$1", "subscribe=x,stream=k", None, "stream= came from a request var"),
        ("stream=k,subscribe=c", "stream=k,subscribe=c", None, "cannot be mixed"),
        ("subscribe=c,envelope=xml", "subscribe=c,envelope=xml", None, "only envelope is json"),
    ],
)
def test_what_a_rule_writes_decides_lists_and_our_keys(
    template: str, expanded: str, channels: tuple[str, ...] | None, error: str | None
) -> None:
    if error is None:
        assert parse_sse_arg(expanded, template).channels == channels
    else:
        with pytest.raises(TargetError, match=error):
            parse_sse_arg(expanded, template)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,")


_key = st.text(st.characters(blacklist_characters="=,\\"), max_size=8)


@given(items=st.dictionaries(_key, st.text(max_size=20), max_size=5))
def test_escaped_values_round_trip(items: dict[str, str]) -> None:
    text = ",".join(f"{key}={escape(value)}" for key, value in items.items())
    assert parse_kvlist(text) == items


@given(text=st.text(max_size=40))
def test_parse_sse_arg_never_raises_but_target_error(text: str) -> None:
    try:
        target = parse_sse_arg(text)
    except TargetError:
        assert "=" in text
        return
    assert target.buffer_size > 0
    if "=" not in text:
        assert target == SseTarget(text, None, 4096, channels=(text,))
