"""1,000 clients on one channel share one Redis subscription (docs/architecture.md,
difference 1: the original plugin opened a Redis connection per client)."""

from __future__ import annotations

import selectors
import time

from gateway_helpers import wait_numsub
from sse_client import SSEClient

N_CLIENTS = 1000


def _pump(clients: list[SSEClient], done, timeout: float, what: str) -> None:
    """Read from every client without blocking until ``done(client)`` holds for all."""
    sel = selectors.DefaultSelector()
    waiting = {c.sock.fileno(): c for c in clients if not done(c)}
    for fd in waiting:
        sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while waiting:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{len(waiting)} clients still waiting for {what}"
        for key, _ in sel.select(remaining):
            c = waiting[key.fd]
            data = c.sock.recv(65536)
            assert data, f"client closed while waiting for {what}"
            c.feed(data)
            if done(c):
                sel.unregister(key.fd)
                del waiting[key.fd]
    sel.close()


def test_thousand_clients_one_subscription(gateway_factory, redis_server, redis) -> None:
    gw = gateway_factory("[uwsgi]\nroute = ^/clock sse:clock\n", redis=redis_server.address)
    gw.start()
    clients = [SSEClient(gw.port, "/clock") for _ in range(N_CLIENTS)]
    _pump(clients, lambda c: c.head is not None, 60, "the response head")
    assert {c.status for c in clients} == {200}
    wait_numsub(redis, "clock", 1)
    assert redis.publish("clock", "tick") == 1, "one subscriber: the gateway process"
    # (a keepalive comment may come first on a slow machine)
    _pump(clients, lambda c: c.body.endswith(b"data: tick\n\n"), 60, "the message")
    for c in clients:
        c.close()
    wait_numsub(redis, "clock", 0, timeout=30)
    assert b"clock" not in redis.channels()
