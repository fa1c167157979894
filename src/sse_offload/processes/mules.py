"""Mules: the long-lived helper processes a rules file names with ``mule = SCRIPT``.

uWSGI's master spawns one process per ``mule`` line, runs ``.pl`` scripts with the Perl
plugin and ``.py`` scripts with the Python one, and respawns a mule that dies; the original
plugin's examples run their publishers so. Here each mule is a :class:`Mule` service: ``.py``
runs with this Python, ``.pl`` with ``perl`` from ``PATH``, anything else directly if it is
executable. A mule that exits is restarted with an exponential backoff instead of uWSGI's
immediate respawn, and a mule that keeps failing the same way does not flood the log with the
same traceback.

The child's environment is this process's plus whatever the ``environment`` callable returns
at each spawn: the Redis address as a URL in ``REDIS_URL`` and as ``host:port`` or a path in
``REDIS_SERVER``, the form Perl's Redis module reads (docs/architecture.md, difference 14).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..timers import cancel
from .children import (
    MAX_LINE_BYTES,
    ChildProcessService,
    LineProcessProtocol,
    describe_exit,
)

__all__ = [
    "MAX_LINE_BYTES",
    "RESTART_DELAY_FACTOR",
    "RESTART_DELAY_INITIAL",
    "RESTART_DELAY_MAX",
    "STABLE_RUN_SECONDS",
    "STOP_GRACE_SECONDS",
    "LineProcessProtocol",
    "Mule",
    "describe_exit",
]

# Restart backoff. uWSGI's master respawns a dead mule at once (core/master_checks.c), which
# turns a mule that cannot start (a missing Perl module, a syntax error) into a fork loop.
# 1 s is the first delay of Twisted's own ReconnectingClientFactory (initialDelay) and the
# order of magnitude of the hub's first Redis reconnect delay (0.5 s, pubsub.py); doubling is
# the usual exponential backoff; 30 s caps it so a mule whose cause was fixed (module
# installed, file deployed) is back within half a minute, against the hour Twisted's factory
# allows.
RESTART_DELAY_INITIAL = 1.0
RESTART_DELAY_FACTOR = 2.0
RESTART_DELAY_MAX = 30.0
# A run at least this long counts as healthy: the next restart waits RESTART_DELAY_INITIAL
# again. 10 s is supervisord's idea of a successful start (``startsecs``, default 1 s) made
# generous enough that a publisher which dies on its first Redis error does not count.
STABLE_RUN_SECONDS = 10.0
# SIGTERM, then SIGKILL after this long. systemd waits 90 s (DefaultTimeoutStopSec) for a
# whole service; a mule is a helper that twistd's shutdown waits for, so a few seconds.
STOP_GRACE_SECONDS = 5.0
# How many output lines of one run are remembered to recognise "the same failure again".
# A Python traceback of an ImportError is ~5 lines, Perl's "Can't locate" 1-2 lines.
_SIGNATURE_MAX_LINES = 100

Reactor = Any
"""A provider of IReactorProcess and IReactorTime (the global reactor by default)."""


class Mule(ChildProcessService):
    """One ``mule = SCRIPT`` process, kept running while the service runs.

    ``script`` is resolved against ``cwd`` (default: the current directory when the service is
    built, as uWSGI resolves it against its own cwd), which is also the child's working
    directory. ``environment`` is called at every spawn and its mapping is added to
    ``os.environ`` for the child. ``reactor`` must provide IReactorProcess and IReactorTime.

    Each output line is logged with the fields ``mule``, ``stream``, ``line`` and ``pid``. A
    child that exits is restarted after 1, 2, 4 ... 30 s (back to 1 s after a run of 10 s or
    more). After a failure, the next run's output is held back for as long as it repeats the
    failed run's output line for line (at most STABLE_RUN_SECONDS): if it ends the same way
    with the same status, one short "exited again" line is logged instead of the output.

    ``stopService`` returns a Deferred that fires once the child has exited.
    """

    log = Logger()

    def __init__(
        self,
        script: str,
        environment: Callable[[], Mapping[str, str]],
        reactor: Reactor | None = None,
        cwd: str | None = None,
    ) -> None:
        super().__init__(reactor)
        self.script = script
        self.cwd = os.path.abspath(cwd) if cwd is not None else os.getcwd()
        self.path = os.path.join(self.cwd, script)
        self.spawn_count = 0
        self._environment = environment
        self._restart_call: DelayedCall | None = None
        self._release_call: DelayedCall | None = None
        self._delay = RESTART_DELAY_INITIAL
        self._started_at = 0.0
        self._reported_problem: str | None = None
        # Output of the current run, and (status, output) of the previous failed run.
        self._output: list[tuple[str, str]] = []
        self._output_complete = True
        self._last_failure: tuple[str, tuple[tuple[str, str], ...]] | None = None
        self._holding = False

    def __repr__(self) -> str:
        return f"<Mule {self.script!r} pid={self.pid}>"

    # -- service ----------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._delay = RESTART_DELAY_INITIAL
        self._last_failure = None
        self._spawn()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for call in (self._restart_call, self._release_call):
            cancel(call)
        self._restart_call = self._release_call = None
        return self._stop_child(STOP_GRACE_SECONDS)

    def _log_stopping(self, pid: int | None) -> None:
        self.log.info("stopping mule {mule} (pid {pid})", mule=self.script, pid=pid)

    def _log_killing(self, grace: float) -> None:
        self.log.warn(
            "mule {mule} ignored SIGTERM for {grace}s: sending SIGKILL",
            mule=self.script,
            grace=grace,
        )

    # -- spawning ---------------------------------------------------------------------------

    def _command(self) -> tuple[list[str] | None, str | None, bool]:
        """(argv, problem, retry): argv to run, or a problem to log and whether to retry."""
        if not os.path.isfile(self.path):
            return None, f"mule script {self.path} does not exist", True
        if self.script.endswith(".py"):
            if not sys.executable:
                return None, f"no Python interpreter to run mule {self.script}", True
            return [sys.executable, self.path], None, False
        if self.script.endswith(".pl"):
            perl = shutil.which("perl")
            if perl is None:
                return None, f"perl is not on PATH: cannot run mule {self.script}", True
            return [perl, self.path], None, False
        if os.access(self.path, os.X_OK):
            return [self.path], None, False
        return (
            None,
            f"mule {self.script} is neither .py nor .pl nor executable: not running it",
            False,
        )

    def _report_problem(self, problem: str, retry: bool) -> None:
        if problem != self._reported_problem:
            self._reported_problem = problem
            if retry:
                self.log.error(
                    "{problem}; retrying with backoff (not logged again)",
                    problem=problem,
                    mule=self.script,
                )
            else:
                self.log.error("{problem}", problem=problem, mule=self.script)
        # The same problem again is not logged: twistd's log has no level filter by default.

    def _spawn(self) -> None:
        self._restart_call = None
        if not self.running:
            return
        argv, problem, retry = self._command()
        env = dict(os.environ)
        if argv is not None:
            try:
                env.update(self._environment())
            except Exception as e:
                # Logged once per kind of failure, like a missing script; the cause may pass
                # (e.g. the embedded Redis not started yet).
                problem = f"cannot build the environment of mule {self.script}: {e!r}"
                retry = True
        if problem is not None:
            self._report_problem(problem, retry)
            if retry:
                self._schedule_restart()
            return
        assert argv is not None
        if argv[0] == sys.executable:
            env["PYTHONUNBUFFERED"] = "1"
        try:
            # With cwd the process's own (the usual case) Twisted uses posix_spawnp; otherwise
            # it forks, and a SIGTERM in the instant between fork and exec is lost: the SIGKILL
            # after STOP_GRACE_SECONDS covers that.
            self._spawn_child(argv, env, path=self.cwd)
        except OSError as e:
            self._report_problem(f"cannot start mule {self.script}: {e}", True)
            self._schedule_restart()
            return
        self._reported_problem = None
        self.spawn_count += 1
        self._started_at = self._reactor.seconds()
        self._output = []
        self._output_complete = True
        # After a failure, hold this run's output back while it repeats the last failure's
        # line for line: an identical failure is then reported by one short line.
        self._holding = self._last_failure is not None
        if self._holding:
            # Not logged: an identical failure is reported by one line when it exits.
            self._release_call = self._reactor.callLater(STABLE_RUN_SECONDS, self._release)
        else:
            self.log.info(
                "mule {mule} started: {argv} (pid {pid})",
                mule=self.script,
                argv=" ".join(argv),
                pid=self.pid,
            )

    def _schedule_restart(self) -> float:
        delay = self._delay
        self._restart_call = self._reactor.callLater(delay, self._spawn)
        self._delay = min(self._delay * RESTART_DELAY_FACTOR, RESTART_DELAY_MAX)
        return delay

    # -- output and exit --------------------------------------------------------------------

    def _log_line(self, stream: str, line: str) -> None:
        self.log.info(
            "[mule {mule} {stream}] {line}",
            mule=self.script,
            stream=stream,
            line=line,
            pid=self.pid,
        )

    def _line_received(self, stream: str, line: str) -> None:
        recorded = len(self._output) < _SIGNATURE_MAX_LINES
        if recorded:
            self._output.append((stream, line))
        else:
            self._output_complete = False
        if self._holding:
            previous = self._last_failure[1] if self._last_failure is not None else ()
            n = len(self._output)
            if recorded and n <= len(previous) and previous[n - 1] == (stream, line):
                return
            self._release()
            if recorded:  # _release logged it with the held lines
                return
        self._log_line(stream, line)

    def _release(self) -> None:
        """Stop holding output back: log what was held (this run differs from the last)."""
        cancel(self._release_call)
        self._release_call = None
        if self._holding:
            self._holding = False
            for stream, line in self._output:
                self._log_line(stream, line)

    def _process_ended(self, pid: int | None, status: str) -> None:
        ran = self._reactor.seconds() - self._started_at
        if not self.running:
            self._release()
            self.log.info(
                "mule {mule} (pid {pid}) stopped: {status}",
                mule=self.script,
                pid=pid,
                status=status,
            )
            self._child_stopped()
            return
        signature = (status, tuple(self._output)) if self._output_complete else None
        same_again = self._holding and signature is not None and signature == self._last_failure
        if ran >= STABLE_RUN_SECONDS:
            self._delay = RESTART_DELAY_INITIAL
        delay = self._schedule_restart()
        if same_again:
            cancel(self._release_call)
            self._release_call = None
            self._holding = False
            self.log.warn(
                "mule {mule} exited again with {status}; retrying in {delay:g}s",
                mule=self.script,
                status=status,
                delay=delay,
                pid=pid,
            )
        else:
            self._release()
            self.log.error(
                "mule {mule} (pid {pid}) exited with {status} after {ran:.1f}s; "
                "restarting in {delay:g}s",
                mule=self.script,
                pid=pid,
                status=status,
                ran=ran,
                delay=delay,
            )
        # A long healthy run that ends is news next time too, whatever it printed.
        self._last_failure = signature if ran < STABLE_RUN_SECONDS else None
