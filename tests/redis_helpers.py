"""A private redis-server for tests, and a tiny blocking RESP client to drive it.

Never the machine's shared 127.0.0.1:6379: every server here gets a free port and a unix
socket in a temporary directory.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SHARED_REDIS_PORT = 6379


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 15) -> int:
    """Signal ``proc`` if it still runs, SIGKILL it after ``grace`` seconds; its status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (small race, accepted in tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; raise AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body). An error status is an answer too, not an exception;
    a connection that fails (refused, reset, timed out) raises ``OSError``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for_http(
    url: str,
    accept: Callable[[int, bytes], bool],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "an answer",
) -> tuple[int, bytes]:
    """Poll ``url`` until ``accept(status, body)``; the last (status, body).

    A listener that is not up yet (the admin port opens after the main one), or is being
    restarted, refuses or drops the connection: that is retried like an unwanted answer,
    until the deadline, which fails naming ``what`` and the last answer or error.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = http_get(url, timeout=max(0.5, min(10.0, timeout)))
            last = f"HTTP {status}: {body[:200]!r}"
            if accept(status, body):
                return status, body
        except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what} from {url}; last: {last}"
            )
        time.sleep(interval)


def encode_command(*args: bytes | str | int) -> bytes:
    """RESP2 encoding of one command."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RespClient:
    """Blocking RESP2 client for test set-up and assertions (PUBLISH, PUBSUB NUMSUB, ...)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.settimeout(10)
        self.buf = b""

    @classmethod
    def tcp(cls, port: int, host: str = "127.0.0.1") -> RespClient:
        assert port != SHARED_REDIS_PORT, "tests must never use the shared Redis on 6379"
        return cls(socket.create_connection((host, port), timeout=10))

    @classmethod
    def unix(cls, path: str) -> RespClient:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return cls(s)

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2 :]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise RuntimeError(f"bad RESP reply {line!r}")

    def send(self, *args) -> None:
        self.sock.sendall(encode_command(*args))

    def call(self, *args):
        self.send(*args)
        return self.read_reply()

    def publish(self, channel: bytes | str, payload: bytes | str) -> int:
        return int(self.call("PUBLISH", channel, payload))

    def numsub(self, channel: bytes | str) -> int:
        reply = self.call("PUBSUB", "NUMSUB", channel)
        return int(reply[1])

    def channels(self) -> list[bytes]:
        return list(self.call("PUBSUB", "CHANNELS"))


def call_once(connect: Callable[[], RespClient], *args):
    """One command on a connection of its own from ``connect()``, closed after: its reply."""
    client = connect()
    try:
        return client.call(*args)
    finally:
        client.close()


def answers_ping(connect: Callable[[], RespClient]) -> bool:
    """True if a client from ``connect()`` gets PONG; False if it cannot connect or is cut off."""
    try:
        client = connect()
    except OSError:
        return False
    try:
        return client.call("PING") == b"PONG"
    except (OSError, ConnectionError):
        return False
    finally:
        client.close()


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    return path


@dataclass
class RedisServer:
    """One private redis-server process: TCP on a free loopback port plus a unix socket."""

    directory: Path
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)
    extra_args: tuple[str, ...] = ()
    #: The redis-server to run (None: the first on PATH).
    binary: str | None = None

    @property
    def unix_path(self) -> str:
        return str(self.directory / "redis.sock")

    @property
    def address(self) -> str:
        """``host:port`` form, as the original plugin writes it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        assert self.port != SHARED_REDIS_PORT
        self.proc = subprocess.Popen(
            [
                self.binary or redis_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--unixsocket", self.unix_path,
                "--unixsocketperm", "700",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._pings, timeout=10, what=f"redis-server on {self.port}")
        return self

    def _pings(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
        return answers_ping(self.client)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        stop_process(self.proc, sig, grace=10)
        self.proc = None
        if os.path.exists(self.unix_path):
            os.unlink(self.unix_path)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again on the same port and socket path."""
        self.stop()
        self.start()

    def client(self) -> RespClient:
        return RespClient.tcp(self.port)
