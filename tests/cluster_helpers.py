"""A private Redis Cluster for tests: six ``redis-server --cluster-enabled yes`` nodes
(three masters, a replica each) on free loopback ports, made a cluster with
``redis-cli --cluster create``, and stopped (killed if need be) at the end.

Sharded pub/sub (SSUBSCRIBE, SPUBLISH) came with Redis 7: the helpers look for a 7.x
``redis-server`` and ``redis-cli`` (PATH first, then the system's), and tests that need one
are skipped, saying why, where there is none. Never the machine's shared 6379.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis_helpers import RedisServer, RespClient, call_once, free_port, wait_for

#: A failed master is noticed after this long (ms), then its replica takes over within about
#: another second: small, so that a failover test takes seconds, not the 15 s default.
NODE_TIMEOUT_MS = 1000
SLOTS = 16384
_VERSION = re.compile(rb"v=(\d+)\.")


def _major(binary: str) -> int:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    found = _VERSION.search(out) or re.search(rb"(\d+)\.\d+\.\d+", out)
    return int(found.group(1)) if found else 0


def redis7_binaries() -> tuple[str, str] | None:
    """``(redis-server, redis-cli)`` of Redis 7 or later, or None if there is none."""
    dirs = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]
    for directory in dict.fromkeys(d for d in dirs if d):
        server, cli = Path(directory) / "redis-server", Path(directory) / "redis-cli"
        if server.exists() and cli.exists() and _major(str(server)) >= 7:
            return str(server), str(cli)
    return None


@dataclass(eq=False)
class ClusterNode:
    """One node: its redis-server, and the cluster's view of it (refreshed by ``roles``)."""

    server: RedisServer
    role: str = "?"

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def client(self) -> RespClient:
        return self.server.client()

    def call(self, *args):
        return call_once(self.client, *args)


@dataclass
class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each, in ``directory``."""

    directory: Path
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = NODE_TIMEOUT_MS
    nodes: list[ClusterNode] = field(default_factory=list)

    def start(self) -> RedisCluster:
        found = redis7_binaries()
        assert found is not None, "needs redis-server 7 or later"
        server_bin, cli = found
        try:
            for i in range(self.masters * (1 + self.replicas)):
                server = RedisServer(
                    self.directory / f"n{i}",
                    binary=server_bin,
                    extra_args=(
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(self.node_timeout_ms),
                        # the bus port is the client port + 10000 by default, which may
                        # be past 65535 or taken: a free port of its own
                        "--cluster-port", str(free_port()),
                        # a replica's first sync starts at once (Redis waits 5 s for more
                        # replicas by default), so the cluster is ready in about a second
                        "--repl-diskless-sync-delay", "0",
                        # a replica counts as online once its master has sent it an
                        # offset, which it does every 10 s by default
                        "--repl-ping-replica-period", "1",
                    ),
                )
                self.nodes.append(ClusterNode(server.start()))
            subprocess.run(
                [cli, "--cluster", "create", *(n.address for n in self.nodes),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )
            wait_for(self._settled, timeout=30, what="every cluster node to agree on the map")
        except BaseException:
            self.stop()
            raise
        return self

    def _settled(self) -> bool:
        """Every node says cluster_state:ok, knows every node, and sees each master with
        its replicas online (a failover needs a replica that has synced)."""
        for node in self.nodes:
            info = node.call("CLUSTER", "INFO")
            if b"cluster_state:ok" not in info:
                return False
            if f"cluster_known_nodes:{len(self.nodes)}".encode() not in info:
                return False
        shards = self.shards()
        healthy = [n for s in shards for n in s["nodes"] if n[b"health"] == b"online"]
        if len(shards) != self.masters or len(healthy) != len(self.nodes):
            return False
        self.roles()
        return True

    # --- the cluster's view ------------------------------------------------------------
    def any_alive(self) -> ClusterNode:
        return next(n for n in self.nodes if n.alive())

    def shards(self, via: ClusterNode | None = None) -> list[dict]:
        """CLUSTER SHARDS as dicts: ``slots`` (a flat list of range bounds) and ``nodes``
        (each a dict of its fields)."""
        reply = (via or self.any_alive()).call("CLUSTER", "SHARDS")
        out = []
        for shard in reply:
            fields = dict(zip(shard[::2], shard[1::2], strict=True))
            nodes = [dict(zip(n[::2], n[1::2], strict=True)) for n in fields[b"nodes"]]
            out.append({"slots": fields[b"slots"], "nodes": nodes})
        return out

    def roles(self) -> None:
        """Each node's role as CLUSTER SHARDS says it."""
        by_port = {n.port: n for n in self.nodes}
        for shard in self.shards():
            for n in shard["nodes"]:
                if n[b"port"] in by_port:
                    by_port[n[b"port"]].role = n[b"role"].decode()

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def keyslot(self, name: str | bytes) -> int:
        return int(self.any_alive().call("CLUSTER", "KEYSLOT", name))

    def master_of_slot(self, slot: int, via: ClusterNode | None = None) -> ClusterNode:
        for shard in self.shards(via):
            bounds = shard["slots"]
            if any(bounds[i] <= slot <= bounds[i + 1] for i in range(0, len(bounds), 2)):
                master = next(n for n in shard["nodes"] if n[b"role"] == b"master")
                return self.node(master[b"port"])
        raise AssertionError(f"slot {slot} has no master")

    def master_of(self, channel: str | bytes) -> ClusterNode:
        """The master that owns ``channel``'s slot (where SPUBLISH and SSUBSCRIBE go)."""
        return self.master_of_slot(self.keyslot(channel))

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        for shard in self.shards():
            ports = [n[b"port"] for n in shard["nodes"]]
            if master.port in ports:
                return [self.node(p) for p in ports if p != master.port]
        return []

    def seeds(self, count: int = 2) -> str:
        """A ``redis-cluster://`` address naming the first ``count`` nodes."""
        return "redis-cluster://" + ",".join(n.address for n in self.nodes[:count])

    # --- publishing ----------------------------------------------------------------------
    def spublish(self, channel: str | bytes, payload: str | bytes) -> int:
        """SPUBLISH at the owner of the channel's slot; the number of receivers."""
        return int(self.master_of(channel).call("SPUBLISH", channel, payload))

    def publish(self, channel: str | bytes, payload: str | bytes) -> int:
        """PUBLISH at any live node (the cluster passes it to every node)."""
        return int(self.any_alive().call("PUBLISH", channel, payload))

    def shard_numsub(self, channel: str | bytes) -> int:
        """Subscribers of a sharded channel at its owner."""
        reply = self.master_of(channel).call("PUBSUB", "SHARDNUMSUB", channel)
        return int(reply[1])

    # --- failures --------------------------------------------------------------------------
    def kill(self, node: ClusterNode) -> None:
        """SIGKILL ``node``: no goodbye to its clients or to the cluster."""
        node.server.stop(signal.SIGKILL)

    def wait_takeover(self, dead: ClusterNode, replicas: list[ClusterNode],
                      timeout: float = 30.0) -> tuple[ClusterNode, float]:
        """Wait until one of ``replicas`` (of the killed master ``dead``) reports role
        master; it and the monotonic time that was seen."""

        def promoted() -> ClusterNode | None:
            for r in replicas:
                if r.alive() and b"role:master" in r.call("INFO", "replication"):
                    return r
            return None

        new = wait_for(promoted, timeout=timeout, interval=0.01,
                       what=f"a replica of {dead.address} to take over")
        return new, time.monotonic()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node says cluster_state:ok."""
        wait_for(
            lambda: all(b"cluster_state:ok" in n.call("CLUSTER", "INFO")
                        for n in self.nodes if n.alive()),
            timeout=timeout, what="cluster_state:ok on every live node",
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
