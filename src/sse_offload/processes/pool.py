"""``--processes N``: the master's pool of gateway worker processes.

The master opens the listening sockets and spawns each worker with ``spawnProcess`` and
``childFDs`` (a running reactor is never forked); every worker adopts its sockets and runs
its own hub, so the gateway holds one Redis subscription per channel per worker. A worker
that dies is restarted with backoff; SIGTERM to the master stops every worker.

The workers make one gateway: with ``--max-clients`` they share their open stream counts
through a block of shared memory (counts.py), and with ``--admin`` each serves its metrics on
a unix socket in the master's private directory, which the master's admin listener merges
(admin.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, Final

from twisted.application import service
from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..options import ConfigurationError, Settings
from ..timers import cancel
from .children import ChildProcessService
from .counts import SharedCounts, create_block
from .listeners import ListenError, ListenSpec, open_sockets, parse_listen, sockets_per_process
from .mules import RESTART_DELAY_FACTOR, RESTART_DELAY_INITIAL, RESTART_DELAY_MAX
from .mules import STABLE_RUN_SECONDS as STABLE_RUN
from .worker_args import access_argv, access_env, spec_argv

#: SIGTERM, then SIGKILL after this long: a worker closes its streams and exits at once.
STOP_GRACE_SECONDS: Final = 10.0
_FIRST_CHILD_FD: Final = 3


class WorkerProcess(ChildProcessService):
    """One worker, kept running: restarted with the mules' backoff if it exits."""

    log = Logger()

    def __init__(
        self,
        index: int,
        argv: Callable[[], list[str]],
        fds: dict[int, int],
        reactor: Any,
        on_exit: Callable[[int], None] = lambda index: None,
        env: Callable[[], Mapping[str, str]] = lambda: os.environ,
    ) -> None:
        super().__init__(reactor)
        self.index = index
        self._argv = argv
        self._env = env
        self._fds = fds
        self._on_exit = on_exit
        self._delay = RESTART_DELAY_INITIAL
        self._started_at = 0.0
        self._restart_call: DelayedCall | None = None
        self.restarts = 0  # exits followed by a restart
        self.admin_socket: str | None = None  # where it serves its /metrics and /health

    def startService(self) -> None:
        super().startService()
        self._spawn()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        cancel(self._restart_call)
        self._restart_call = None
        return self._stop_child(STOP_GRACE_SECONDS)

    def _spawn(self) -> None:
        self._restart_call = None
        if not self.running:
            return
        self._started_at = self._reactor.seconds()
        try:
            # stdin stays open: its end of file tells the worker this process is gone.
            self._spawn_child(self._argv(), self._env(), extra_fds=self._fds, keep_stdin=True)
        except OSError as e:
            self.log.error("cannot start worker {index}: {error}", index=self.index, error=e)
            self._schedule_restart()
            return
        self.log.info("worker {index} started (pid {pid})", index=self.index, pid=self.pid)

    def _schedule_restart(self) -> None:
        if self._reactor.seconds() - self._started_at >= STABLE_RUN:
            self._delay = RESTART_DELAY_INITIAL
        delay = self._delay
        self._delay = min(RESTART_DELAY_MAX, self._delay * RESTART_DELAY_FACTOR)
        self._restart_call = self._reactor.callLater(delay, self._spawn)

    def _line_received(self, stream: str, line: str) -> None:
        self.log.info("[worker {index}] {line}", index=self.index, line=line, stream=stream)

    def _process_ended(self, pid: int | None, status: str) -> None:
        self._on_exit(self.index)
        if self._stop_waiters:
            self.log.info("worker {index} (pid {pid}) stopped: {status}",
                          index=self.index, pid=pid, status=status)
            self._child_stopped()
            return
        if not self.running:
            return
        self.restarts += 1
        self._schedule_restart()
        self.log.error(
            "worker {index} (pid {pid}) exited with {status}; restarting in {delay}s",
            index=self.index, pid=pid, status=status,
            delay=self._restart_call.getTime() - self._reactor.seconds()
            if self._restart_call else 0,
        )

    def _log_stopping(self, pid: int | None) -> None:
        self.log.info("stopping worker {index} (pid {pid})", index=self.index, pid=pid)

    def _log_killing(self, grace: float) -> None:
        self.log.warn("worker {index} ignored SIGTERM for {grace}s: sending SIGKILL",
                      index=self.index, grace=grace)


class WorkerPool(service.MultiService):
    """The master's workers and the listening sockets they share."""

    log = Logger()

    def __init__(
        self,
        root: Any,
        rules_path: str,
        listen: list[str],
        settings: Settings,
        reactor: Any,
    ) -> None:
        super().__init__()
        try:
            self.specs: list[ListenSpec] = [parse_listen(d) for d in listen]
        except ListenError as e:
            raise ConfigurationError(str(e)) from None
        self.root = root
        self.rules_path = os.path.abspath(rules_path)
        self.settings = settings
        self.reactor = reactor
        self.sockets: list[list[socket.socket]] = []
        self.counts: SharedCounts | None = None  # with --max-clients
        self._counts_fd: int | None = None
        self.private_dir: str | None = None  # with --admin: the workers' admin sockets

    @property
    def workers(self) -> list[WorkerProcess]:
        """The workers, in index order."""
        return [w for w in self if isinstance(w, WorkerProcess)]

    def startService(self) -> None:
        super().startService()
        count = self.settings.processes
        if self.settings.limits.max_clients:
            self._counts_fd = create_block(count)
            self.counts = SharedCounts(self._counts_fd, 0)  # the master only clears slots
        if self.settings.admin:
            self.private_dir = tempfile.mkdtemp(prefix="sse-offload-")  # mode 0700
        per_worker = sockets_per_process(count)
        self.sockets = [open_sockets(spec, count * per_worker) for spec in self.specs]
        for spec, socks in zip(self.specs, self.sockets, strict=True):
            self.log.info("listening on {address} for {count} workers",
                          address=socks[0].getsockname() or spec.address, count=count)
        for index in range(count):
            fds: dict[int, int] = {}
            fd_args: list[str] = []
            for spec, socks in zip(self.specs, self.sockets, strict=True):
                mine = socks[index * per_worker : (index + 1) * per_worker]
                for sock in {s.fileno(): s for s in mine}.values():  # a unix socket is shared
                    child_fd = _FIRST_CHILD_FD + len(fds)
                    fds[child_fd] = sock.fileno()
                    fd_args += ["--fd", f"{child_fd}:{spec.family_name}"]
            if self._counts_fd is not None:
                child_fd = _FIRST_CHILD_FD + len(fds)
                fds[child_fd] = self._counts_fd
                fd_args += ["--counts", str(child_fd)]
            admin_socket = None
            if self.private_dir is not None:
                admin_socket = os.path.join(self.private_dir, f"worker-{index}.sock")
                fd_args += ["--admin-socket", admin_socket]
            worker = WorkerProcess(
                index, self._argv_for(index, fd_args), fds, self.reactor, self._worker_exited,
                self._worker_env,
            )
            worker.admin_socket = admin_socket
            worker.setServiceParent(self)  # started at once: the pool is running

    def _worker_exited(self, index: int) -> None:
        # Its streams died with it: free their room now, not when its successor starts.
        if self.counts is not None:
            self.counts.clear(index)

    def _worker_env(self) -> Mapping[str, str]:
        return {**os.environ, **access_env(self.settings.access)}

    def _argv_for(self, index: int, fd_args: list[str]) -> Callable[[], list[str]]:
        def argv() -> list[str]:
            s = self.settings
            args = [
                sys.executable, "-m", "sse_offload.processes.worker", "--rules", self.rules_path,
                "--redis", self.root.redis_address.url, "--keepalive", str(s.keepalive),
                "--index", str(index), "--workers", str(s.processes),
                "--master-pid", str(os.getpid()), *fd_args,
                *spec_argv(s.app, s.upstream, s.limits), *access_argv(s.access),
            ]
            return [*args, "--implicit-default"] if s.implicit_default else args

        return argv

    def signal_workers(self, name: str) -> None:
        """Send signal ``name`` (e.g. "HUP") to every running worker."""
        for worker in self.workers:
            worker._signal(name)

    def stopService(self) -> Deferred[object]:
        d: Deferred[object] = super().stopService()
        d.addBoth(self._close_sockets)
        return d

    def _close_sockets(self, result: object) -> object:
        for spec, socks in zip(self.specs, self.sockets, strict=True):
            for s in set(socks):
                s.close()
            if spec.family == socket.AF_UNIX and isinstance(spec.address, str):
                try:
                    os.unlink(spec.address)
                except OSError:
                    pass
        self.sockets = []
        if self.counts is not None:
            self.counts.close()
            self.counts = None
        if self._counts_fd is not None:
            os.close(self._counts_fd)
            self._counts_fd = None
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)
            self.private_dir = None
        return result
