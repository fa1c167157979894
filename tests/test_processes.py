"""``--processes N``: workers sharing the listening socket, each with its own subscription."""

from __future__ import annotations

import os
import signal

from gateway_helpers import wait_numsub
from redis_helpers import wait_for
from sse_client import SSEClient


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
        if b"sse_offload.worker" in cmd:
            pids.append(pid)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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
    wait_for(lambda: not any(_alive(p) for p in current), what="the workers to exit")


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
