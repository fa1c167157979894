"""A gateway on ``--redis redis-sentinel://...`` through real failovers: a master, replicas
and three sentinels (sentinel_helpers.SentinelSet), all started here, on free ports.

The figures the README quotes come from these tests: run them with ``-s`` to see them.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable

import pytest

from gateway_helpers import GatewayProcess, wait_numsub
from redis_helpers import RespClient, free_port, wait_for, wait_for_http
from sentinel_helpers import SentinelSet, SwitchListener
from sse_client import SSEClient
from test_many_clients import _pump
from test_publish import SECRET, post, token
from test_resume import parsed

#: The acceptance figure: every stream has a message again within this of the switch.
RESUME_WITHIN = 5.0
PUBLISH_EVERY = 0.05


@pytest.fixture
def sentinels(tmp_path_factory):
    made: list[SentinelSet] = []

    def start(**kwargs) -> SentinelSet:
        s = SentinelSet(tmp_path_factory.mktemp("sent"), **kwargs)
        made.append(s)
        return s.start()

    yield start
    for s in made:
        s.stop()


class Publisher(threading.Thread):
    """PUBLISHes 0, 1, 2, ... to whichever server is master: the one the test's own switch
    listener last heard of. Records (number, port published to)."""

    def __init__(self, redis: SentinelSet, listener: SwitchListener, channel: str) -> None:
        super().__init__(daemon=True)
        self.set, self.listener, self.channel = redis, listener, channel
        self.port = redis.master_port()
        self.sent: list[tuple[int, int]] = []
        self.stopping = False

    def master_port(self) -> int:
        if self.listener.switches:
            return int(self.listener.switches[-1][1].split()[4])
        return self.port

    def run(self) -> None:
        client: RespClient | None = None
        n = 0
        while not self.stopping:
            port = self.master_port()
            try:
                if client is None or port != self.port:
                    if client is not None:
                        client.close()
                    self.port, client = port, RespClient.tcp(port)
                client.publish(self.channel, str(n))
                self.sent.append((n, port))
                n += 1
            except (OSError, ConnectionError, RuntimeError):
                client = None  # a killed master: until the switch names another
            time.sleep(PUBLISH_EVERY)
        if client is not None:
            client.close()

    def first_to(self, port: int) -> int:
        """The first number published to the server on ``port``."""
        wait_for(lambda: any(p == port for _, p in self.sent), what=f"a publish to {port}")
        return next(n for n, p in self.sent if p == port)


def _numbers(client: SSEClient) -> list[int]:
    return [int(e) for e in client.events()]


def _resumed(clients: list[SSEClient], first: int, since: float) -> list[float]:
    """Seconds from ``since`` until each client has a message numbered ``first`` or later."""
    seen: dict[int, float] = {}

    def done(c: SSEClient) -> bool:
        if id(c) not in seen and any(n >= first for n in _numbers(c)):
            seen[id(c)] = time.monotonic()
        return id(c) in seen

    _pump(clients, done, 30, f"message {first} or later")
    return sorted(seen[id(c)] - since for c in clients)


def _start_streams(gateway_factory, redis: SentinelSet, count: int, args: tuple[str, ...]):
    gw = gateway_factory("[uwsgi]\nroute = ^/c sse:clock\n", redis=redis.url(), args=args)
    gw.start()
    clients = [SSEClient(gw.port, "/c") for _ in range(count)]
    _pump(clients, lambda c: c.head is not None, 60, "the response head")
    assert {c.status for c in clients} == {200}
    master = redis.master().client()
    wait_numsub(master, "clock", 1)
    master.close()
    return gw, clients


def _forget_bodies(clients: list[SSEClient]) -> None:
    """Keep only what follows the last complete event: later checks parse less."""
    for c in clients:
        c.body = c.body[c.body.rfind(b"\n\n") + 2 :]


def _failover(
    gateway_factory,
    redis: SentinelSet,
    count: int,
    cause: Callable[[SentinelSet], None],
    args: tuple[str, ...] = (),
) -> tuple[list[float], list[SSEClient], GatewayProcess]:
    """Streams, a publisher, ``cause`` (a failover); the seconds each stream took from the
    switch the test saw to its first message published to the new master, the streams
    (open: the caller closes them) and the gateway."""
    gw, clients = _start_streams(gateway_factory, redis, count, args)
    listener = redis.listen_for_switch()
    publisher = Publisher(redis, listener, "clock")
    publisher.start()
    try:
        _pump(clients, lambda c: len(c.events()) >= 3, 30, "three messages")
        old = redis.master_port()
        cause(redis)
        switched_at, switch = listener.wait()
        new = int(switch.split()[4])
        assert new != old
        _forget_bodies(clients)
        delays = _resumed(clients, publisher.first_to(new), switched_at)
    finally:
        publisher.stopping = True
        publisher.join(timeout=5)
        listener.close()
    assert not any(c.closed for c in clients), "no stream dropped"
    for c in clients:
        assert b": redis reconnected; messages may have been missed" in c.body
    new_master = redis.server_on(new).client()
    wait_numsub(new_master, "clock", 1)  # the gateway's one subscription moved
    new_master.close()
    return delays, clients, gw


def _report(what: str, delays: list[float]) -> None:
    print(
        f"\n{what}: {len(delays)} streams resumed {delays[0]:.2f}-{delays[-1]:.2f} s after "
        f"the switch (median {statistics.median(delays):.2f} s)"
    )


def test_a_forced_failover_under_500_streams_drops_none_and_resumes_within_5s(
    gateway_factory, sentinels
) -> None:
    redis = sentinels()
    admin = free_port()
    delays, clients, gw = _failover(
        gateway_factory, redis, 500, SentinelSet.failover, args=("--admin", str(admin))
    )
    for c in clients:
        c.close()
    _report("forced failover", delays)
    assert delays[-1] <= RESUME_WITHIN, delays[-10:]
    log = gw.log()
    assert "+switch-master" in log and "dropping 1 connection(s)" in log
    # The status page names the master the connection follows now.
    _, body = wait_for_http(f"http://127.0.0.1:{admin}/status.json", lambda s, b: s == 200)
    (pubsub,) = [c for c in json.loads(body)["redis"] if c["kind"] == "pubsub"]
    assert pubsub["sentinel"]["master"] == f"127.0.0.1:{redis.master_port()}"
    assert pubsub["sentinel"]["switches"] >= 1


def test_a_killed_master_is_replaced_by_the_replica_and_the_streams_stay(
    gateway_factory, sentinels
) -> None:
    """The publish endpoint's link follows the failover too."""
    redis = sentinels()
    publish_port = free_port()
    args = ("--publish", str(publish_port), "--publish-key", SECRET)
    delays, clients, _ = _failover(
        gateway_factory, redis, 50, lambda s: s.master().kill(), args
    )
    _report("master killed", delays)
    assert delays[-1] <= RESUME_WITHIN, delays[-10:]

    def published() -> bool:
        status, _, answer = post(
            publish_port, "/publish/clock", {"data": "via-publish"}, bearer=token(["clock"])
        )
        return status == 200 and answer == {"receivers": 1}

    wait_for(published, timeout=10, what="a publish through the endpoint")
    _pump(clients, lambda c: b"data: via-publish\n" in c.body, 10, "the published message")
    for c in clients:
        c.close()


class StreamWriter(threading.Thread):
    """XADDs entries ``2-0`` ... with data ``e0`` ... to whichever server is master. Before
    the switch each entry is confirmed by ``WAIT 1`` (the replica has it); one that is not
    is written again, with the same id, once the switch names the new master."""

    def __init__(self, redis: SentinelSet, listener: SwitchListener, key: str, count: int):
        super().__init__(daemon=True)
        self.set, self.listener, self.key, self.count = redis, listener, key, count
        self.port = redis.master_port()
        self.written: list[str] = []
        self.unconfirmed = 0

    def run(self) -> None:
        client: RespClient | None = None
        i = 0
        while i < self.count:
            switched = bool(self.listener.switches)
            port = int(self.listener.switches[-1][1].split()[4]) if switched else self.port
            entry = f"{i + 2}-0"
            try:
                if client is None or port != self.port:
                    self.port, client = port, RespClient.tcp(port)
                try:
                    client.call("XADD", self.key, entry, "data", f"e{i}")
                except RuntimeError as e:  # written already, before a lost reply
                    assert "equal or smaller" in str(e), e
                if not switched and client.call("WAIT", 1, 1000) < 1:
                    self.unconfirmed += 1
                    time.sleep(PUBLISH_EVERY)
                    continue
            except (OSError, ConnectionError):
                client = None
                time.sleep(PUBLISH_EVERY)
                continue
            self.written.append(entry)
            i += 1
            time.sleep(PUBLISH_EVERY)
        if client is not None:
            client.close()


def test_a_streams_mode_stream_resumes_on_the_new_master_without_gap_or_repeat(
    gateway_factory, sentinels
) -> None:
    redis = sentinels()
    master = redis.master().client()
    start = master.call("XADD", "feed", "1-0", "data", "start").decode()
    master.close()
    # Two workers: each gets the redis-sentinel:// URL from the master, and follows on its own.
    gw = gateway_factory(
        "[uwsgi]\nroute = ^/s/(.+)$ sse:stream=$1\n", redis=redis.url(), args=("--processes", "2")
    ).start()
    clients = [SSEClient(gw.port, "/s/feed", headers={"Last-Event-ID": start}) for _ in range(20)]
    _pump(clients, lambda c: c.head is not None, 30, "the response head")
    listener = redis.listen_for_switch()
    writer = StreamWriter(redis, listener, "feed", 120)
    writer.start()
    try:
        wait_for(lambda: len(writer.written) >= 40, timeout=30, what="40 entries")
        redis.failover()
        listener.wait()
        writer.join(timeout=60)
        assert not writer.is_alive() and len(writer.written) == 120
    finally:
        listener.close()
    _pump(clients, lambda c: len(parsed(c)) >= 120, 30, "120 entries")
    for n, c in enumerate(clients):
        events = parsed(c)
        assert [e["id"] for e in events] == writer.written, f"client {n}"
        assert [e["data"] for e in events] == [f"e{i}" for i in range(120)], f"client {n}"
        assert not c.closed
    log = gw.log()
    assert "+switch-master" in log and "lost redis" in log
    assert "event: reset" not in b"".join(c.body for c in clients).decode()


def test_a_rule_s_sentinel_server_with_unescaped_commas_is_refused_at_start_up(
    gateway_factory, redis_server
) -> None:
    rules = "[uwsgi]\nroute = ^/ha sse:server=redis-sentinel://h1:1,h2:2/m,subscribe=news\n"
    status, output = gateway_factory(rules, redis=redis_server.address).run_to_exit()
    assert status != 0
    assert "server=redis-sentinel://h1:1: no master name" in output
    assert "write the commas between sentinels as \\," in output
