"""Random and hostile HTTP against the front resource: always an answer or a close, never a
crash or a stuck connection. ``SSE_OFFLOAD_FUZZ_EXAMPLES`` raises the count (100,000 for the
long run recorded in the notes)."""

from __future__ import annotations

import os
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_client import SSEClient

EXAMPLES = int(os.environ.get("SSE_OFFLOAD_FUZZ_EXAMPLES", "150"))

RULES = """\
    [uwsgi]
    route = ^/ev/(.*)$ sse:$1
    route-if = equal:${REQUEST_METHOD};DELETE return:405
    route = ^/r redirect:/elsewhere
    route = ^/gone break:
"""

methods = st.sampled_from(["GET", "HEAD", "POST", "DELETE", "OPTIONS", "G\x00T", "", "GET GET"])
paths = st.one_of(
    st.sampled_from(["/", "/ev/x", "/ev/server=10.0.0.1:25,subscribe=x", "/r", "/gone",
                     "/ev/%00%ff", "/../../etc/passwd", "/ev/" + "a" * 5000]),
    st.text(min_size=0, max_size=80).map(lambda t: "/" + t),
)
header_names = st.sampled_from(
    ["Host", "Content-Length", "Transfer-Encoding", "X-SSE-OFFLOAD", "Cookie", "Last-Event-ID",
     "Connection", "X" * 300]
)
header_values = st.one_of(
    st.sampled_from(["0", "-1", "chunked", "99999999999999999999", "evil", "a\x00b", ""]),
    st.text(max_size=60),
)
headers = st.lists(st.tuples(header_names, header_values), max_size=6)
versions = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", ""])
junk = st.binary(max_size=300)


def _request(method: str, path: str, version: str, hdrs, tail: bytes) -> bytes:
    line = f"{method} {path} {version}".encode("utf-8", "surrogateescape")
    head = b"\r\n".join(
        [line] + [f"{k}: {v}".encode("utf-8", "surrogateescape") for k, v in hdrs]
    )
    return head + b"\r\n\r\n" + tail


def _exchange(port: int, data: bytes, deadline: float = 5.0) -> bytes:
    """Send ``data`` and end our side; read until the gateway answers or closes.

    Ending our side matters: a request that declares a body it never sends would otherwise
    be waited for, as HTTP says it must be.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=deadline)
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # closed on us mid-send: an answer too
        got = b""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except OSError:
                return got
            if not chunk:
                return got
            got += chunk
            if b"\r\n\r\n" in got:
                return got
        raise AssertionError(f"no answer and no close within {deadline}s for {data[:200]!r}")
    finally:
        s.close()


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory, redis_server):
    from gateway_helpers import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("fuzz"), RULES, redis=redis_server.address)
    gw.start()
    yield gw
    gw.stop()


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=methods, path=paths, version=versions, hdrs=headers, tail=junk)
def test_random_requests_get_an_answer_or_a_close(fuzz_gateway, method, path, version, hdrs,
                                                  tail) -> None:
    answer = _exchange(fuzz_gateway.port, _request(method, path, version, hdrs, tail))
    if answer:
        assert answer.startswith(b"HTTP/1."), answer[:100]


def test_gateway_still_serves_after_the_fuzzing(fuzz_gateway, redis) -> None:
    from gateway_helpers import wait_numsub

    client = SSEClient(fuzz_gateway.port, "/ev/after-fuzz")
    assert client.read_head() == 200
    wait_numsub(redis, "after-fuzz", 1)
    redis.publish("after-fuzz", "alive")
    assert client.read_events(1) == ["alive"]
    client.close()
    assert fuzz_gateway.proc.poll() is None
    assert "Unhandled Error" not in fuzz_gateway.log()
    assert "Traceback" not in fuzz_gateway.log()
