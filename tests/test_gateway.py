"""The gateway end to end: ``twistd -n sse-offload`` against a private redis-server.

Every body is asserted byte-exact as received over a real socket (chunk framing removed
for HTTP/1.1, raw for HTTP/1.0).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from gateway_helpers import twistd_path, wait_numsub
from redis_helpers import wait_for
from sse_client import SSEClient
from test_sse import FRAMING_TABLE

CLOCK_RULES = """\
    [uwsgi]
    route = ^/whattimeisit sse:clock
    route = ^/raw sseraw:clock
    route = ^/events/(\\d+)$ sse:channel_$1
    route = ^/ev/(.*)$ sse:$1
    route = ^/gone break:
    route = ^/forbidden break:403
"""


@pytest.fixture
def gateway(gateway_factory, redis_server):
    return gateway_factory(CLOCK_RULES, redis=redis_server.address).start()


def stream(gateway, path: str, **kwargs) -> SSEClient:
    client = SSEClient(gateway.port, path, **kwargs)
    assert client.read_head() == 200, client.raw
    return client


def test_whattimeisit_streams_events_with_sse_headers(gateway, redis) -> None:
    client = stream(gateway, "/whattimeisit")
    assert client.head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert client.header("Content-Type") == "text/event-stream"
    assert client.header("Cache-Control") == "no-cache"
    assert client.header("X-Accel-Buffering") == "no"
    assert client.body == b"", "a stream starts with its head only (no comment, no retry:)"
    wait_numsub(redis, "clock", 1)
    redis.publish("clock", "1420070400")
    redis.publish("clock", "1420070401")
    client.read_body(len(b"data: 1420070400\n\n") * 2)
    assert client.body == b"data: 1420070400\n\ndata: 1420070401\n\n"
    client.close()


def test_prefix_match_like_uwsgi(gateway, redis) -> None:
    client = stream(gateway, "/whattimeisitANYTHING")
    wait_numsub(redis, "clock", 1)
    redis.publish("clock", "7")
    assert client.read_events(1) == ["7"]
    client.close()


VECTORS = [
    *FRAMING_TABLE,
    (bytes(range(256)).replace(b"\r", b"").replace(b"\n", b""), None),
    (b"0042", b"data: 0042\n\n"),  # numbers stay bytes (txredisapi would convert them)
]


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_framing_vectors_over_a_real_socket(gateway, redis, version: str) -> None:
    client = stream(gateway, "/whattimeisit", version=version)
    assert client.head.startswith(f"{version} 200 OK\r\n".encode())
    assert client.chunked == (version == "HTTP/1.1")
    wait_numsub(redis, "clock", 1)
    expected = b""
    for payload, wire in VECTORS:
        redis.publish("clock", payload)
        expected += wire if wire is not None else b"data: " + payload + b"\n\n"
    client.read_body(len(expected))
    assert client.body == expected
    client.close()


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_one_mebibyte_payload_arrives_whole(gateway, redis, version: str) -> None:
    payload = (b"0123456789abcdef" * 65536)[: 1 << 20]
    client = stream(gateway, "/raw", version=version)
    wait_numsub(redis, "clock", 1)
    redis.publish("clock", payload)
    client.read_body(len(payload), timeout=20)
    assert client.body == payload
    client.close()


def test_two_messages_in_one_redis_read_go_out_in_one_write(gateway, redis) -> None:
    client = stream(gateway, "/whattimeisit")
    wait_numsub(redis, "clock", 1)
    # MULTI/EXEC makes Redis send both messages in one write to the subscriber.
    redis.call("MULTI")
    redis.call("PUBLISH", "clock", "first")
    redis.call("PUBLISH", "clock", "second")
    redis.call("EXEC")
    client.read_body(len(b"data: first\n\ndata: second\n\n"))
    assert client.body == b"data: first\n\ndata: second\n\n"
    assert client.chunks == [b"data: first\n\ndata: second\n\n"]
    client.close()


def test_sseraw_streams_payloads_verbatim(gateway, redis) -> None:
    client = stream(gateway, "/raw")
    wait_numsub(redis, "clock", 1)
    for payload in (b"a\r\nb\n", b"", b"event: x\n\n", b"\x00\xff"):
        redis.publish("clock", payload)
    client.read_body(len(b"a\r\nb\nevent: x\n\n\x00\xff"))
    assert client.body == b"a\r\nb\nevent: x\n\n\x00\xff"
    client.close()


def test_capture_routes_to_channel(gateway, redis) -> None:
    client = stream(gateway, "/events/42")
    wait_numsub(redis, "channel_42", 1)
    redis.publish("channel_42", "hello")
    assert client.read_events(1) == ["hello"]
    client.close()


def test_expanded_server_not_named_by_the_configuration_is_refused(gateway, redis) -> None:
    client = SSEClient(gateway.port, "/ev/server=127.0.0.2:1,subscribe=x")
    assert client.read_head() == 403
    client.close()
    log = gateway.wait_log("refused server")
    assert "127.0.0.2:1" in log
    assert "cannot reach redis 127.0.0.2:1" not in log


def test_expanded_channel_without_server_is_allowed(gateway, redis) -> None:
    client = stream(gateway, "/ev/news")
    wait_numsub(redis, "news", 1)
    redis.publish("news", "n1")
    assert client.read_events(1) == ["n1"]
    client.close()


def test_head_request_gets_the_head_and_ends(gateway) -> None:
    client = SSEClient(gateway.port, "/whattimeisit", method="HEAD")
    assert client.read_head() == 200
    assert client.header("Content-Type") == "text/event-stream"
    client.close()


def test_unrouted_request_is_404(gateway) -> None:
    client = SSEClient(gateway.port, "/nothing-here")
    assert client.read_head() == 404
    client.close()


def test_break_without_status_closes_without_a_response(gateway) -> None:
    client = SSEClient(gateway.port, "/gone")
    client.wait_closed()
    assert client.raw == b""


def test_break_with_status_answers_it(gateway) -> None:
    client = SSEClient(gateway.port, "/forbidden")
    assert client.read_head() == 403
    client.close()


def test_client_disconnect_unsubscribes(gateway, redis) -> None:
    clients = [stream(gateway, "/whattimeisit") for _ in range(3)]
    wait_numsub(redis, "clock", 1)
    for c in clients:
        c.close()
    wait_numsub(redis, "clock", 0)


def test_explicit_servers_by_unix_socket_and_host_port(
    gateway_factory, redis_server, redis
) -> None:
    rules = f"""\
        [uwsgi]
        route = ^/unix sse:server={redis_server.unix_path},subscribe=x
        route = ^/tcp sseraw:server=127.0.0.1:{redis_server.port},subscribe=y
    """
    gw = gateway_factory(rules, redis=redis_server.address).start()
    unix_client = stream(gw, "/unix")
    tcp_client = stream(gw, "/tcp")
    wait_numsub(redis, "x", 1)
    wait_numsub(redis, "y", 1)
    redis.publish("x", "via-unix")
    redis.publish("y", "via-tcp")
    assert unix_client.read_events(1) == ["via-unix"]
    assert tcp_client.read_body(len("via-tcp")) == b"via-tcp"
    unix_client.close()
    tcp_client.close()


def test_sse_list_without_subscribe_is_500(gateway_factory, redis_server) -> None:
    gw = gateway_factory("[uwsgi]\nroute = ^/ sse:server=127.0.0.1:1\n", redis=redis_server.address)
    gw.start()
    client = SSEClient(gw.port, "/x")
    assert client.read_head() == 500
    client.close()
    gw.wait_log("without a pubsub channel")


def test_static_map_serves_files_and_never_outside(gateway_factory, redis_server, tmp_path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>hi</p>")
    (tmp_path / "secret.txt").write_text("secret")
    (site / "sub").mkdir()
    rules = f"""\
        [uwsgi]
        static-map = /clock={site / "index.html"}
        static-map = /files={site}
    """
    gw = gateway_factory(rules, redis=redis_server.address).start()
    for path in ("/clock", "/clockwork", "/clock/x"):
        c = SSEClient(gw.port, path)
        assert c.read_head() == 200
        assert c.read_body(9) == b"<p>hi</p>"
        assert "text/html" in c.header("Content-Type")
        c.close()
    for path, status in (
        ("/files/index.html", 200),
        ("/files/../secret.txt", 404),
        ("/files/%2e%2e/secret.txt", 404),
        ("/files/sub", 404),
        ("/files/index.html%00.txt", 404),
        ("/files/%zz", 404),
        ("/files/", 404),
    ):
        c = SSEClient(gw.port, path)
        assert c.read_head() == status, path
        if status == 404:
            c.read_until(lambda cl: cl.closed or len(cl.body) > 0)
            assert b"secret" not in c.body
        c.close()


def test_redis_restart_keeps_streams_open(gateway_factory, fresh_redis) -> None:
    gw = gateway_factory(CLOCK_RULES, redis=fresh_redis.address).start()
    clients = [stream(gw, "/whattimeisit") for _ in range(50)]
    r = fresh_redis.client()
    wait_numsub(r, "clock", 1)
    r.publish("clock", "before")
    for c in clients:
        c.read_events(1)
    r.close()
    fresh_redis.restart()
    r = fresh_redis.client()
    wait_numsub(r, "clock", 1, timeout=20)
    r.publish("clock", "after")
    for c in clients:
        assert c.read_events(2) == ["before", "after"]
        assert not c.closed
        c.close()
    r.close()


def test_malformed_rule_stops_startup_with_file_line_column(gateway_factory, redis_server) -> None:
    gw = gateway_factory("[uwsgi]\n; comment\nroute = ^/x\n", redis=redis_server.address)
    status, output = gw.run_to_exit()
    assert status != 0
    assert f"{gw.rules_path}:3:" in output, output
    assert "Traceback" not in output
    assert "Usage:" not in output


def test_missing_rules_option_is_a_usage_error(tmp_path) -> None:
    done = subprocess.run(
        [twistd_path(), "-n", "--pidfile=", "sse-offload"],
        cwd=tmp_path, capture_output=True, timeout=30,
    )
    assert done.returncode != 0
    assert b"--rules is required" in done.stdout + done.stderr


def test_keepalive_comment_on_idle_streams(gateway_factory, redis_server, redis) -> None:
    gw = gateway_factory(CLOCK_RULES, redis=redis_server.address, args=("--keepalive", "0.3"))
    gw.start()
    sse_client = stream(gw, "/whattimeisit")
    raw_client = stream(gw, "/raw")
    sse_client.read_until(lambda c: c.body.count(b":\n\n") >= 2, timeout=5)
    assert set(sse_client.body.split(b":\n\n")) == {b""}
    wait_numsub(redis, "clock", 1)
    redis.publish("clock", "x")
    raw_client.read_body(1)
    assert raw_client.body == b"x", "sseraw streams get no keepalive"
    sse_client.close()
    raw_client.close()


def test_default_redis_is_never_the_shared_one(gateway_factory) -> None:
    # conftest points SSE_OFFLOAD_REDIS at a closed port: a gateway started without --redis
    # must not reach the machine's 127.0.0.1:6379.
    assert os.environ["SSE_OFFLOAD_REDIS"] == "127.0.0.1:1"
    gw = gateway_factory(CLOCK_RULES, redis=None).start()
    gw.wait_log("cannot reach redis 127.0.0.1:1")
    client = stream(gw, "/whattimeisit")  # the stream is accepted and waits
    client.close()
    wait_for(lambda: "--redis embedded" in gw.log(), what="the embedded hint")


def test_keys_not_built_yet_are_warned_about_at_startup(gateway_factory, redis_server) -> None:
    rules = """\
        [uwsgi]
        route = ^/whattimeisit sse:clock
        final-route-if-not = empty:${X-SSE-OFFLOAD} sse:${X-SSE-OFFLOAD}
        workers = 4
    """
    gw = gateway_factory(rules, redis=redis_server.address).start()
    log = gw.wait_log("'workers'")
    assert "rules.ini:4:" in log and "'workers' is not supported yet" in log
    # the response side is parsed and run, with a note that it only sees gateway responses
    assert "rules.ini:3:" in log and "until an app is configured" in log


def test_redis_outage_of_five_seconds_under_200_streams(gateway_factory, fresh_redis) -> None:
    gw = gateway_factory(CLOCK_RULES, redis=fresh_redis.address).start()
    clients = [stream(gw, "/whattimeisit") for _ in range(200)]
    r = fresh_redis.client()
    wait_numsub(r, "clock", 1)
    r.close()
    fresh_redis.kill()
    time.sleep(5)  # the outage itself: the scenario is a Redis that stays away for 5 s
    fresh_redis.start()
    notice = b": redis reconnected; messages may have been missed\n\n"
    for c in clients:
        c.read_until(lambda cl: notice in cl.body, timeout=20, what="the reconnect notice")
    r = fresh_redis.client()
    wait_numsub(r, "clock", 1)
    r.publish("clock", "after")
    for c in clients:
        assert c.read_events(1) == ["after"]
        assert c.body.index(notice) < c.body.index(b"data: after")
        assert not c.closed
        c.close()
    r.close()
