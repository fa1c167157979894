"""The upstream proxy (issue 4) in front of a real gunicorn: the seed README's Django views,
collect-header/pull-header on the upstream's head, bounded memory, failures."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from gateway_helpers import wait_numsub
from redis_helpers import free_port, wait_for
from sse_client import SSEClient
from upstream_helpers import APPS, DJANGO_PROJECT, Gunicorn

#: seed README §7.6, verbatim.
README_COLLECT = """\
    [uwsgi]
    ; this will place the value of Content-Type in RESPONSE_TYPE variable
    collect-header = Content-Type RESPONSE_TYPE
    collect-header = X-SSE-Channel X_SSE_CHANNEL
    ; route to sse offload engine if RESPONSE_TYPE is event/stream
    final-route-if = equal:${RESPONSE_TYPE};event/stream sse:${X_SSE_CHANNEL}
"""
README_PULL = README_COLLECT.replace(
    "collect-header = X-SSE-Channel", "pull-header = X-SSE-Channel"
)


@pytest.fixture(scope="module")
def django_upstream(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("django")
    upstream = Gunicorn("sseproject.wsgi", DJANGO_PROJECT, tmp / "gunicorn.log").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def bulk_upstream(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bulk")
    upstream = Gunicorn("bulk:application", APPS, tmp / "gunicorn.log").start()
    yield upstream
    upstream.stop()


def get(port: int, path: str, **kw) -> SSEClient:
    client = SSEClient(port, path, **kw)
    client.read_head()
    return client


def test_collect_header_streams_and_sends_the_channel_header(
    gateway_factory, redis_server, redis, django_upstream
) -> None:
    gw = gateway_factory(README_COLLECT, redis=redis_server.address,
                         args=("--proxy", django_upstream.url)).start()
    client = get(gw.port, "/sse-channel/x/")
    assert client.status == 200, client.raw
    assert client.header("X-SSE-Channel") == "foobar"
    assert client.header("Content-Type") == "text/event-stream"
    # Django's CommonMiddleware sent Content-Length: 0; it must not end the stream
    assert client.header("Content-Length") is None
    wait_numsub(redis, "foobar", 1)
    redis.publish("foobar", "one")
    redis.publish("foobar", "two")
    assert client.read_events(2) == ["one", "two"]
    client.close()


def test_pull_header_never_reaches_the_client(
    gateway_factory, redis_server, redis, django_upstream
) -> None:
    gw = gateway_factory(README_PULL, redis=redis_server.address,
                         args=("--proxy", django_upstream.url)).start()
    client = get(gw.port, "/sse-channel/x/")
    assert client.status == 200
    wait_numsub(redis, "foobar", 1)
    redis.publish("foobar", "one")
    assert client.read_events(1) == ["one"]
    assert b"x-sse-channel" not in client.raw.lower()
    assert b"content-length" not in client.head.lower()
    client.close()


def test_other_pages_pass_through(gateway_factory, redis_server, django_upstream) -> None:
    gw = gateway_factory(README_PULL, redis=redis_server.address,
                         args=("--proxy", django_upstream.url)).start()
    client = get(gw.port, "/")
    client.read_until(lambda c: c.body == b"Hello from Django\n", what="django body")
    assert client.header("Content-Length") == str(len(b"Hello from Django\n"))


def test_first_view_with_django_hosted_in_process(gateway_factory, redis_server, redis) -> None:
    rules = f"""\
        [uwsgi]
        chdir = {DJANGO_PROJECT}
        module = sseproject.wsgi
        final-route-if-not = empty:${{X-SSE-OFFLOAD}} sse:${{X-SSE-OFFLOAD}}
    """
    gw = gateway_factory(rules, redis=redis_server.address).start()
    client = get(gw.port, "/sse/x/")
    assert client.status == 200, client.raw
    assert client.header("Cache-Control") == "no-cache"
    assert client.header("Content-Length") is None
    wait_numsub(redis, "clock", 1)
    redis.publish("clock", "1420070400")
    assert client.read_events(1) == ["1420070400"]
    client.close()


def test_unix_socket_upstream(gateway_factory, redis_server, redis, tmp_path_factory) -> None:
    sock = str(tmp_path_factory.mktemp("gu") / "g.sock")
    upstream = Gunicorn("sseproject.wsgi", DJANGO_PROJECT, Path(sock).with_suffix(".log"),
                        unix_path=sock, workers=1).start()
    try:
        gw = gateway_factory(README_PULL, redis=redis_server.address,
                             args=("--proxy", upstream.url)).start()
        client = get(gw.port, "/sse-channel/x/")
        wait_numsub(redis, "foobar", 1)
        redis.publish("foobar", "u")
        assert client.read_events(1) == ["u"]
        client.close()
    finally:
        upstream.stop()


def test_hop_by_hop_removed_and_forwarded_headers_replaced(
    gateway_factory, redis_server, bulk_upstream
) -> None:
    gw = gateway_factory("[uwsgi]\n", redis=redis_server.address,
                         args=("--proxy", bulk_upstream.url)).start()
    client = get(gw.port, "/headers", headers={
        "X-Forwarded-For": "6.6.6.6", "Connection": "keep-alive, X-Secret", "X-Secret": "s",
        "Keep-Alive": "timeout=1",
    })
    client.read_until(lambda c: b"HTTP_X_FORWARDED_FOR" in c.body and c.body.endswith(b"\n"),
                      what="upstream headers")
    seen = dict(line.split("=", 1) for line in client.body.decode().splitlines())
    assert seen["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"  # not trusted: replaced
    assert seen["HTTP_X_FORWARDED_PROTO"] == "http"
    assert seen["HTTP_X_FORWARDED_HOST"] == f"127.0.0.1:{gw.port}"
    assert "HTTP_X_SECRET" not in seen and "HTTP_KEEP_ALIVE" not in seen
    assert client.header("X-Hop") == "1" and client.header("Keep-Alive") is None


def test_upstream_connections_are_pooled(gateway_factory, redis_server, bulk_upstream) -> None:
    gw = gateway_factory("[uwsgi]\n", redis=redis_server.address,
                         args=("--proxy", bulk_upstream.url)).start()
    ports = []
    for _ in range(6):
        client = get(gw.port, "/headers")
        client.read_until(lambda c: b"REMOTE_PORT=" in c.body and c.body.endswith(b"\n"),
                          what="upstream environ")
        seen = dict(line.split("=", 1) for line in client.body.decode().splitlines())
        ports.append(seen["REMOTE_PORT"])
        client.close()
    # Kept-alive upstream connections are reused. Not necessarily one: a request may come
    # before the previous response's connection is back in the pool (a race, not a bug).
    assert len(set(ports)) <= 3, ports


def test_trusted_proxy_chain_is_appended_to(gateway_factory, redis_server, bulk_upstream) -> None:
    gw = gateway_factory("[uwsgi]\ntrusted-proxy = 127.0.0.0/8\n", redis=redis_server.address,
                         args=("--proxy", bulk_upstream.url)).start()
    client = get(gw.port, "/headers", headers={"X-Forwarded-For": "203.0.113.9",
                                               "X-Forwarded-Proto": "https"})
    client.read_until(lambda c: b"HTTP_X_FORWARDED_PROTO" in c.body, what="upstream headers")
    seen = dict(line.split("=", 1) for line in client.body.decode().splitlines())
    assert seen["HTTP_X_FORWARDED_FOR"] == "203.0.113.9, 127.0.0.1"
    assert seen["HTTP_X_FORWARDED_PROTO"] == "https"


def test_websocket_upgrade_is_refused(gateway_factory, redis_server, bulk_upstream) -> None:
    gw = gateway_factory("[uwsgi]\n", redis=redis_server.address,
                         args=("--proxy", bulk_upstream.url)).start()
    client = get(gw.port, "/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert client.status == 501
    gw.wait_log("not proxied")


def test_upstream_down_is_502_and_streams_carry_on(
    gateway_factory, redis_server, redis
) -> None:
    dead = free_port()  # nothing listens here
    rules = """\
        [uwsgi]
        route = ^/whattimeisit sse:clock
        proxy-connect-timeout = 2
        final-route-run = log:final ${REQUEST_URI} ${uwsgi[status]}
    """
    gw = gateway_factory(rules, redis=redis_server.address,
                         args=("--proxy", f"http://127.0.0.1:{dead}")).start()
    stream = get(gw.port, "/whattimeisit")
    wait_numsub(redis, "clock", 1)
    started = time.monotonic()
    failed = get(gw.port, "/app")
    assert failed.status == 502 and time.monotonic() - started < 2
    gw.wait_log(f"upstream http://127.0.0.1:{dead} failed for b'/app'")
    gw.wait_log("final /app 502")  # the response side ran on the gateway's answer
    redis.publish("clock", "still")
    assert stream.read_events(1) == ["still"]
    stream.close()


def test_upstream_silent_is_504_at_the_head_timeout(gateway_factory, redis_server) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts (the kernel does) but never answers
    port = listener.getsockname()[1]
    try:
        gw = gateway_factory("[uwsgi]\nproxy-head-timeout = 1\n", redis=redis_server.address,
                             args=("--proxy", f"http://127.0.0.1:{port}")).start()
        started = time.monotonic()
        client = get(gw.port, "/slow")
        assert client.status == 504
        assert 0.9 < time.monotonic() - started < 5
        gw.wait_log("timed out")
    finally:
        listener.close()


# --- bounded memory (acceptance 5) -----------------------------------------------------------
BIG = 200 * 1024 * 1024
#: Acceptance 5: RSS growth of the gateway for a 200 MB transfer either way.
RSS_BUDGET = 50 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class _PeakRSS:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = self.peak = rss_bytes(pid)
        self.running = True
        self.samples = 0
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_bytes(self.pid))
            self.samples += 1
            time.sleep(0.02)  # a sampling period, not a wait on a condition

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak - self.base


def _warm(gw) -> None:
    client = get(gw.port, "/warm")
    client.read_until(lambda c: c.body == b"bulk /warm", what="warm-up")
    client.close()


def test_200mb_download_with_bounded_memory(
    gateway_factory, redis_server, bulk_upstream, record_property
) -> None:
    gw = gateway_factory("[uwsgi]\n", redis=redis_server.address,
                         args=("--proxy", bulk_upstream.url)).start()
    _warm(gw)
    rss = _PeakRSS(gw.proc.pid)
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(f"GET /download?n={BIG} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    received = 0
    head = b""
    deadline = time.monotonic() + 60
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    received = len(head.split(b"\r\n\r\n", 1)[1])
    assert b"Content-Length: %d" % BIG in head
    # A stalled client: without backpressure the gateway would buffer the upstream's body.
    samples = rss.samples
    wait_for(lambda: rss.samples > samples + 50, timeout=10, what="RSS samples while stalled")
    while received < BIG and time.monotonic() < deadline:
        data = sock.recv(1 << 20)
        if not data:
            break
        received += len(data)
    sock.close()
    growth = rss.stop()
    record_property("rss_growth_download", growth)
    print(f"200 MB download: gateway RSS {rss.base / 2**20:.1f} MiB, grew {growth / 2**20:.1f} MiB")
    assert received == BIG
    assert growth < RSS_BUDGET


def test_200mb_upload_with_bounded_memory(
    gateway_factory, redis_server, bulk_upstream, record_property
) -> None:
    gw = gateway_factory("[uwsgi]\n", redis=redis_server.address,
                         args=("--proxy", bulk_upstream.url)).start()
    _warm(gw)
    rss = _PeakRSS(gw.proc.pid)
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(
        f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {BIG}\r\n\r\n".encode()
    )
    block = b"y" * (1 << 20)
    for _ in range(BIG // len(block)):
        sock.sendall(block)
    sock.settimeout(60)
    answer = b""
    while not answer.endswith(b"%d" % BIG):
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    sock.close()
    growth = rss.stop()
    record_property("rss_growth_upload", growth)
    print(f"200 MB upload: gateway RSS {rss.base / 2**20:.1f} MiB, grew {growth / 2**20:.1f} MiB")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert answer.endswith(b"%d" % BIG)
    assert growth < RSS_BUDGET


def test_request_smuggling_is_refused(gateway_factory, redis_server, bulk_upstream) -> None:
    """Both Content-Length and Transfer-Encoding: the request is refused, never forwarded."""
    import socket as socket_module

    gw = gateway_factory("[uwsgi]\n", redis=redis_server.address,
                         args=("--proxy", bulk_upstream.url)).start()
    s = socket_module.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(
        b"POST /headers HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = s.recv(4096)
        if not chunk:
            break
        answer += chunk
    s.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
