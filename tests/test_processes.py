"""``--processes N``: workers sharing the listening socket, each with its own subscription."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway_helpers import wait_numsub
from redis_helpers import free_port, wait_for
from sse_client import SSEClient
from twisted_helpers import pid_gone
from upstream_helpers import APPS, Gunicorn

#: Every answer says which worker made it.
PID_RULES = "[uwsgi]\nroute-run = addheader:X-Pid: ${uwsgi[pid]}\nroute = ^/s sse:s\n"


def _worker_pids(master_pid: int) -> list[int]:
    try:
        text = open(f"/proc/{master_pid}/task/{master_pid}/children").read()
    except OSError:
        return []
    pids = []
    for pid in map(int, text.split()):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"sse_offload.processes.worker" in cmd:
            pids.append(pid)
    return pids


def test_two_workers_share_the_port_and_subscribe_once_each(
    gateway_factory, redis_server, redis
) -> None:
    gw = gateway_factory(
        "[uwsgi]\nroute = ^/clock sse:clock\n", redis=redis_server.address,
        args=("--processes", "2"),
    ).start()
    workers = wait_for(
        lambda: len(_worker_pids(gw.proc.pid)) == 2 and _worker_pids(gw.proc.pid),
        what="two workers",
    )
    clients = []
    for _ in range(40):
        c = SSEClient(gw.port, "/clock")
        assert c.read_head() == 200
        clients.append(c)
    # one Redis subscription per worker process, whatever the number of clients
    wait_numsub(redis, "clock", 2)
    redis.publish("clock", "tick")
    for c in clients:
        assert c.read_events(1) == ["tick"]
        c.close()
    wait_numsub(redis, "clock", 0)

    # a worker that dies is restarted
    os.kill(workers[0], signal.SIGKILL)
    wait_for(
        lambda: len(_worker_pids(gw.proc.pid)) == 2
        and workers[0] not in _worker_pids(gw.proc.pid),
        timeout=15, what="the killed worker to be replaced",
    )
    assert "exited with signal 9" in gw.wait_log("restarting in")

    # SIGTERM to the master stops every worker
    current = _worker_pids(gw.proc.pid)
    # twistd re-raises the SIGTERM it handled once it has shut down cleanly
    assert gw.stop() in (0, -signal.SIGTERM)
    wait_for(lambda: all(pid_gone(p) for p in current), what="the workers to exit")


def test_processes_from_the_rules_file(gateway_factory, redis_server, redis) -> None:
    gw = gateway_factory(
        "[uwsgi]\nprocesses = 2\nroute = ^/x sse:x\n", redis=redis_server.address
    ).start()
    wait_for(lambda: len(_worker_pids(gw.proc.pid)) == 2, what="two workers")
    c = SSEClient(gw.port, "/x")
    assert c.read_head() == 200
    c.close()


def test_processes_need_an_endpoint_the_master_can_open(gateway_factory, redis_server) -> None:
    gw = gateway_factory(
        "[uwsgi]\nroute = ^/x sse:x\n", redis=redis_server.address,
        args=("--processes", "2", "--listen", "systemd:domain=INET:index=0"),
    )
    status, output = gw.run_to_exit()
    assert status != 0
    assert "--processes needs tcp:, tcp6: or unix: listen endpoints" in output


def test_sighup_reaches_every_worker(gateway_factory, redis_server) -> None:
    gw = gateway_factory(
        "[uwsgi]\nroute = ^/x sse:x\n", redis=redis_server.address, args=("--processes", "2"),
    ).start()
    wait_for(lambda: gw.log().count("serving") == 2, what="two workers serving")
    gw.rules_path.write_text("[uwsgi]\nroute = ^/x sse:x\nroute = ^/new sse:new\n")
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: gw.log().count("applied to new requests") == 3,
             what="the master and both workers to reload")
    for _ in range(20):  # spread over both workers by the kernel
        c = SSEClient(gw.port, "/new")
        assert c.read_head() == 200
        c.close()


def test_shared_counts_sum_every_workers_slot() -> None:
    from sse_offload.processes.counts import SharedCounts, create_block

    fd = create_block(3)
    try:
        first, second = SharedCounts(fd, 0), SharedCounts(fd, 2)
        first.set(4)
        second.set(5)
        assert first.total() == second.total() == 9
        second.clear(0)  # as the master does for a worker that exited
        assert first.total() == 5
        first.close()
        second.close()
    finally:
        os.close(fd)


class _Streams:
    """Streams held open on a gateway, by the pid of the worker serving each."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.by_pid: dict[int, list[SSEClient]] = defaultdict(list)

    def attempt(self, accept: str = "*/*") -> tuple[int, int, SSEClient]:
        """One request for /s: (status, pid of the worker that answered, the client)."""
        client = SSEClient(self.port, "/s", headers={"Accept": accept})
        status = client.read_head()
        return status, int(client.header("X-Pid") or 0), client

    def open(self) -> int | None:
        """Open a stream and keep it; the worker's pid, or None when refused (503)."""
        status, pid, client = self.attempt()
        if status == 200:
            self.by_pid[pid].append(client)
            return pid
        assert status == 503, client.raw
        client.close()
        return None

    def close_one(self, pid: int) -> None:
        self.by_pid[pid].pop().close()

    def count(self) -> int:
        return sum(map(len, self.by_pid.values()))

    def close_all(self) -> None:
        for clients in self.by_pid.values():
            for c in clients:
                c.close()

    def spread(self, total: int) -> None:
        """Open ``total`` streams held by both workers (the kernel picks the worker: when it
        puts them all on one, move some until the other holds one too)."""
        for _ in range(total):
            assert self.open() is not None, f"refused with {self.count()} open"
        while len([p for p, c in self.by_pid.items() if c]) < 2:
            self.close_one(next(p for p, c in self.by_pid.items() if c))
            wait_for(lambda: self.open() is not None, what="the freed place to be taken")


def test_max_clients_caps_the_whole_gateway_not_each_worker(
    gateway_factory, redis_server
) -> None:
    gw = gateway_factory(
        PID_RULES, redis=redis_server.address, args=("--processes", "2", "--max-clients", "10")
    ).start()
    wait_for(lambda: gw.log().count("serving") == 2, what="two workers serving")
    streams = _Streams(gw.port)
    try:
        streams.spread(10)  # both workers hold some; with shares of 5 each, an uneven split
        # would already have been refused
        first, second = (p for p, c in streams.by_pid.items() if c)

        # the 11th is refused, whichever worker the kernel hands it to
        refused_by: set[int] = set()

        def refused() -> bool:
            status, pid, client = streams.attempt()
            client.close()
            assert status == 503, f"an 11th stream was admitted by worker {pid}"
            refused_by.add(pid)
            return refused_by == {first, second}

        wait_for(refused, what="both workers to refuse an 11th stream")
        # an EventSource is told to come back later, not given a 503 it would never retry
        status, _, client = streams.attempt("text/event-stream")
        client.read_until(lambda c: c.body.endswith(b"\n\n"), what="the retry: hint")
        assert status == 200 and client.body.startswith(b"retry: "), client.raw
        client.close()

        # a place freed on one worker is the other's to take too: the cap is the gateway's
        streams.close_one(first)

        def admitted_by_second() -> bool:
            pid = streams.open()
            if pid == first:  # it took the place back: free another one there
                streams.close_one(first)
            return pid == second

        wait_for(admitted_by_second, what="the other worker to admit a stream")
        assert len(streams.by_pid[second]) >= 2 and streams.count() == 10
        assert streams.open() is None
    finally:
        streams.close_all()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _metrics(port: int) -> dict[str, float]:
    """The unlabelled samples of /metrics, by name (prometheus-client's parser)."""
    status, text = _get(port, "/metrics")
    assert status == 200, text
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


def test_admin_sums_the_workers_and_health_waits_for_all_of_them(
    gateway_factory, redis_server, redis
) -> None:
    admin = free_port()
    gw = gateway_factory(
        PID_RULES, redis=redis_server.address,
        args=("--processes", "2", "--admin", f"tcp:{admin}:interface=127.0.0.1"),
    ).start()
    wait_for(lambda: _get(admin, "/health")[0] == 200, what="every worker ready")
    streams = _Streams(gw.port)
    try:
        streams.spread(6)
        wait_numsub(redis, "s", 2)
        m = _metrics(admin)
        assert m["sse_offload_clients"] == 6  # 6 streams, on two workers
        assert (m["sse_offload_workers"], m["sse_offload_workers_up"]) == (2, 2)
        assert m["sse_offload_worker_restarts_total"] == 0

        redis.publish("s", "one")
        redis.publish("s", "two")
        for clients in streams.by_pid.values():
            for c in clients:
                assert c.read_events(2) == ["one", "two"]
        after = wait_for(
            lambda: (x := _metrics(admin))["sse_offload_messages_delivered_total"]
            - m["sse_offload_messages_delivered_total"] == 6 * 2 and x,
            what="12 deliveries counted",
        )
        # each worker receives each message once
        assert after["sse_offload_messages_received_total"] - m[
            "sse_offload_messages_received_total"] == 2 * 2

        # a worker killed: /health says so until its successor answers
        victim, survivor = streams.by_pid
        os.kill(victim, signal.SIGKILL)
        _, text = wait_for(
            lambda: (r := _get(admin, "/health"))[0] == 503 and r, what="/health to go 503"
        )
        assert "not answering" in text, text
        m = _metrics(admin)
        assert m["sse_offload_workers_up"] == 1
        assert m["sse_offload_clients"] == len(streams.by_pid[survivor])
        wait_for(lambda: _get(admin, "/health") == (200, "ready\n"), timeout=20,
                 what="/health to be 200 after the restart")
        m = _metrics(admin)
        assert (m["sse_offload_workers_up"], m["sse_offload_worker_restarts_total"]) == (2, 1)
        assert "left out of /health" in gw.log()
    finally:
        streams.close_all()


APP_RULES = (
    "[uwsgi]\nroute-run = addheader:X-Pid: ${uwsgi[pid]}\n"
    "final-route-if-not = empty:${X-SSE-OFFLOAD} sse:${X-SSE-OFFLOAD}\n"
)


def _answers_from_both_workers(port: int, path: str, body: bytes) -> None:
    pids: set[int] = set()

    def answered() -> bool:
        client = SSEClient(port, path, headers={"Accept": "*/*"})
        assert client.read_head() == 200, client.raw
        client.read_until(lambda c: c.body == body, what="the app's answer")
        pids.add(int(client.header("X-Pid") or 0))
        client.close()
        return len(pids) == 2

    wait_for(answered, what="both workers to answer through the app")


def test_every_worker_hosts_the_wsgi_app(gateway_factory, redis_server, redis) -> None:
    gw = gateway_factory(
        APP_RULES + f"wsgi-file = {APPS / 'probe.py'}\n", redis=redis_server.address,
        args=("--processes", "2"),
    ).start()
    _answers_from_both_workers(gw.port, "/hello", b"plain /hello")
    client = SSEClient(gw.port, "/x?var=clock")  # the app offloads with uwsgi.add_var
    assert client.read_head() == 200
    assert client.header("Content-Type") == "text/event-stream"
    wait_numsub(redis, "clock", 1)
    redis.publish("clock", "tick")
    assert client.read_events(1) == ["tick"]
    client.close()


def test_each_worker_has_its_own_worker_number(gateway_factory, redis_server) -> None:
    gw = gateway_factory(
        "[uwsgi]\nroute-run = addheader:X-Wid: ${uwsgi[wid]}\n"
        f"wsgi-file = {APPS / 'probe.py'}\n",
        redis=redis_server.address, args=("--processes", "2"),
    ).start()
    seen: dict[str, dict[str, object]] = {}

    def both() -> bool:
        client = SSEClient(gw.port, "/opt", headers={"Accept": "*/*"})
        assert client.read_head() == 200, client.raw
        client.read_until(lambda c: c.body.endswith(b"}"), what="the app's json")
        seen[client.header("X-Wid") or ""] = json.loads(client.body)
        client.close()
        return len(seen) == 2

    wait_for(both, what="both workers to answer")
    # ${uwsgi[wid]} and the app's uwsgi.worker_id() agree, from 1, as uWSGI's do.
    assert {wid: (app["worker_id"], app["numproc"]) for wid, app in seen.items()} == {
        "1": (1, 2), "2": (2, 2),
    }


def test_every_worker_proxies_to_the_upstream(
    gateway_factory, redis_server, tmp_path: Path
) -> None:
    upstream = Gunicorn("bulk:application", APPS, tmp_path / "gunicorn.log", workers=1)
    upstream.start()
    try:
        gw = gateway_factory(
            APP_RULES, redis=redis_server.address,
            args=("--processes", "2", "--proxy", upstream.url),
        ).start()
        _answers_from_both_workers(gw.port, "/download?n=5", b"xxxxx")
    finally:
        upstream.stop()


def _gateway_redis_connections(redis) -> list[dict[str, str]]:
    """CLIENT LIST without the test's own connection: on a Redis of the test's own, the
    gateway's connections (on a shared one, other tests' clients would count too)."""
    own = redis.call("CLIENT", "ID")
    rows = [
        dict(field.split("=", 1) for field in line.split())
        for line in redis.call("CLIENT", "LIST").decode().splitlines()
    ]
    return [r for r in rows if int(r["id"]) != own]


@pytest.fixture
def own_redis(fresh_redis):
    """A client of a redis-server nobody but this test and its gateway uses."""
    client = fresh_redis.client()
    yield client
    client.close()


@pytest.mark.parametrize("processes", [1, 2])
def test_one_redis_connection_per_process_whatever_the_clients_and_channels(
    gateway_factory, fresh_redis, own_redis, processes
) -> None:
    redis = own_redis
    channels = [f"c{i}" for i in range(30)]
    gw = gateway_factory(
        "[uwsgi]\nroute = ^/s/(.*)$ sse:$1\n", redis=fresh_redis.address,
        args=("--processes", str(processes)),
    ).start()
    if processes > 1:
        wait_for(lambda: len(_worker_pids(gw.proc.pid)) == processes, what="the workers")
    clients = []
    for channel in channels * 4:  # 120 clients, 4 on each of 30 channels
        c = SSEClient(gw.port, f"/s/{channel}")
        assert c.read_head() == 200
        clients.append(c)
    wait_for(lambda: all(redis.numsub(ch) >= 1 for ch in channels), what="every channel")
    conns = _gateway_redis_connections(redis)
    assert len(conns) == processes, conns
    # each is a subscriber connection carrying its process's channels, one subscription each
    assert all("P" in c["flags"] and int(c["sub"]) >= 1 for c in conns)
    assert sum(int(c["sub"]) for c in conns) == sum(redis.numsub(ch) for ch in channels)
    assert all(redis.numsub(ch) <= processes for ch in channels)
    redis.publish("c7", "seven")
    for c in clients[7::30]:
        assert c.read_events(1) == ["seven"]
    for c in clients:
        c.close()


def _exited(pid: int) -> bool:
    """True once ``pid`` has ended: gone, or a zombie nobody has reaped yet (a zombie holds
    no socket; an orphan's is reaped by whoever adopts it, maybe late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def _port_free(port: int) -> bool:
    """True if a socket without SO_REUSEPORT can bind 127.0.0.1:``port``: nothing listens."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_workers_end_when_their_master_is_killed(gateway_factory, redis_server, redis) -> None:
    gw = gateway_factory(
        "[uwsgi]\nroute = ^/s sse:s\n", redis=redis_server.address, args=("--processes", "2"),
    ).start()
    assert gw.proc is not None
    wait_for(lambda: gw.log().count("serving") == 2, what="two workers serving")
    workers = _worker_pids(gw.proc.pid)
    assert len(workers) == 2
    client = SSEClient(gw.port, "/s")  # a worker with a stream open ends too
    assert client.read_head() == 200
    wait_numsub(redis, "s", 1)

    gw.proc.send_signal(signal.SIGKILL)  # as the OOM killer does: no chance to stop them
    gw.proc.wait()
    wait_for(lambda: all(_exited(p) for p in workers), timeout=5,
             what="the workers to end with their master")
    assert _port_free(gw.port)  # nobody left accepting on the gateway's port
    client.close()
