"""Production behaviour through the real gateway: limits, slow clients, drain, admin."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway_helpers import wait_numsub
from redis_helpers import free_port, http_get, wait_for, wait_for_http
from sse_client import SSEClient

RULES = """\
    [uwsgi]
    route = ^/clock sse:clock
    route = ^/gapped sse:subscribe=clock,gap=event
    route = ^/ch/(.*)$ sse:$1
"""


def stream(gw, path: str, **kwargs) -> SSEClient:
    c = SSEClient(gw.port, path, **kwargs)
    assert c.read_head() == 200, c.raw
    return c


def _status_is(code: int):
    return lambda status, _body: status == code


def _metric(body: bytes, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise AssertionError(f"{name} {labels} not in metrics")


def test_long_channel_names_are_refused(gateway_factory, redis_server) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address).start()
    c = SSEClient(gw.port, "/ch/" + "a" * 1025)
    assert c.read_head() == 400
    c.close()
    c = stream(gw, "/ch/" + "a" * 1024)
    c.close()


def test_gap_event_when_the_route_asks_for_it(gateway_factory, fresh_redis) -> None:
    gw = gateway_factory(RULES, redis=fresh_redis.address).start()
    c = stream(gw, "/gapped")
    r = fresh_redis.client()
    wait_numsub(r, "clock", 1)
    r.close()
    fresh_redis.restart()
    c.read_until(lambda cl: b"event: gap\n" in cl.body, timeout=20, what="the gap event")
    assert c.body.startswith(b"event: gap\ndata: ")
    c.close()


def test_admin_metrics_and_health(gateway_factory, fresh_redis) -> None:
    admin_port = free_port()
    gw = gateway_factory(
        RULES, redis=fresh_redis.address,
        args=("--admin", f"tcp:{admin_port}:interface=127.0.0.1"),
    ).start()
    base = f"http://127.0.0.1:{admin_port}"
    # The admin listener may open a moment after the main one: a refused connection is retried.
    wait_for_http(base + "/health", _status_is(200), what="ready")
    clients = [stream(gw, "/clock") for _ in range(3)]
    r = fresh_redis.client()
    wait_numsub(r, "clock", 1)
    r.publish("clock", "1")
    for c in clients:
        c.read_events(1)
    code, body = http_get(base + "/metrics")
    assert code == 200
    assert _metric(body, "sse_offload_clients") == 3
    assert _metric(body, "sse_offload_messages_delivered_total") == 3
    assert _metric(body, "sse_offload_requests_total", outcome="stream") == 3
    assert _metric(body, "sse_offload_requests_total", outcome="offload") == 3
    nothing = SSEClient(gw.port, "/nothing")
    assert nothing.read_head() == 404
    nothing.close()
    assert _metric(http_get(base + "/metrics")[1], "sse_offload_requests_total",
                   outcome="continue") == 1
    clients[0].close()
    wait_for(lambda: _metric(http_get(base + "/metrics")[1], "sse_offload_clients") == 2,
             what="a client leaving to show")
    assert _metric(http_get(base + "/metrics")[1], "sse_offload_streams_closed_total",
                   reason="client") == 1
    r.close()
    fresh_redis.stop()
    wait_for_http(base + "/health", _status_is(503), what="unready while Redis is down")
    fresh_redis.start()
    wait_for_http(base + "/health", _status_is(200), timeout=20, what="ready again")
    for c in clients[1:]:
        c.close()


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args: object) -> None:
        pass


def test_the_admin_poll_waits_for_a_listener_that_is_not_up_yet() -> None:
    # The admin port opens after the gateway's main port: connections to it are refused for
    # a moment, and the poll must wait through that rather than fail on the first refusal.
    port = free_port()
    servers: list[http.server.HTTPServer] = []

    def listen_later() -> None:
        time.sleep(0.5)
        server = http.server.HTTPServer(("127.0.0.1", port), _Ok)
        servers.append(server)
        server.serve_forever(poll_interval=0.05)

    thread = threading.Thread(target=listen_later, daemon=True)
    thread.start()
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/health", _status_is(200),
                             what="ready") == (200, b"ok\n")
    finally:
        wait_for(lambda: servers, what="the late listener to start")
        servers[0].shutdown()
        servers[0].server_close()
        thread.join(timeout=5)


def test_the_admin_poll_fails_with_a_clear_message_at_its_deadline() -> None:
    url = f"http://127.0.0.1:{free_port()}/health"  # nothing listens there
    with pytest.raises(AssertionError) as failed:
        wait_for_http(url, _status_is(200), timeout=0.3, what="ready")
    message = str(failed.value)
    assert message.startswith(f"timed out after 0.3s waiting for ready from {url}; last: ")
    assert "Connection refused" in message


def _read_streams(port: int, count: int, conn) -> None:
    """A reader process: ``count`` streams read as fast as they come; reports event counts.

    A process of its own, so the test's publisher and the readers don't share one GIL: the
    normal clients must really keep up (100 MB/s in all) for the test to mean anything.
    """
    import selectors

    # Forked from a process whose reactor handles SIGTERM: take the default back, so the
    # parent can always end this child.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sel = selectors.DefaultSelector()
    counts = {}
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /clock HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:  # the head is out: the stream listens
            head += s.recv(4096)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        counts[s] = [0, b"", False]  # events, tail, closed
    conn.send("ready")
    while True:
        if conn.poll():
            try:
                command = conn.recv()
            except EOFError:
                break  # the test is gone
            if command == "stop":
                break
            conn.send([(n, closed) for n, _, closed in counts.values()])
        for key, _ in sel.select(0.1):
            state = counts[key.fileobj]
            try:
                data = key.fileobj.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                state[2] = True
                sel.unregister(key.fileobj)
                continue
            chunk = state[1] + data
            state[0] += chunk.count(b"data: ")
            state[1] = chunk[-5:]  # a "data: " split over two reads is counted once
            state[0] -= state[1].count(b"data: ")
    conn.send([(n, closed) for n, _, closed in counts.values()])


def test_slow_clients_are_cut_off_and_the_others_keep_up(gateway_factory, redis_server,
                                                         redis) -> None:
    import multiprocessing

    gw = gateway_factory(RULES, redis=redis_server.address).start()
    stuck = []
    for _ in range(50):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # never read: fills at once
        s.connect(("127.0.0.1", gw.port))
        s.sendall(b"GET /clock HTTP/1.1\r\nHost: x\r\n\r\n")
        stuck.append(s)
    readers = []
    for _ in range(2):
        parent, child = multiprocessing.Pipe()
        # daemon: never outlives the test run, even when an assertion stops the test early
        p = multiprocessing.get_context("fork").Process(
            target=_read_streams, args=(gw.port, 100, child), daemon=True
        )
        p.start()
        readers.append((p, parent))
    try:
        _drive_slow_client_scenario(gw, redis, stuck, readers)
    finally:
        for p, _ in readers:
            if p.is_alive():
                p.kill()
            p.join(10)


def _drive_slow_client_scenario(gw, redis, stuck, readers) -> None:
    for _, parent in readers:
        assert parent.poll(30) and parent.recv() == "ready"
    wait_numsub(redis, "clock", 1)
    wait_for(lambda: redis.publish("clock", "warm-up") and True, what="a first publish")
    payload = b"x" * 1024
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < 8:
        redis.publish("clock", payload)
        sent += 1
        time.sleep(max(0.0, start + sent / 500 - time.monotonic()))

    def report() -> list[tuple[int, bool]]:
        out = []
        for _, parent in readers:
            parent.send("report")
            assert parent.poll(30)
            out += parent.recv()
        return out

    # On two shared cores the fan-out (100 MB/s) may lag the publisher; nothing may be lost.
    try:
        wait_for(lambda: [n for n, _ in report()] == [sent + 1] * 200 or None, timeout=60,
                 interval=0.5, what="every normal client to get every message")
    finally:
        results = report()
        for p, parent in readers:
            parent.send("stop")
            p.join(10)
    assert all(not closed for _, closed in results), "a normal client was cut off"
    closed = 0
    for s in stuck:
        s.setblocking(False)
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    closed += 1
                    break
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
        s.close()
    assert closed == 50, f"only {closed} of the 50 stuck clients were cut off"
    rss_kib = int(next(line.split()[1] for line in open(f"/proc/{gw.proc.pid}/status")
                       if line.startswith("VmRSS:")))
    assert rss_kib < 300 * 1024, f"gateway RSS {rss_kib} KiB"
    print(f"gateway RSS after the slow-client run: {rss_kib / 1024:.1f} MiB; {sent} messages")


def test_sigterm_drains_streams_with_retry_hints(gateway_factory, redis_server) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address, args=("--drain", "1")).start()
    clients = [stream(gw, "/clock") for _ in range(500)]
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    status = gw.proc.wait(timeout=10)
    assert time.monotonic() - t0 < 1 + 2
    assert status in (0, -signal.SIGTERM)
    for c in clients:
        c.wait_closed()
        assert c.body.startswith(b"retry: "), c.body[:50]
        c.close()


def test_sigterm_leaves_no_mule_or_redis_behind(gateway_factory, tmp_path) -> None:
    mule = tmp_path / "sleeper.py"
    mule.write_text("import time\nwhile True:\n    time.sleep(1)\n")
    gw = gateway_factory(f"[uwsgi]\nmule = {mule}\nroute = ^/x sse:x\n", redis="embedded",
                         args=("--drain", "0"))
    gw.start()
    wait_for(lambda: "mule" in gw.log() and "started" in gw.log(), what="the mule")
    children = open(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read().split()
    assert len(children) == 2  # redis-server and the mule
    gw.stop()
    for pid in map(int, children):
        wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), what=f"pid {pid} to exit")


def test_max_clients(gateway_factory, redis_server) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address, args=("--max-clients", "100"))
    gw.start()
    clients = [stream(gw, "/clock") for _ in range(100)]
    full = SSEClient(gw.port, "/clock")  # Accept: text/event-stream
    assert full.read_head() == 200
    full.read_until(lambda c: c.body.endswith(b"\n\n"), what="the retry hint")
    assert full.body.startswith(b"retry: ")
    # the response ends there (its length is given), so the EventSource comes back later
    assert full.header("Content-Length") == str(len(full.body))
    full.close()
    plain = SSEClient(gw.port, "/clock", headers={"Accept": "*/*"})
    assert plain.read_head() == 503
    assert plain.header("Retry-After") == "5"
    plain.close()
    clients.pop().close()

    def room() -> bool:
        c = SSEClient(gw.port, "/clock", headers={"Accept": "*/*"})
        if c.read_head() == 200:
            clients.append(c)
            return True
        c.close()
        return False

    wait_for(room, what="room for a new stream once one left")
    for c in clients:
        c.close()


def test_max_clients_per_ip(gateway_factory, redis_server) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address,
                         args=("--max-clients-per-ip", "2")).start()
    a, b = stream(gw, "/clock"), stream(gw, "/clock")
    third = SSEClient(gw.port, "/clock", headers={"Accept": "*/*"})
    assert third.read_head() == 503
    for c in (a, b, third):
        c.close()


def test_sighup_reloads_the_rules_and_keeps_open_streams(gateway_factory, redis_server,
                                                         redis) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address).start()
    old = stream(gw, "/clock")
    gw.rules_path.write_text("[uwsgi]\nroute = ^/clock sse:clock\nroute = ^/new sse:fresh\n")
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_log("reload: ")
    new = stream(gw, "/new")
    wait_numsub(redis, "fresh", 1)
    redis.publish("fresh", "f")
    assert new.read_events(1) == ["f"]
    wait_numsub(redis, "clock", 1)
    redis.publish("clock", "c")
    assert old.read_events(1) == ["c"], "an open stream goes on after a reload"
    gone = SSEClient(gw.port, "/gapped")  # no longer routed
    assert gone.read_head() == 404
    gone.close()

    gw.rules_path.write_text("[uwsgi]\nroute = ^/x\n")
    gw.proc.send_signal(signal.SIGHUP)
    log = gw.wait_log("the rules in force stay")
    assert f"{gw.rules_path}:2:" in log
    still = stream(gw, "/new")  # the previous rules are still in force
    for c in (old, new, still):
        c.close()


def test_a_request_head_sent_too_slowly_is_cut_off(gateway_factory, redis_server) -> None:
    HEADER_DEADLINE = 3.0
    gw = gateway_factory(RULES, redis=redis_server.address,
                         args=("--header-timeout", "3")).start()
    slow = socket.create_connection(("127.0.0.1", gw.port), timeout=HEADER_DEADLINE + 15)
    slow.sendall(b"GET /clock HTTP/1.1\r\n")
    t0 = time.monotonic()
    deadline = t0 + HEADER_DEADLINE + 10
    closed = False
    while time.monotonic() < deadline and not closed:
        try:
            slow.sendall(b"X-Drip: 1\r\n")  # a header line now and then: the idle timeout resets
        except OSError:
            closed = True
            break
        try:
            slow.settimeout(0.5)
            closed = slow.recv(100) == b""
        except TimeoutError:
            pass
        except OSError:
            closed = True
    assert closed, "the slow client was never cut off"
    assert HEADER_DEADLINE - 0.5 < time.monotonic() - t0 < HEADER_DEADLINE + 3
    slow.close()
    ok = stream(gw, "/clock")  # an ordinary client is unaffected
    ok.close()


def test_a_ten_mebibyte_message_is_dropped_and_the_stream_goes_on(gateway_factory,
                                                                 redis_server, redis) -> None:
    gw = gateway_factory(RULES, redis=redis_server.address).start()
    c = stream(gw, "/clock")
    wait_numsub(redis, "clock", 1)
    redis.publish("clock", b"\x00\xff" * (5 << 20))  # 10 MiB of NUL and invalid UTF-8
    redis.publish("clock", "small")
    assert c.read_events(1) == ["small"]
    assert len(c.body) < 100
    gw.wait_log("over the 1048576-byte limit")
    c.close()
