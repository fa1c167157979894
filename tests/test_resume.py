"""Redis Streams mode end to end: ids, Last-Event-ID resume, reset, history, several keys.

Real gateway subprocesses, a real redis-server and raw sockets (sse_client.py). A
publisher XADDs; the stream entry id is the event id a client resumes from.
"""

from __future__ import annotations

import json

import pytest

from gateway_helpers import wait_for
from redis_helpers import RedisServer
from sse_client import SSEClient

RULES = """\
[uwsgi]
route = ^/s/([a-z0-9]+)$ sse:stream=$1
route = ^/h/([a-z0-9]+)$ sse:stream=$1,history=5
route = ^/m/([a-z]+)/([a-z]+)$ sse:stream=$1;$2
route = ^/r/([a-z0-9]+)$ sse:stream=$1,reset=gone
route = ^/e/([a-z0-9]+)$ sse:stream=$1,envelope=json
"""


def parsed(client: SSEClient) -> list[dict[str, str]]:
    """Every complete event of the body with its fields (comments skipped)."""
    out = []
    for block in client.body.split(b"\n\n")[:-1]:
        fields: dict[str, str] = {}
        for line in block.decode().split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = fields[name] + "\n" + value if name in fields else value
        if "data" in fields or "event" in fields:
            out.append(fields)
    return out


def read(client: SSEClient, count: int, timeout: float = 10.0) -> list[dict[str, str]]:
    client.read_until(lambda c: len(parsed(c)) >= count, timeout, f"{count} events")
    return parsed(client)


def xadd(redis, key: str, data: str, *fields: str) -> str:
    return redis.call("XADD", key, "*", "data", data, *fields).decode()


def test_a_reconnect_with_last_event_id_gets_exactly_the_missed_events(
    gateway_factory, redis_server, redis
) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address).start()
    first = SSEClient(gw.port, "/s/resume1")
    assert first.read_head() == 200
    # The reader is positioned once XREAD runs; an entry added after the head is live.
    wait_for(lambda: _readers(redis) >= 1, what="the gateway's XREAD")
    xadd(redis, "resume1", "before")
    events = read(first, 1)
    assert events[0]["data"] == "before"
    last = events[0]["id"]
    first.close()

    ids = [xadd(redis, "resume1", f"m{i}") for i in range(100)]
    again = SSEClient(gw.port, "/s/resume1", headers={"Last-Event-ID": last})
    events = read(again, 100)
    assert [e["data"] for e in events] == [f"m{i}" for i in range(100)]
    assert [e["id"] for e in events] == ids
    xadd(redis, "resume1", "live")
    events = read(again, 101)
    assert events[100]["data"] == "live" and len(events) == 101  # no duplicate at the seam


def test_the_query_string_id_resumes_too_and_history_serves_fresh_clients(
    gateway_factory, redis_server, redis
) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address).start()
    ids = [xadd(redis, "hist1", f"h{i}") for i in range(8)]
    fresh = SSEClient(gw.port, "/h/hist1")
    assert [e["data"] for e in read(fresh, 5)] == [f"h{i}" for i in range(3, 8)]
    by_query = SSEClient(gw.port, f"/s/hist1?lastEventId={ids[5]}")
    assert [e["id"] for e in read(by_query, 2)] == ids[6:]


def test_a_trimmed_id_gets_the_reset_event_then_live_events(
    gateway_factory, redis_server, redis
) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address).start()
    old = [xadd(redis, "trim1", f"t{i}") for i in range(20)]
    redis.call("XTRIM", "trim1", "MAXLEN", "5")
    client = SSEClient(gw.port, "/r/trim1", headers={"Last-Event-ID": old[2]})
    events = read(client, 1)
    assert events[0]["event"] == "gone"
    detail = json.loads(events[0]["data"])
    assert detail["reason"] == "trimmed" and detail["first"] == old[15]
    assert events[0]["id"] == old[-1]
    new = xadd(redis, "trim1", "after")
    events = read(client, 2)
    assert events[1] == {"id": new, "data": "after"}
    # an id Redis never gave is unknown: the same signal
    bogus = SSEClient(gw.port, "/r/trim1", headers={"Last-Event-ID": "99999999999999-0"})
    assert json.loads(read(bogus, 1)[0]["data"])["reason"] == "unknown id"


def test_several_keys_on_one_connection_resume_each_key(
    gateway_factory, redis_server, redis
) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address).start()
    a0 = xadd(redis, "multia", "a0")
    b0 = xadd(redis, "multib", "b0")
    client = SSEClient(gw.port, "/m/multia/multib", headers={"Last-Event-ID": f"{a0},{b0}"})
    assert client.read_head() == 200
    wait_for(lambda: _readers(redis) >= 1, what="the gateway's XREAD")
    a1 = xadd(redis, "multia", "a1")
    events = read(client, 1)
    assert events[0] == {"id": f"{a1},{b0}", "data": "a1"}
    client.close()
    b1 = xadd(redis, "multib", "b1")
    a2 = xadd(redis, "multia", "a2")
    again = SSEClient(gw.port, "/m/multia/multib", headers={"Last-Event-ID": events[0]["id"]})
    got = read(again, 2)
    assert sorted(e["data"] for e in got) == ["a2", "b1"]
    assert got[-1]["id"] == f"{a2},{b1}"


def test_envelope_fields_and_entry_fields_become_sse_fields(
    gateway_factory, redis_server, redis
) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address).start()
    client = SSEClient(gw.port, "/e/env1")
    plain = SSEClient(gw.port, "/s/env1")
    assert client.read_head() == 200 and plain.read_head() == 200
    wait_for(lambda: _readers(redis) >= 1, what="the gateway's XREAD")
    envelope = json.dumps({"event": "tick", "data": "a\nid: 666", "retry": 1500})
    entry = xadd(redis, "env1", envelope)
    (event,) = read(client, 1)
    assert event == {"event": "tick", "id": entry, "retry": "1500", "data": "a\nid: 666"}
    named = xadd(redis, "env1", "x", "event", "ping")
    assert read(plain, 2)[1] == {"event": "ping", "id": named, "data": "x"}


@pytest.fixture
def persistent_redis(tmp_path_factory):
    server = RedisServer(
        tmp_path_factory.mktemp("rp"), extra_args=("--appendonly", "yes", "--appendfsync", "always")
    ).start()
    yield server
    server.stop()


def test_a_gateway_restart_loses_nothing(gateway_factory, redis_server, redis) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address).start()
    first = xadd(redis, "restart1", "first")
    client = SSEClient(gw.port, "/s/restart1", headers={"Last-Event-ID": "0-0"})
    assert read(client, 1)[0]["id"] == first
    gw.stop()
    client.wait_closed()
    ids = [xadd(redis, "restart1", f"r{i}") for i in range(100)]
    gw2 = gateway_factory(RULES, redis=redis_server.address).start()
    again = SSEClient(gw2.port, "/s/restart1", headers={"Last-Event-ID": first})
    assert [e["id"] for e in read(again, 100)] == ids


def _readers(redis) -> int:
    """Clients of the Redis blocked in XREAD."""
    listing = redis.call("CLIENT", "LIST").decode()
    return sum(1 for line in listing.splitlines() if "cmd=xread" in line and "flags=b" in line)


MIRROR_RULES = """\
[uwsgi]
mirror = news
mirror = channel=raw,stream=rawlog,maxlen=50
route = ^/s/([a-z0-9]+)$ sse:stream=$1
"""


def _stream_length(redis, key: str) -> int:
    return int(redis.call("XLEN", key))


def test_the_mirror_gives_bare_publish_publishers_resume(
    gateway_factory, fresh_redis
) -> None:
    redis = fresh_redis.client()
    gw = gateway_factory(MIRROR_RULES, redis=fresh_redis.address).start()
    wait_for(lambda: redis.numsub("news") == 1, what="the mirror's SUBSCRIBE")
    wait_for(lambda: redis.call("EXISTS", "sse-offload:mirror:news") == 1, what="the lease")
    client = SSEClient(gw.port, "/s/news")
    assert client.read_head() == 200
    wait_for(lambda: _readers(redis) >= 1, what="the gateway's XREAD")
    redis.publish("news", "hello")
    (first,) = read(client, 1)
    assert first["data"] == "hello"
    client.close()
    for i in range(100):
        redis.publish("news", f"n{i}")
    wait_for(lambda: _stream_length(redis, "news") == 101, what="100 more entries")
    again = SSEClient(gw.port, "/s/news", headers={"Last-Event-ID": first["id"]})
    assert [e["data"] for e in read(again, 100)] == [f"n{i}" for i in range(100)]
    # the stream is bounded: MAXLEN ~ keeps about maxlen entries
    for i in range(300):
        redis.publish("raw", f"r{i}")
    wait_for(lambda: redis.call("XREVRANGE", "rawlog", "+", "-", "COUNT", "1")[0][1][1]
             == b"r299", what="the last raw entry")
    assert _stream_length(redis, "rawlog") < 300


def test_two_gateways_mirror_each_message_once(gateway_factory, fresh_redis) -> None:
    redis = fresh_redis.client()
    gateway_factory(MIRROR_RULES, redis=fresh_redis.address, name="a").start()
    gateway_factory(MIRROR_RULES, redis=fresh_redis.address, name="b").start()
    wait_for(lambda: redis.numsub("news") == 2, what="both mirrors' SUBSCRIBEs")
    wait_for(lambda: redis.call("EXISTS", "sse-offload:mirror:news") == 1, what="a lease")
    for i in range(50):
        redis.publish("news", f"once{i}")
    wait_for(lambda: _stream_length(redis, "news") >= 50, what="50 entries")
    entries = redis.call("XRANGE", "news", "-", "+")
    assert [e[1][1] for e in entries] == [f"once{i}".encode() for i in range(50)]


def test_two_workers_resume_any_client(gateway_factory, redis_server, redis) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address, args=("--processes", "2")).start()
    ids = [xadd(redis, "workers1", f"w{i}") for i in range(10)]
    # Reconnect many times: the kernel spreads the connections over both workers, and
    # whichever one serves a reconnect resumes it from the id alone.
    last, seen = ids[0], [ids[0]]
    for step in range(1, 10):
        client = SSEClient(gw.port, "/s/workers1", headers={"Last-Event-ID": last})
        events = read(client, 1)
        assert events[0]["id"] == ids[step]
        client.close()
        last = events[0]["id"]
        seen.append(last)
    assert seen == ids


WORKER_RULES = """\
[uwsgi]
route = ^/w/ addheader:X-Worker: ${uwsgi[wid]}
route = ^/w/([a-z0-9]+)$ sse:stream=$1
"""


def test_a_client_of_one_worker_resumes_exactly_on_the_other(
    gateway_factory, redis_server, redis
) -> None:
    """Killed mid-stream on one worker, 100 entries added, reconnected to the other worker:
    exactly those 100, in order, then live, nothing twice (no gateway state is needed)."""
    gw = gateway_factory(
        WORKER_RULES, redis=redis_server.address, args=("--processes", "2")
    ).start()
    first = SSEClient(gw.port, "/w/other1")
    assert first.read_head() == 200
    worker = first.header("X-Worker")
    assert worker in ("1", "2")
    wait_for(lambda: _readers(redis) >= 1, what="an XREAD")
    start = xadd(redis, "other1", "start")
    (event,) = read(first, 1)
    assert event["id"] == start
    first.close()

    ids = [xadd(redis, "other1", f"o{i}") for i in range(100)]
    # The kernel spreads connections over the workers' sockets: connect until one lands on
    # the other worker (each try is a real resume too, closed unread).
    for _ in range(200):
        again = SSEClient(gw.port, "/w/other1", headers={"Last-Event-ID": start})
        assert again.read_head() == 200
        if again.header("X-Worker") != worker:
            break
        again.close()
    else:
        raise AssertionError(f"200 connections all went to worker {worker}")
    events = read(again, 100)
    assert [e["id"] for e in events] == ids
    assert [e["data"] for e in events] == [f"o{i}" for i in range(100)]
    live = xadd(redis, "other1", "live")
    events = read(again, 101)
    assert len(events) == 101 and events[100]["id"] == live
