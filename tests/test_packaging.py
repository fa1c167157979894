"""The installed project, as a user sees it: the twistd plugin and the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sse_offload
from gateway_helpers import twistd_path


def _run(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout + done.stderr


def test_twistd_lists_the_plugin() -> None:
    assert "sse-offload" in _run(twistd_path(), "--help")


def test_plugin_help_names_the_options() -> None:
    out = _run(twistd_path(), "sse-offload", "--help")
    for option in ("--rules", "--listen", "--redis", "--keepalive"):
        assert option in out


def test_console_script_prints_the_version() -> None:
    script = Path(sys.executable).with_name("sse-offload")
    assert _run(str(script), "--version").strip() == f"sse-offload {sse_offload.__version__}"
