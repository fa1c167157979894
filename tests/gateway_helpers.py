"""The gateway as a user runs it: ``twistd -n sse-offload`` in a subprocess.

The twistd used is the one beside the running interpreter (CI installs the project into a
fresh venv, non-editable, and runs the tests with that venv's python).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from redis_helpers import free_port, stop_process, wait_for

REPO = Path(__file__).resolve().parent.parent


def twistd_path() -> str:
    beside = Path(sys.executable).with_name("twistd")
    if beside.exists():
        return str(beside)
    found = shutil.which("twistd")
    assert found, "twistd not found: install the project (pip install .)"
    return found


def _port_open(port: int) -> bool:
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
        self.port = 0
        self.log_path = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [
            twistd_path(), "-n", "--pidfile=", "--logfile", str(self.log_path),
            "sse-offload", "--rules", str(self.rules_path),
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
        ]
        if self.redis is not None:
            cmd += ["--redis", self.redis]
        return cmd + list(self.args)

    def start(self, wait: bool = True) -> GatewayProcess:
        self.port = free_port()
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(
            self.command(), cwd=self.cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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
        return _port_open(self.port)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        wait_for(lambda: text in self.log(), timeout=timeout, what=f"log line {text!r}")
        return self.log()

    def stop(self) -> int:
        if self.proc is None:
            return 0
        rc = stop_process(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None
        return rc

    def run_to_exit(self, timeout: float = 30.0) -> tuple[int, str]:
        """Run the command expecting it to exit (start-up errors): (status, output)."""
        self.port = free_port()
        env = {**os.environ, **(self.env or {})}
        done = subprocess.run(
            self.command(), cwd=self.cwd, env=env, capture_output=True, timeout=timeout
        )
        return done.returncode, done.stdout.decode() + done.stderr.decode()


def wait_numsub(redis_client, channel: str | bytes, expected: int, timeout: float = 10.0) -> None:
    wait_for(
        lambda: redis_client.numsub(channel) == expected,
        timeout=timeout,
        what=f"PUBSUB NUMSUB {channel!r} == {expected}",
    )


def monotonic_deadline(seconds: float) -> float:
    return time.monotonic() + seconds
