"""The acceptance test of Redis Cluster support: three gateways on one 3-master cluster
(a replica each), 3,000 raw clients over 300 channels, half published with SPUBLISH and half
with PUBLISH. Every client gets every message; then a master is SIGKILLed and its replica
takes over: no stream is closed, and every stream of that shard receives again within
5 s of the takeover (the figure is printed: run with -s to see it).
"""

from __future__ import annotations

import resource
import selectors
import time
from collections.abc import Callable

import pytest

from cluster_helpers import ClusterNode, RedisCluster
from gateway_helpers import GatewayProcess
from redis_helpers import RespClient, wait_for
from sse_client import SSEClient
from sse_offload.cluster_topology import keyslot

N_GATEWAYS = 3
N_CLIENTS = 3000
N_CHANNELS = 300
#: From the takeover (the replica says role:master) to every stream of its shard receiving.
FAILOVER_BUDGET = 5.0
#: While waiting for that, a message to every affected channel this often.
REPUBLISH_EVERY = 0.1

RULES = """\
[uwsgi]
route = ^/s/(.+)$ sse:ssubscribe=$1
route = ^/c/(.+)$ sse:subscribe=$1
"""


def sharded(channel: int) -> bool:
    """Even channels are sharded (SPUBLISH), odd ones classic (PUBLISH)."""
    return channel % 2 == 0


def name(channel: int) -> str:
    return f"ch{channel}"


class Client(SSEClient):
    """A raw client and the channel it listens to."""

    channel: int


def pump(clients: list[Client], done: Callable[[Client], bool], timeout: float, what: str,
         tick: Callable[[], None] | None = None) -> None:
    """Read every client without blocking until ``done`` holds for all; ``tick`` runs
    between reads (a publisher). A client whose connection ends fails the test."""
    sel = selectors.DefaultSelector()
    waiting = {c.sock.fileno(): c for c in clients if not done(c)}  # type: ignore[union-attr]
    for fd in waiting:
        sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while waiting:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{len(waiting)} clients still waiting for {what}"
            if tick is not None:
                tick()
            for key, _ in sel.select(min(remaining, REPUBLISH_EVERY)):
                c = waiting[key.fd]
                data = c.sock.recv(65536)  # type: ignore[union-attr]
                assert data, f"a stream of {name(c.channel)} was closed while waiting for {what}"
                c.feed(data)
                if done(c):
                    sel.unregister(key.fd)
                    del waiting[key.fd]
    finally:
        sel.close()


class Publisher:
    """SPUBLISH at each channel's master, PUBLISH at any live node, pipelined per node."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self.clients: dict[int, RespClient] = {}

    def owners(self) -> dict[int, ClusterNode]:
        """Each sharded channel's master, as the cluster says now."""
        slots: dict[int, ClusterNode] = {}
        for shard in self.cluster.shards():
            master = next((n for n in shard["nodes"] if n[b"role"] == b"master"), None)
            bounds = shard["slots"]
            for i in range(0, len(bounds), 2):
                for slot in range(bounds[i], bounds[i + 1] + 1):
                    slots[slot] = self.cluster.node(master[b"port"])
        return {c: slots[keyslot(name(c).encode())] for c in range(N_CHANNELS) if sharded(c)}

    def send(self, messages: dict[int, str]) -> None:
        """Publish ``messages`` (channel -> payload); errors (a cluster still settling)
        are ignored: the caller publishes again."""
        owners = self.owners() if any(sharded(c) for c in messages) else {}
        anyone = next(n for n in self.cluster.nodes if n.alive() and n.role == "master")
        batches: dict[ClusterNode, list[tuple[str, ...]]] = {}
        for channel, payload in messages.items():
            command = "SPUBLISH" if sharded(channel) else "PUBLISH"
            node = owners[channel] if sharded(channel) else anyone
            batches.setdefault(node, []).append((command, name(channel), payload))
        for node, commands in batches.items():
            if not node.alive():
                continue  # the map still names the dead master: the next round goes on
            client = self.clients.get(node.port)
            if client is None:
                client = self.clients[node.port] = node.client()
            for command in commands:
                client.send(*command)
            for _ in commands:
                try:
                    client.read_reply()
                except RuntimeError:
                    pass  # CLUSTERDOWN or MOVED while the cluster settles

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def _raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _subscribed(cluster: RedisCluster, publisher: Publisher) -> bool:
    """Every gateway holds every channel: a sharded one at its master, a classic one
    somewhere."""
    owners = publisher.owners()
    for channel in range(N_CHANNELS):
        if sharded(channel):
            count = owners[channel].call("PUBSUB", "SHARDNUMSUB", name(channel))[1]
        else:
            count = sum(n.call("PUBSUB", "NUMSUB", name(channel))[1]
                        for n in cluster.nodes if n.alive())
        if count != N_GATEWAYS:
            return False
    return True


def test_three_gateways_3000_clients_and_a_master_killed(
    fresh_cluster: RedisCluster, gateway_factory
) -> None:
    _raise_open_files(N_CLIENTS + 1000)
    cluster = fresh_cluster
    gateways: list[GatewayProcess] = [
        gateway_factory(RULES, redis=cluster.seeds(3), name=f"gw{i}",
                        args=("--keepalive", "0", "--drain", "0"))
        for i in range(N_GATEWAYS)
    ]
    for gw in gateways:
        gw.start()
    clients: list[Client] = []
    for i in range(N_CLIENTS):
        channel = i % N_CHANNELS
        gw = gateways[(i // N_CHANNELS) % N_GATEWAYS]  # each channel on every gateway
        prefix = "/s/" if sharded(channel) else "/c/"
        client = Client(gw.port, prefix + name(channel))
        client.channel = channel
        clients.append(client)
    publisher = Publisher(cluster)
    try:
        pump(clients, lambda c: c.head is not None, 60, "the response head")
        assert {c.status for c in clients} == {200}
        wait_for(lambda: _subscribed(cluster, publisher), timeout=30, interval=0.2,
                 what="every gateway subscribed to every channel")

        # Every client gets every message, sharded and classic alike.
        for round_ in (1, 2):
            publisher.send({c: f"{name(c)}:{round_}" for c in range(N_CHANNELS)})
            pump(clients, lambda c, r=round_: len(c.events()) >= r, 60, f"message {round_}")
        for c in clients:
            assert c.events() == [f"{name(c.channel)}:1", f"{name(c.channel)}:2"]

        # Kill a master that owns some of the sharded channels, preferring one that holds
        # a gateway's classic subscriptions too (they move at once, to another master).
        owners = publisher.owners()
        cluster.roles()
        masters = [n for n in cluster.nodes if n.role == "master"]
        classic_holders = [n for n in masters if n.call("PUBSUB", "NUMSUB", name(1))[1]]
        victim = (classic_holders or masters)[0]
        affected = {c for c, node in owners.items() if node is victim}
        assert affected, "the victim owns some sharded channels"
        replicas = cluster.replicas_of(victim)
        killed = time.monotonic()
        cluster.kill(victim)
        new_master, took_over = cluster.wait_takeover(victim, replicas)
        cluster.roles()

        # Every stream of the shard (and every classic stream) receives again.
        watched = [c for c in clients if c.channel in affected or not sharded(c.channel)]
        seq = iter(range(1_000_000))
        last = [0.0]

        def republish() -> None:
            if time.monotonic() - last[0] >= REPUBLISH_EVERY:
                last[0] = time.monotonic()
                n = next(seq)
                publisher.send({ch: f"{name(ch)}:3:{n}" for ch in
                                {c.channel for c in watched}})

        def received_again(c: Client) -> bool:
            return any(e.startswith(f"{name(c.channel)}:3:") for e in c.events())

        pump(watched, received_again, 30, "a message after the failover", tick=republish)
        seconds = time.monotonic() - took_over
        print(f"\nfailover: takeover {took_over - killed:.2f} s after SIGKILL; every stream "
              f"of the shard ({len(affected)} channels, "
              f"{sum(c.channel in affected for c in clients)} streams) received again "
              f"{seconds:.2f} s after the takeover")
        assert seconds <= FAILOVER_BUDGET

        # No stream was dropped: every client gets the next message too, on every channel.
        publisher.send({c: f"{name(c)}:4" for c in range(N_CHANNELS)})
        pump(clients, lambda c: f"{name(c.channel)}:4" in c.events(), 60, "message 4")
        assert not any(c.closed for c in clients)
        logs = "".join(gw.log() for gw in gateways)
        assert f"to {new_master.address} (slot map)" in logs
        assert f"node {victim.address} is unreachable" in logs
        assert "ended after" not in logs  # no stream ended while the gateways ran
    finally:
        publisher.close()
        for c in clients:
            c.close()
