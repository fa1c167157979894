"""A worker ends when its master is gone, however the master died.

A master stopped by SIGTERM stops its workers itself. One that is SIGKILLed (by hand, by the
OOM killer) cannot, and its workers would live on as orphans, still accepting on the shared
SO_REUSEPORT port with nobody to restart, reload or stop them (seen: two workers alive an
hour after their master). So a worker watches for two signs, either of which is enough:

- Linux's ``PR_SET_PDEATHSIG``: the kernel sends the worker SIGTERM when its parent dies.
  It fires when the parent *thread* that spawned the worker ends; the master spawns from its
  reactor thread, which lives as long as the master. Twisted offers no hook between fork and
  exec (and posix_spawn, which it prefers, has none), so the worker sets it on itself at
  start, then compares its parent's pid with the master's (passed on its command line): a
  master that died before that is caught there.
- End of file on stdin: the master holds the write end of the worker's stdin pipe and never
  writes to it, so end of file means the master has exited. Portable, and no signal needed.

Either way the worker stops listening first (its sockets are the last copies of the
gateway's: once closed, the port is free for a new gateway, which refuses to share it with
anyone, see listeners.open_sockets), then shuts down as on SIGTERM: the hub closes the open
streams over ``--drain`` seconds, each with a ``retry:`` hint.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, Final

from twisted.internet import fdesc
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

#: From <linux/prctl.h>.
PR_SET_PDEATHSIG: Final = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent ends.

    Returns False where that cannot be asked (not Linux, no C library, prctl refused): the
    stdin watch then works alone.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


@implementer(IReadDescriptor)
class _EndOfFile:
    """Reads a descriptor nobody writes to; calls ``on_end`` once it reaches end of file
    (or a read error: the pipe is no use any more either way)."""

    def __init__(self, fd: int, on_end: Callable[[], None], reactor: Any) -> None:
        self.fd = fd
        self._on_end = on_end
        self._reactor = reactor
        fdesc.setNonBlocking(fd)

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        try:
            data = os.read(self.fd, 4096)  # anything written is ignored: only the end counts
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._reactor.removeReader(self)
            self._on_end()

    def connectionLost(self, reason: Failure) -> None:
        # A hang-up on the pipe comes here as ConnectionDone, without a doRead (the reactor
        # sees POLLHUP alone); the reactor's own shutdown drops every reader with
        # ConnectionLost, which is not the master's end.
        if reason.check(ConnectionDone):
            self._on_end()

    def logPrefix(self) -> str:
        return "master-stdin"


class MasterWatch:
    """Ends this worker once the master ``master_pid`` is gone (see the module docstring).

    ``ports`` are the worker's listening ports (appended to as it adopts them): released
    first. ``reactor`` provides IReactorCore and IReactorFDSet.
    """

    def __init__(self, master_pid: int, reactor: Any, ports: list[Any]) -> None:
        self.master_pid = master_pid
        self.reactor = reactor
        self.ports = ports
        self._released = False

    def master_gone(self) -> bool:
        """True once this process's parent is no longer the master (it was adopted)."""
        return os.getppid() != self.master_pid

    def arm(self, stdin: int = 0) -> bool:
        """Set the death signal, then check the master is still there; False if it is not
        (the caller exits). From then on, end of file on ``stdin`` or the death signal
        ends the worker."""
        die_with_parent(signal.SIGTERM)
        if self.master_gone():
            return False
        self.reactor.addReader(_EndOfFile(stdin, self._stdin_closed, self.reactor))
        # The death signal is a SIGTERM, which the reactor turns into a shutdown like any
        # other: release the ports first when it is the master's death.
        self.reactor.addSystemEventTrigger("before", "shutdown", self._before_shutdown)
        return True

    def _stdin_closed(self) -> None:
        if self._released:
            return  # the death signal came first: the shutdown is under way
        log.warn("the master (pid {pid}) is gone: stopping", pid=self.master_pid)
        self.release_ports()
        if self.reactor.running:
            self.reactor.stop()

    def _before_shutdown(self) -> Deferred[object] | None:
        if self._released or not self.master_gone():
            return None  # the master's own SIGTERM: it closes the shared sockets itself
        log.warn("the master (pid {pid}) is gone: stopping", pid=self.master_pid)
        return self.release_ports()

    def release_ports(self) -> Deferred[object]:
        """Stop listening on every port now (once)."""
        if self._released:
            return succeed(None)
        self._released = True
        d: Deferred[object] = gatherResults(
            [maybeDeferred(p.stopListening) for p in self.ports]
        )  # type: ignore[assignment]
        return d
