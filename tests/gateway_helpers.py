"""The gateway as a user runs it: ``twistd -n sse-offload`` (or ``twist``) in a subprocess.

The twistd used is the one beside the running interpreter (CI installs the project into a
fresh venv, non-editable, and runs the tests with that venv's python).

Each gateway runs in a process group of its own, and stopping it kills what is left of that
group: a worker, mule or embedded redis-server its master did not stop (because the test
killed the master, or a bug) does not outlive the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from redis_helpers import free_port, stop_process, wait_for

REPO = Path(__file__).resolve().parent.parent


def twistd_path(name: str = "twistd") -> str:
    """The ``twistd`` (or ``twist``) beside the running interpreter, else the one on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    assert found, f"{name} not found: install the project (pip install .)"
    return found


def kill_group(pgid: int) -> None:
    """SIGKILL every process left in process group ``pgid`` (none left: nothing to do)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port`` now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class GatewayProcess:
    """One gateway subprocess listening on a free loopback port."""

    def __init__(
        self,
        tmp: Path,
        rules: str | Path,
        *,
        redis: str | None,
        args: tuple[str, ...] = (),
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        launcher: str = "twistd",
    ) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        if isinstance(rules, Path):
            self.rules_path = rules
        else:
            self.rules_path = tmp / "rules.ini"
            self.rules_path.write_text(textwrap.dedent(rules))
        self.redis = redis
        self.args = args
        self.cwd = cwd or tmp
        self.env = env
        self.launcher = launcher
        self.port = 0
        self.log_path = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.launcher == "twist":  # twist: never daemonizes, no pid file
            cmd = [twistd_path("twist"), "--log-file", str(self.log_path), "--log-format", "text"]
        else:
            cmd = [twistd_path(), "-n", "--pidfile=", "--logfile", str(self.log_path)]
        cmd += [
            "sse-offload", "--rules", str(self.rules_path),
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
        ]
        if self.redis is not None:
            cmd += ["--redis", self.redis]
        return cmd + list(self.args)

    def start(self, wait: bool = True, port: int = 0) -> GatewayProcess:
        """Start on a free port, or on ``port`` (a restart where clients expect it)."""
        self.port = port or free_port()
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(
            self.command(), cwd=self.cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if wait:
            wait_for(self._listening, timeout=20, what="the gateway to listen")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            out = self.proc.stdout.read().decode() if self.proc.stdout else ""
            raise AssertionError(
                f"gateway exited with {self.proc.returncode}:\n{out}\n{self.log()}"
            )
        return port_open(self.port)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        wait_for(lambda: text in self.log(), timeout=timeout, what=f"log line {text!r}")
        return self.log()

    def stop(self) -> int:
        if self.proc is None:
            return 0
        rc = stop_process(self.proc)
        kill_group(self.proc.pid)  # the session's leader: its pid is the group's id
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None
        return rc

    def run_to_exit(self, timeout: float = 30.0) -> tuple[int, str]:
        """Run the command expecting it to exit (start-up errors): (status, output)."""
        self.port = free_port()
        env = {**os.environ, **(self.env or {})}
        proc = subprocess.Popen(
            self.command(), cwd=self.cwd, env=env, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            proc.kill()
            proc.wait()
            kill_group(proc.pid)
        return proc.returncode, out.decode() + err.decode()


def wait_numsub(redis_client, channel: str | bytes, expected: int, timeout: float = 10.0) -> None:
    wait_for(
        lambda: redis_client.numsub(channel) == expected,
        timeout=timeout,
        what=f"PUBSUB NUMSUB {channel!r} == {expected}",
    )


def monotonic_deadline(seconds: float) -> float:
    return time.monotonic() + seconds
