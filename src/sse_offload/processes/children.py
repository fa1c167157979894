"""What the services that own a child process share: line-split output, exit wording, stopping.

:class:`~.mules.Mule`, :class:`~.embedded_redis.EmbeddedRedis` and
:class:`~.pool.WorkerProcess` each keep one child running. All of them read its output as
lines, describe how it ended the same way and stop it the same way: SIGTERM, then SIGKILL
after a grace period, with ``stopService``'s Deferreds firing once the child has exited.
Restart policy and logging stay with each service.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from ..timers import cancel

__all__ = ["MAX_LINE_BYTES", "ChildProcessService", "LineProcessProtocol", "describe_exit"]

# A line longer than this is logged in pieces, so a child writing without newlines cannot make
# us buffer without bound. 64 KiB matches Twisted's LineReceiver.MAX_LENGTH order (16 KiB) x4.
MAX_LINE_BYTES = 64 * 1024

_STREAMS = {1: "stdout", 2: "stderr"}


def describe_exit(reason: Failure) -> str:
    """Say how a child ended: ``"status 3"``, ``"signal 9 (SIGKILL)"`` or ``"status 0"``."""
    value = reason.value
    sig = getattr(value, "signal", None)
    if sig:
        try:
            return f"signal {sig} ({signal.Signals(sig).name})"
        except ValueError:
            return f"signal {sig}"
    code = getattr(value, "exitCode", None)
    return f"status {code if code is not None else 0}"


class LineProcessProtocol(ProcessProtocol):
    """Split a child's stdout and stderr into text lines and report its end.

    ``on_line(stream, line)`` gets ``"stdout"`` or ``"stderr"`` and one decoded line without its
    terminator (invalid UTF-8 replaced). ``on_exit(reason)`` gets the Failure Twisted gives
    ``processEnded``, after every line has been delivered.
    """

    def __init__(
        self,
        on_line: Callable[[str, str], None],
        on_exit: Callable[[Failure], None],
    ) -> None:
        self._on_line = on_line
        self._on_exit = on_exit
        self._buffers: dict[int, bytes] = {}
        self.pid: int | None = None

    def connectionMade(self) -> None:
        # Taken here, not from spawnProcess's result: Twisted connects the protocol before it
        # looks for the child's exit, and a child that has already exited (a quick failure
        # on a fast machine) comes back from spawnProcess with its transport's pid set to None.
        self.pid = getattr(self.transport, "pid", None)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffer = self._buffers.get(childFD, b"") + data
        *lines, rest = buffer.split(b"\n")
        for line in lines:
            self._emit(childFD, line)
        while len(rest) > MAX_LINE_BYTES:
            self._emit(childFD, rest[:MAX_LINE_BYTES])
            rest = rest[MAX_LINE_BYTES:]
        self._buffers[childFD] = rest

    def _emit(self, fd: int, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", errors="replace")
        self._on_line(_STREAMS.get(fd, f"fd{fd}"), text)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in sorted(self._buffers.items()):
            if rest:
                self._emit(fd, rest)
        self._buffers.clear()
        self._on_exit(reason)


class ChildProcessService(Service):
    """A Service that owns at most one child process at a time.

    ``reactor`` must provide IReactorProcess and IReactorTime; None means the global reactor,
    looked up on first use. Subclasses spawn with :meth:`_spawn_child`, receive the child's
    lines in ``_line_received(stream, line)`` and its end in ``_process_ended(pid, status)``,
    stop it with :meth:`_stop_child` and, once a stopped child has ended, call
    :meth:`_child_stopped`. They say what to log through ``_log_stopping(pid)`` (before the
    SIGTERM) and ``_log_killing(grace)`` (before the SIGKILL).
    """

    def __init__(self, reactor: Any = None) -> None:
        self._reactor_given = reactor
        self._process: IProcessTransport | None = None
        self._pid: int | None = None  # Twisted clears transport.pid before processEnded
        self._kill_call: DelayedCall | None = None
        self._stop_waiters: list[Deferred[None]] = []

    @property
    def _reactor(self) -> Any:
        if self._reactor_given is None:
            from twisted.internet import reactor

            self._reactor_given = reactor
        return self._reactor_given

    @property
    def pid(self) -> int | None:
        """The running child's process id, or None."""
        return self._pid if self._process is not None else None

    # -- hooks ------------------------------------------------------------------------------

    def _line_received(self, stream: str, line: str) -> None:
        raise NotImplementedError

    def _process_ended(self, pid: int | None, status: str) -> None:
        """The child ``pid`` ended (``status`` as :func:`describe_exit` words it)."""
        raise NotImplementedError

    def _log_stopping(self, pid: int | None) -> None:
        raise NotImplementedError

    def _log_killing(self, grace: float) -> None:
        raise NotImplementedError

    # -- the child --------------------------------------------------------------------------

    def _spawn_child(
        self,
        argv: list[str],
        env: Mapping[str, str],
        path: str | None = None,
        extra_fds: Mapping[int, int] | None = None,
        keep_stdin: bool = False,
    ) -> IProcessTransport:
        """Spawn ``argv`` and make it the child; OSError if it cannot.

        ``extra_fds`` maps child descriptor numbers (3 and up) to descriptors of ours that
        the child inherits (the listening sockets of ``--processes`` workers). The child's
        stdin is a pipe from us, closed at once unless ``keep_stdin``: then it stays open,
        unwritten, until we exit, and its end of file tells the child we are gone.
        """
        protocol = LineProcessProtocol(self._line_received, self._child_ended)
        kwargs: dict[str, Any] = {}
        if extra_fds:
            kwargs["childFDs"] = {0: "w", 1: "r", 2: "r", **extra_fds}
        process = self._reactor.spawnProcess(
            protocol, argv[0], argv, env=env, path=path, **kwargs
        )
        if not keep_stdin:
            process.closeStdin()
        self._process = process
        self._pid = protocol.pid
        return process

    def _child_ended(self, reason: Failure) -> None:
        pid = self.pid
        self._process = None
        self._process_ended(pid, describe_exit(reason))

    def _stop_child(self, grace: float) -> Deferred[None]:
        """SIGTERM the child now and SIGKILL it if it is still there ``grace`` seconds later.

        Returns a Deferred that fires (None) once :meth:`_child_stopped` is called, or at once
        when there is no child. Only the first call of a stop signals; later ones just wait.
        """
        process = self._process
        if process is None:
            return succeed(None)
        if not self._stop_waiters:
            self._log_stopping(self.pid)
            self._signal("TERM")
            self._kill_call = self._reactor.callLater(grace, self._kill, grace)
        d: Deferred[None] = Deferred()
        self._stop_waiters.append(d)
        return d

    def _kill(self, grace: float) -> None:
        self._kill_call = None
        self._log_killing(grace)
        self._signal("KILL")

    def _signal(self, name: str) -> None:
        if self._process is None:
            return
        try:
            self._process.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def _child_stopped(self) -> None:
        """The child has exited after :meth:`_stop_child`: no SIGKILL, fire the Deferreds."""
        cancel(self._kill_call)
        self._kill_call = None
        waiters, self._stop_waiters = self._stop_waiters, []
        for d in waiters:
            d.callback(None)
