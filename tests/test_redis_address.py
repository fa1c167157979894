"""Redis address forms and connection identity (§4.10)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_offload.redis_address import AddressError, RedisAddress, parse_address

CASES = [
    ("127.0.0.1:6379", RedisAddress("tcp", "127.0.0.1", 6379)),
    ("127.0.0.1:4040", RedisAddress("tcp", "127.0.0.1", 4040)),
    ("localhost:6380", RedisAddress("tcp", "localhost", 6380)),
    (":6379", RedisAddress("tcp", "127.0.0.1", 6379)),
    ("[::1]:6379", RedisAddress("tcp", "::1", 6379)),
    ("/tmp/redis.sock", RedisAddress("unix", path="/tmp/redis.sock")),
    ("@abstract", RedisAddress("unix", path="\0abstract")),
    ("redis://h:7000/3", RedisAddress("tcp", "h", 7000, db=3)),
    ("redis://:secret@h", RedisAddress("tcp", "h", 6379, password="secret")),
    ("redis://user:pw@h:1", RedisAddress("tcp", "h", 1, username="user", password="pw")),
    ("rediss://h:6380", RedisAddress("tls", "h", 6380)),
    ("redis://[::1]:6380", RedisAddress("tcp", "::1", 6380)),
    ("unix:///run/r.sock?db=2", RedisAddress("unix", path="/run/r.sock", db=2)),
    ("unix://:pw@/run/r.sock", RedisAddress("unix", path="/run/r.sock", password="pw")),
    (
        "redis-cluster://h1:7000,H2:7001",
        RedisAddress("cluster", path="h1:7000,h2:7001", seeds=(("h1", 7000), ("h2", 7001))),
    ),
    (
        "redis-cluster://:pw@h",
        RedisAddress("cluster", path="h:6379", password="pw", seeds=(("h", 6379),)),
    ),
    (
        "redis-cluster://u:p%40w%2C@[::1]:7000,[::1],h:1,h:1/",
        RedisAddress("cluster", path="[::1]:7000,[::1]:6379,h:1", username="u",
                     password="p@w,", seeds=(("::1", 7000), ("::1", 6379), ("h", 1))),
    ),
    (
        "redis-sentinel://h1:26380,h2/mymaster",
        RedisAddress("sentinel", sentinels=(("h1", 26380), ("h2", 26379)), master_name="mymaster"),
    ),
    (
        "REDIS-SENTINEL://app:p%40ss@[::1]:5000,10.0.0.2:5001/my%20master/2"
        "?sentinel_password=s%3Acret&sentinel_username=watch",
        RedisAddress(
            "sentinel", username="app", password="p@ss", db=2,
            sentinels=(("::1", 5000), ("10.0.0.2", 5001)), master_name="my master",
            sentinel_username="watch", sentinel_password="s:cret",
        ),
    ),
    (
        "redis-sentinel://:pw@s:1/m",
        RedisAddress("sentinel", password="pw", sentinels=(("s", 1),), master_name="m"),
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_address_forms(text: str, expected: RedisAddress) -> None:
    assert parse_address(text) == expected


def test_relative_unix_path_is_resolved_against_cwd() -> None:
    assert parse_address("r.sock").path == os.path.join(os.getcwd(), "r.sock")


@pytest.mark.parametrize(
    "text", [
        "", "h:notaport", "h:70000", "[::1", "redis://", "1:2:3", "unix://", "redis://h/x",
        "redis-cluster://", "redis-cluster://h:1/0", "redis-cluster://h:1,,h:2",
        "redis-cluster://redis://h:1", "redis-cluster://h:x", "redis-cluster://h:1?db=1",
        "redis-cluster:///run/redis.sock",
    ]
)
def test_bad_addresses_raise_address_error(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


@pytest.mark.parametrize(
    "text",
    [
        "redis-sentinel://",
        "redis-sentinel://h:1",
        "redis-sentinel://h:1/",
        "redis-sentinel:///m",
        "redis-sentinel://h:x/m",
        "redis-sentinel://h:1,,h2:2/m",
        "redis-sentinel://h:1,/m",
        "redis-sentinel://h:1/m/x",
        "redis-sentinel://h:1/m/1/2",
        "redis-sentinel://h:1/m?sentinel_pasword=typo",
        "redis-sentinel://[::1/m",
        "redis-sentinel://::1:5/m",
        "redis-sentinel://h 1:5/m",
    ],
)
def test_bad_sentinel_addresses_say_what_was_expected(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


def test_a_sentinel_address_is_one_redis_whatever_the_order_of_its_sentinels() -> None:
    key = parse_address("redis-sentinel://a:1,b:2/m").key
    assert parse_address("redis-sentinel://b:2,A:1/m/4").key == key
    assert parse_address("redis-sentinel://a:1,b:2/other").key != key
    assert parse_address("redis-sentinel://:pw@a:1,b:2/m").key != key
    assert parse_address("redis-sentinel://a:1,b:2/m?sentinel_password=x").key != key


def test_a_sentinel_address_shows_no_password() -> None:
    a = parse_address("redis-sentinel://:pw@a:1,[::1]:2/m?sentinel_password=sp")
    assert str(a) == "redis-sentinel://a:1,[::1]:2/m"
    assert "pw" not in repr(a) and "sp" not in repr(a)


@given(st.text())
def test_any_sentinel_text_parses_and_round_trips_or_raises_address_error(text: str) -> None:
    try:
        a = parse_address("redis-sentinel://" + text)
    except AddressError:
        return
    assert parse_address(a.url) == a


def test_db_does_not_change_the_shared_connection_key() -> None:
    assert parse_address("redis://h:1/0").key == parse_address("redis://h:1/5").key
    assert parse_address("h:1").key == parse_address("redis://h:1").key


def test_credentials_change_the_key() -> None:
    assert parse_address("redis://:a@h:1").key != parse_address("redis://:b@h:1").key
    assert (parse_address("redis-cluster://:a@h:1").key
            != parse_address("redis-cluster://:b@h:1").key)


def test_a_cluster_address_shows_its_seeds_never_its_password() -> None:
    a = parse_address("redis-cluster://user:secret@h1:7000,h2:7000")
    assert str(a) == "redis-cluster://h1:7000,h2:7000"
    assert "secret" not in repr(a)
    assert a.key != parse_address("h1:7000").key


def test_url_round_trips() -> None:
    for text, _ in CASES:
        if text.startswith("@"):
            continue  # an abstract socket has no URL form
        a = parse_address(text)
        assert parse_address(a.url) == a


@given(st.text())
def test_any_text_parses_or_raises_address_error(text: str) -> None:
    try:
        parse_address(text)
    except AddressError:
        pass
