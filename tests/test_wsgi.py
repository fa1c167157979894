"""The in-process WSGI host (issue 4): the seed README's app-governed clock.py, uwsgi.add_var,
the response side on the app's head, and the thread pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway_helpers import wait_numsub
from sse_client import SSEClient

APPS = Path(__file__).parent / "apps"

#: seed README "Usage (app-governed)", verbatim but for http-socket/mule (the test's own).
APP_GOVERNED = """\
    [uwsgi]
    plugin = python
    plugin = sse_offload
    wsgi-file = {app}

    ; tell the routing engine to check for X-SSE-OFFLOAD variable
    final-route-if-not = empty:${{X-SSE-OFFLOAD}} sse:${{X-SSE-OFFLOAD}}
    ; enable 1 offload thread
    offload-threads = 1
"""


def app_gateway(gateway_factory, redis_server, app: str, extra: str = "", **kw):
    rules = APP_GOVERNED.format(app=APPS / app) + extra
    return gateway_factory(rules, redis=redis_server.address, **kw).start()


def get(port: int, path: str, **kw) -> SSEClient:
    client = SSEClient(port, path, **kw)
    client.read_head()
    return client


def test_clock_a_streams_with_the_default_head(gateway_factory, redis_server, redis) -> None:
    gw = app_gateway(gateway_factory, redis_server, "clock_a.py")
    client = get(gw.port, "/whattimeisit")
    assert client.head.startswith(b"HTTP/1.1 200 OK\r\n"), client.head
    assert client.header("Content-Type") == "text/event-stream"
    assert client.header("Cache-Control") == "no-cache"
    assert client.header("Content-Length") is None
    wait_numsub(redis, "clock", 1)
    redis.publish("clock", "1420070400")
    assert client.read_events(1) == ["1420070400"]
    client.close()


def test_clock_a_says_hello_elsewhere_with_a_str_body(gateway_factory, redis_server) -> None:
    gw = app_gateway(gateway_factory, redis_server, "clock_a.py")
    client = get(gw.port, "/")
    assert client.status == 200
    client.read_until(lambda c: c.closed or c.body == b"Hello World", what="Hello World")
    assert client.body == b"Hello World"
    assert client.header("Content-Type") == "text/plain"


def test_clock_b_keeps_the_apps_headers(gateway_factory, redis_server, redis) -> None:
    gw = app_gateway(gateway_factory, redis_server, "clock_b.py")
    client = get(gw.port, "/whattimeisit")
    assert client.status == 200
    names = [name for name, _ in client.response_headers]
    assert client.header("Foo") == "Bar"
    assert client.header("Cache-Control") == "no-cache"
    # difference 7 (docs/architecture.md): the README's event/stream becomes
    # text/event-stream, never duplicated
    assert client.header("Content-Type") == "text/event-stream"
    assert names.count("Content-Type") == 1 and names.count("Cache-Control") == 1
    wait_numsub(redis, "clock", 1)
    redis.publish("clock", "1")
    redis.publish("clock", "2")
    assert client.read_events(2) == ["1", "2"]
    client.close()


def test_add_var_is_for_that_request_only(gateway_factory, redis_server, redis) -> None:
    gw = app_gateway(gateway_factory, redis_server, "probe.py", "threads = 1\n")
    streaming = get(gw.port, "/x?var=clock")
    assert streaming.header("Content-Type") == "text/event-stream"
    wait_numsub(redis, "clock", 1)
    # the same (only) app thread serves the next request: the var must not leak into it
    plain = get(gw.port, "/y")
    plain.read_until(lambda c: c.body == b"plain /y", what="plain body")
    assert plain.header("Content-Type") == "text/plain"
    streaming.close()


def test_offloaded_app_response_never_sends_content_length_or_body(
    gateway_factory, redis_server, redis
) -> None:
    gw = app_gateway(gateway_factory, redis_server, "probe.py")
    client = get(gw.port, "/offload-with-length?channel=c1")
    assert client.header("Content-Length") is None
    assert client.header("Foo") == "Bar"
    assert client.header("Transfer-Encoding") == "chunked"
    wait_numsub(redis, "c1", 1)
    redis.publish("c1", "m")
    assert client.read_events(1) == ["m"]
    assert b"hello" not in client.body


def test_client_header_cannot_pick_a_channel(gateway_factory, redis_server, redis) -> None:
    gw = app_gateway(gateway_factory, redis_server, "probe.py")
    client = get(gw.port, "/env", headers={"X-SSE-OFFLOAD": "evil"})
    client.read_until(lambda c: c.closed or c.body.endswith(b"}"), what="json")
    assert client.header("Content-Type") == "application/json"
    seen = json.loads(client.body)
    assert seen["HTTP_X_SSE_OFFLOAD"] == "evil" and "X-SSE-OFFLOAD" not in seen
    assert redis.numsub("evil") == 0


def test_app_set_server_outside_the_config_is_refused(gateway_factory, redis_server) -> None:
    gw = app_gateway(gateway_factory, redis_server, "probe.py")
    client = get(gw.port, "/x?var=server%3D127.0.0.1%3A1%2Csubscribe%3Dclock")
    assert client.status == 403
    gw.wait_log("refused server '127.0.0.1:1'")


def test_uwsgi_opt_and_worker_id(gateway_factory, redis_server) -> None:
    gw = app_gateway(gateway_factory, redis_server, "probe.py", "threads = 3\n")
    client = get(gw.port, "/opt")
    client.read_until(lambda c: c.body.endswith(b"}"), what="json")
    assert json.loads(client.body) == {
        "enable-threads": True, "threads": "3", "worker_id": 1, "numproc": 1,
    }


def test_rules_shape_the_environ(gateway_factory, redis_server) -> None:
    gw = app_gateway(
        gateway_factory, redis_server, "probe.py",
        "route = ^/old/(.*) setpathinfo:/env\nroute-run = addvar:FROM_RULES=yes\n",
    )
    client = get(gw.port, "/old/thing?q=1")
    client.read_until(lambda c: c.body.endswith(b"}"), what="json")
    seen = json.loads(client.body)
    assert seen["PATH_INFO"] == "/env" and seen["QUERY_STRING"] == "q=1"
    assert seen["FROM_RULES"] == "yes"


def test_pass_through_body_is_streamed_whole(gateway_factory, redis_server) -> None:
    gw = app_gateway(gateway_factory, redis_server, "probe.py")
    client = get(gw.port, "/big?n=64")
    client.read_body(64 * 65536, timeout=20)
    assert client.body == b"x" * 64 * 65536


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_204_and_304_are_never_streams(gateway_factory, redis_server, status: str) -> None:
    gw = app_gateway(gateway_factory, redis_server, "probe.py")
    client = get(gw.port, f"/status?var=clock&s={status.replace(' ', '%20')}")
    assert client.status == int(status[:3])
    assert client.header("Content-Type") == "text/plain"


def test_app_import_error_stops_start_up(gateway_factory, redis_server, tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    gw = gateway_factory(
        f"[uwsgi]\nwsgi-file = {bad}\n", redis=redis_server.address
    )
    status, out = gw.run_to_exit()
    assert status != 0 and "RuntimeError: boom" in out and "Traceback" not in out


def test_wsgi_option_loads_a_module(gateway_factory, redis_server) -> None:
    gw = gateway_factory(
        "[uwsgi]\n", redis=redis_server.address,
        args=("--wsgi", "probe:application"), cwd=APPS,
    ).start()
    client = get(gw.port, "/z")
    client.read_until(lambda c: c.body == b"plain /z", what="plain body")


def test_last_event_id_reaches_the_response_side(gateway_factory, redis_server, redis) -> None:
    gw = app_gateway(gateway_factory, redis_server, "clock_a.py",
                     "response-route-run = addheader:X-Resume: ${HTTP_LAST_EVENT_ID}\n")
    client = get(gw.port, "/whattimeisit", headers={"Last-Event-ID": "41"})
    assert client.header("Content-Type") == "text/event-stream"
    assert client.header("X-Resume") == "41"
    client.close()


def test_response_chain_offload_uses_the_default_head(gateway_factory, redis_server) -> None:
    rules = f"""\
        [uwsgi]
        wsgi-file = {APPS / "clock_b.py"}
        response-route-if-not = empty:${{X-SSE-OFFLOAD}} sse:${{X-SSE-OFFLOAD}}
    """
    gw = gateway_factory(rules, redis=redis_server.address).start()
    client = get(gw.port, "/whattimeisit")
    assert client.status == 200
    assert client.header("Content-Type") == "text/event-stream"
    assert client.header("X-Accel-Buffering") == "no"
    assert client.header("Foo") is None  # the response chain's defaults replace the app's head
    client.close()


def test_app_crash_is_500_with_a_log_line_and_the_final_chain(
    gateway_factory, redis_server
) -> None:
    gw = app_gateway(gateway_factory, redis_server, "probe.py",
                     "final-route-run = log:final ${REQUEST_URI} ${uwsgi[status]}\n")
    client = get(gw.port, "/x?crash=1")
    assert client.status == 500
    log = gw.wait_log("final /x?crash=1 500")
    assert "RuntimeError: the app crashed" in log
