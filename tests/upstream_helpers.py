"""A real gunicorn upstream for the proxy tests, in a subprocess on loopback or a unix socket.

gunicorn runs in a process group of its own, killed whole when it stops: its workers never
outlive the test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from gateway_helpers import kill_group
from redis_helpers import free_port, stop_process, wait_for

REPO = Path(__file__).resolve().parent.parent
DJANGO_PROJECT = REPO / "examples" / "django_project"
APPS = Path(__file__).resolve().parent / "apps"


class Gunicorn:
    """``gunicorn APP`` from ``chdir``, bound to a free loopback port or ``unix_path``."""

    def __init__(
        self, app: str, chdir: Path, log: Path, unix_path: str | None = None, workers: int = 4
    ) -> None:
        self.app, self.chdir, self.log_path = app, chdir, log
        self.unix_path = unix_path
        self.port = 0 if unix_path else free_port()
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The gateway's ``--proxy`` value for this upstream."""
        return f"unix:{self.unix_path}" if self.unix_path else f"http://127.0.0.1:{self.port}"

    def start(self) -> Gunicorn:
        bind = f"unix:{self.unix_path}" if self.unix_path else f"127.0.0.1:{self.port}"
        self.log_file = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(self.workers),
             "--threads", "4", "--chdir", str(self.chdir), self.app],
            stdout=self.log_file, stderr=subprocess.STDOUT, env={**os.environ},
            start_new_session=True,
        )
        wait_for(self._ready, timeout=30, what="gunicorn to listen")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited: {self.log_path.read_text()}")
        try:
            if self.unix_path:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.unix_path)
                s.close()
            else:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            kill_group(self.proc.pid)
        self.proc = None
        if hasattr(self, "log_file"):
            self.log_file.close()
