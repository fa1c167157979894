"""What a stream listens to, end to end: several channels, PSUBSCRIBE patterns, JSON
envelopes over pub/sub, keys a URL must not add, and Last-Event-ID across the app handoff."""

from __future__ import annotations

import json
from pathlib import Path

from gateway_helpers import wait_for, wait_numsub
from redis_helpers import free_port, http_get
from sse_client import SSEClient
from test_resume import parsed, read

APPS = Path(__file__).parent / "apps"

RULES = """\
[uwsgi]
route = ^/pair$ sse:subscribe=src-a;src-b
route = ^/one/(.*)$ sse:subscribe=$1
route = ^/news$ sse:psubscribe=news.*
route = ^/env$ sse:subscribe=envch,envelope=json
route = ^/any/(.*)$ sse:$1
"""


def _patterns(redis) -> int:
    return int(redis.call("PUBSUB", "NUMPAT"))


def test_one_connection_listens_to_several_channels(gateway_factory, redis_server, redis):
    gw = gateway_factory(RULES, redis=redis_server.address).start()
    client = SSEClient(gw.port, "/pair")
    assert client.read_head() == 200
    wait_numsub(redis, "src-a", 1)
    wait_numsub(redis, "src-b", 1)
    redis.publish("src-a", "from a")
    redis.publish("src-b", "from b")
    assert client.read_events(2) == ["from a", "from b"]
    client.close()
    wait_numsub(redis, "src-a", 0)
    wait_numsub(redis, "src-b", 0)
    # a ; that came out of expansion does not split: one channel named "x;y"
    single = SSEClient(gw.port, "/one/x;y")
    assert single.read_head() == 200
    wait_numsub(redis, "x;y", 1)
    assert redis.numsub("x") == 0


def test_patterns_are_shared_and_refcounted(gateway_factory, redis_server, redis):
    gw = gateway_factory(RULES, redis=redis_server.address).start()
    before = _patterns(redis)
    clients = [SSEClient(gw.port, "/news") for _ in range(3)]
    for c in clients:
        assert c.read_head() == 200
    wait_for(lambda: _patterns(redis) == before + 1, what="one PSUBSCRIBE for three clients")
    redis.publish("news.sport", "goal")
    redis.publish("other", "nothing")
    redis.publish("news.weather", "rain")
    for c in clients:
        assert c.read_events(2) == ["goal", "rain"]
    clients[0].close()
    clients[1].close()
    redis.publish("news.x", "still")
    assert clients[2].read_events(3)[-1] == "still"
    assert _patterns(redis) == before + 1
    clients[2].close()
    wait_for(lambda: _patterns(redis) == before, what="PUNSUBSCRIBE after the last client")


def test_a_url_cannot_make_a_pattern_or_a_stream(gateway_factory, redis_server, redis):
    gw = gateway_factory(RULES, redis=redis_server.address).start()
    for path in ("/any/psubscribe=*", "/any/subscribe=a,stream=secret", "/any/x,envelope=json"):
        client = SSEClient(gw.port, path)
        assert client.read_head() == 400, path
    assert "must be written in the rule" in gw.log()
    assert _patterns(redis) == 0


def test_envelopes_over_pub_sub_and_invalid_ones_are_dropped_and_counted(
    gateway_factory, redis_server, redis
):
    admin = free_port()
    gw = gateway_factory(RULES, redis=redis_server.address,
                         args=("--admin", f"tcp:{admin}:interface=127.0.0.1")).start()
    client = SSEClient(gw.port, "/env")
    assert client.read_head() == 200
    wait_numsub(redis, "envch", 1)
    redis.publish("envch", json.dumps({"event": "tick", "id": "7", "data": {"n": 1}}))
    redis.publish("envch", "not json")
    redis.publish("envch", json.dumps({"event": "x\ny", "data": "injected"}))
    redis.publish("envch", json.dumps({"data": "last", "retry": 2000}))
    events = read(client, 2)
    assert events == [{"event": "tick", "id": "7", "data": '{"n":1}'},
                      {"retry": "2000", "data": "last"}]
    code, body = http_get(f"http://127.0.0.1:{admin}/metrics")
    assert code == 200
    assert b"sse_offload_messages_dropped_bad_envelope_total 2.0" in body
    assert "not a valid envelope" in gw.log()


HANDOFF = f"""\
[uwsgi]
wsgi-file = {APPS / "probe.py"}
final-route-if-not = empty:${{X-SSE-OFFLOAD}} sse:stream=${{X-SSE-OFFLOAD}}
"""


def test_last_event_id_reaches_the_app_and_the_stream_resumes_from_it(
    gateway_factory, redis_server, redis
):
    gw = gateway_factory(HANDOFF, redis=redis_server.address).start()
    status, body = http_get_with(gw.port, "/env", {"Last-Event-ID": "1-1"})
    assert status == 200
    assert json.loads(body)["HTTP_LAST_EVENT_ID"] == "1-1"
    ids = [redis.call("XADD", "handoff", "*", "data", f"h{i}").decode() for i in range(3)]
    client = SSEClient(gw.port, "/x?var=handoff", headers={"Last-Event-ID": ids[0]})
    assert client.read_head() == 200
    assert [e["id"] for e in read(client, 2)] == ids[1:]
    assert len(parsed(client)) == 2


def http_get_with(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    client = SSEClient(port, path, headers=headers)
    status = client.read_head()
    client.read_until(lambda c: c.closed or c.body.endswith(b"}"), what="the JSON body")
    return status, client.body
