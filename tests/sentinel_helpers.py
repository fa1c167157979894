"""A Redis Sentinel set for tests: a master, replicas and three sentinels, all private.

Every process is started here, on free loopback ports in a temporary directory, and stopped
(SIGKILL if it will not stop) by :meth:`SentinelSet.stop`: nothing outlives a test. A
sentinel is ``redis-server CONF --sentinel``, and it rewrites CONF, so each one gets a
writable file of its own. Never the machine's shared Redis on 6379.

The timings are the smallest Sentinel takes well on a loaded 2-core machine: a master
silent for ``DOWN_AFTER_MS`` is subjectively down; two sentinels agreeing (``QUORUM``) make it
objectively down and elect a leader, which promotes a replica.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis_helpers import (
    SHARED_REDIS_PORT,
    RedisServer,
    RespClient,
    answers_ping,
    free_port,
    redis_binary,
    stop_process,
    wait_for,
)

MASTER_NAME = "mymaster"
#: Sentinel's default is 30 s; 1 s is about the least that does not see a busy test machine's
#: scheduling hiccups as a dead master.
DOWN_AFTER_MS = 1000
#: Sentinel's default is 3 minutes; a failover that stalls should fail the test, not wait.
FAILOVER_TIMEOUT_MS = 5000
QUORUM = 2


@dataclass
class SentinelProcess:
    """One ``redis-server --sentinel`` on a free port, with its own config file."""

    directory: Path
    master_port: int
    port: int = 0
    password: str | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> SentinelProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        assert self.port != SHARED_REDIS_PORT
        conf = self.directory / "sentinel.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.directory}",
            f"logfile {self.directory / 'sentinel.log'}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} {QUORUM}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
            lines.append(f"sentinel sentinel-pass {self.password}")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [redis_binary(), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._pings, timeout=10, what=f"sentinel on {self.port}")
        return self

    def _pings(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"sentinel exited with {self.proc.returncode}")
        return answers_ping(self.client)

    def client(self) -> RespClient:
        c = RespClient.tcp(self.port)
        if self.password is not None:
            c.call("AUTH", self.password)
        return c

    def call(self, *args):
        c = self.client()
        try:
            return c.call(*args)
        finally:
            c.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig, grace=10)
            self.proc = None


class SwitchListener:
    """A thread subscribed to ``+switch-master`` on one sentinel: records each switch with
    the monotonic time it arrived, as the test itself sees it."""

    def __init__(self, sentinel: SentinelProcess) -> None:
        self.client = sentinel.client()
        self.client.call("SUBSCRIBE", "+switch-master")
        self.switches: list[tuple[float, str]] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.client.sock.settimeout(0.2)
        while not self._stop:
            try:
                reply = self.client.read_reply()
            except TimeoutError:
                continue
            except (OSError, ConnectionError):
                return
            if isinstance(reply, list) and reply[0] == b"message":
                self.switches.append((time.monotonic(), reply[2].decode()))

    def wait(self, timeout: float = 30.0) -> tuple[float, str]:
        """The first switch: (when, "NAME OLDIP OLDPORT NEWIP NEWPORT")."""
        wait_for(lambda: self.switches, timeout=timeout, what="+switch-master")
        return self.switches[0]

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=5)
        self.client.close()


@dataclass
class SentinelSet:
    """A master, ``replica_count`` replicas (``replicaof``) and three sentinels (quorum 2)."""

    directory: Path
    replica_count: int = 1
    sentinel_count: int = 3
    sentinel_password: str | None = None
    master_args: tuple[str, ...] = ()
    servers: list[RedisServer] = field(default_factory=list)
    sentinels: list[SentinelProcess] = field(default_factory=list)

    def start(self) -> SentinelSet:
        master = RedisServer(self.directory / "r0", extra_args=self.master_args).start()
        self.servers.append(master)
        for n in range(1, self.replica_count + 1):
            replica = RedisServer(
                self.directory / f"r{n}",
                extra_args=(*self.master_args, "--replicaof", "127.0.0.1", str(master.port)),
            ).start()
            self.servers.append(replica)
        for n in range(self.sentinel_count):
            sentinel = SentinelProcess(
                self.directory / f"s{n}", master.port, password=self.sentinel_password
            )
            self.sentinels.append(sentinel.start())
        wait_for(self.ready, timeout=30, interval=0.1, what="the sentinels to agree")
        return self

    def ready(self) -> bool:
        """Every sentinel knows the others and sees every replica up and linked: a failover
        (forced or elected) can then be made at once."""
        for s in self.sentinels:
            try:
                peers = s.call("SENTINEL", "SENTINELS", MASTER_NAME)
                replicas = s.call("SENTINEL", "REPLICAS", MASTER_NAME)
            except (OSError, ConnectionError, RuntimeError):
                return False
            if len(peers) != len(self.sentinels) - 1 or len(replicas) != self.replica_count:
                return False
            for r in replicas:
                info = dict(zip(r[::2], r[1::2], strict=False))
                if info[b"flags"] != b"slave" or info[b"master-link-status"] != b"ok":
                    return False
        return True

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        for r in self.servers:
            r.stop()

    # --- what the tests ask ------------------------------------------------------------------
    def url(self, master_password: str | None = None, db: int | None = None) -> str:
        auth = f":{master_password}@" if master_password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        path = f"/{MASTER_NAME}" + (f"/{db}" if db is not None else "")
        return f"redis-sentinel://{auth}{hosts}{path}{query}"

    def master_port(self) -> int:
        """The master's port as the first sentinel that answers names it."""
        for s in self.sentinels:
            with contextlib.suppress(OSError, ConnectionError, RuntimeError):
                reply = s.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
                if reply:
                    return int(reply[1])
        raise AssertionError("no sentinel names a master")

    def server_on(self, port: int) -> RedisServer:
        return next(r for r in self.servers if r.port == port)

    def master(self) -> RedisServer:
        return self.server_on(self.master_port())

    def listen_for_switch(self, index: int = 0) -> SwitchListener:
        return SwitchListener(self.sentinels[index])

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: a forced failover, no agreement needed; the old master
        becomes a replica of the new one."""
        reply = self.sentinels[0].call("SENTINEL", "FAILOVER", MASTER_NAME)
        assert reply == b"OK", reply
