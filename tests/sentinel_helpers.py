"""A Redis Sentinel set for tests: a master, replicas and three sentinels, all private.

Every process is started here, on free loopback ports in a temporary directory, and stopped
(SIGKILL if it will not stop) by :meth:`SentinelSet.stop`: nothing outlives a test. A
sentinel is ``redis-server CONF --sentinel``, and it rewrites CONF, so each one gets a
writable file of its own. Never the machine's shared Redis on 6379.

:class:`FakeRedis` is an in-process stand-in that says what a unit test needs a sentinel or
a master to say (nil, nonsense, nothing, a replica's ROLE).

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

from twisted.internet.protocol import Factory, Protocol

from redis_helpers import (
    SHARED_REDIS_PORT,
    RedisServer,
    RespClient,
    answers_ping,
    call_once,
    encode_command,
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
        return RespClient.tcp(self.port)

    def call(self, *args):
        return call_once(self.client, *args)

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
    servers: list[RedisServer] = field(default_factory=list)
    sentinels: list[SentinelProcess] = field(default_factory=list)

    def start(self) -> SentinelSet:
        """Start every process (each one listed before it starts, so that :meth:`stop`
        stops it even when starting fails) and wait until a failover can be made."""
        master = RedisServer(self.directory / "r0")
        self.servers.append(master)
        master.start()
        for n in range(1, self.replica_count + 1):
            replica = RedisServer(
                self.directory / f"r{n}",
                extra_args=("--replicaof", "127.0.0.1", str(master.port)),
            )
            self.servers.append(replica)
            replica.start()
        for n in range(self.sentinel_count):
            sentinel = SentinelProcess(self.directory / f"s{n}", master.port)
            self.sentinels.append(sentinel)
            sentinel.start()
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
    def url(self) -> str:
        """The gateway's ``--redis``: every sentinel, in order, and the master's name."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis-sentinel://{hosts}/{MASTER_NAME}"

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


# --- an in-process stand-in, for unit tests of what sentinels and masters say ----------------
NIL = b"*-1\r\n"
OK = b"+OK\r\n"


def array(*items: bytes | str | int) -> bytes:
    """A RESP array of bulk strings (a reply such as get-master-addr-by-name's)."""
    return encode_command(*items)


class FakeRedis(Factory):
    """A loopback server that speaks just enough RESP for the unit tests: it answers each
    command by its upper-case name from ``answers``, or by its name and first argument
    (``"SENTINEL MASTER"``) when that is there (raw RESP bytes; None: never answers; the
    dict may change while it runs), records every
    command, confirms SUBSCRIBE (unless ``answers`` says otherwise) and pushes messages to
    subscribers. Runs on the reactor."""

    noisy = False

    def __init__(
        self, answers: dict[str, bytes | None], journal: list[tuple[int, list[bytes]]] | None = None
    ) -> None:
        self.answers = answers
        self.journal = journal  # (port, command) of every command, shared by several fakes
        self.commands: list[list[bytes]] = []
        self.connections: list[_FakeConnection] = []
        self.port = 0
        self._listening = None

    def listen(self) -> FakeRedis:
        from twisted.internet import reactor

        self._listening = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self

    def buildProtocol(self, addr) -> _FakeConnection:
        conn = _FakeConnection(self)
        self.connections.append(conn)
        return conn

    def asked(self, name: str) -> list[list[bytes]]:
        return [c for c in self.commands if c[0].upper() == name.upper().encode()]

    def open(self) -> list[_FakeConnection]:
        return [c for c in self.connections if not c.gone]

    def push(self, channel: str, payload: str) -> int:
        """PUBLISH, as a sentinel does: to every connection subscribed to ``channel``."""
        frame = array("message", channel, payload)
        subscribed = [c for c in self.open() if channel.encode() in c.channels]
        for conn in subscribed:
            conn.transport.write(frame)
        return len(subscribed)

    def drop(self) -> None:
        for conn in self.open():
            conn.transport.abortConnection()

    async def stop(self) -> None:
        self.drop()
        if self._listening is not None:
            await self._listening.stopListening()
            self._listening = None


class _FakeConnection(Protocol):
    def __init__(self, server: FakeRedis) -> None:
        import hiredis

        self.server = server
        self.reader = hiredis.Reader()
        self.channels: set[bytes] = set()
        self.gone = False

    def dataReceived(self, data: bytes) -> None:
        self.reader.feed(data)
        while (command := self.reader.gets()) is not False:
            self.server.commands.append(command)
            if self.server.journal is not None:
                self.server.journal.append((self.server.port, command))
            name = command[0].upper()
            if name == b"SUBSCRIBE" and "SUBSCRIBE" not in self.server.answers:
                for n, channel in enumerate(command[1:], 1):
                    self.channels.add(channel)
                    confirm = b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%b\r\n:%d\r\n"
                    self.transport.write(confirm % (len(channel), channel, n))
                continue
            # "SENTINEL MASTER" before "SENTINEL": a sentinel's subcommands answer apart
            words = b" ".join(command[:2]).upper().decode(errors="replace")
            answer = self.server.answers.get(
                words, self.server.answers.get(name.decode(), b"-ERR unknown command\r\n")
            )
            if answer is not None:
                self.transport.write(answer)

    def connectionLost(self, reason=None) -> None:
        self.gone = True
