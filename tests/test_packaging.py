"""The installed project, as a user sees it: the twistd plugin and the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import sse_offload
from gateway_helpers import twistd_path, wait_numsub
from sse_client import SSEClient


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


def test_twisted_is_pinned_below_27_for_the_private_wsgi_api() -> None:
    # backends/wsgi.py subclasses twisted.web.wsgi._WSGIResponse, a private class: a Twisted
    # release may change it without deprecation, so the pin stops below the next major one.
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '"twisted[tls,http2]>=24.7,<27"' in text


def test_the_private_wsgi_api_the_host_relies_on_is_there() -> None:
    import inspect

    from twisted.web import wsgi

    response = wsgi._WSGIResponse
    for name in ("_sendResponseHeaders", "run", "write", "start", "startResponse"):
        assert callable(getattr(response, name)), name
    source = inspect.getsource(response)
    # the host stops the app's iteration and the finish through these
    assert "self._requestFinished" in source and "self._sendResponseHeaders()" in source
    assert "self.request.finish()" in source


def test_no_uwsgi_module_is_installed() -> None:
    # the gateway injects it into sys.modules only while it hosts an app
    import importlib.util

    assert importlib.util.find_spec("uwsgi") is None


@pytest.mark.parametrize("processes", [1, 2])
def test_twist_runs_the_gateway_too(gateway_factory, redis_server, redis, processes) -> None:
    # twist, unlike twistd, never calls privilegedStartService: the listeners must open in
    # startService as well.
    gw = gateway_factory(
        "[uwsgi]\nroute = ^/clock sse:clock\n", redis=redis_server.address,
        args=("--processes", str(processes)), launcher="twist",
    ).start()
    client = SSEClient(gw.port, "/clock")
    assert client.read_head() == 200
    assert client.header("Content-Type") == "text/event-stream"
    wait_numsub(redis, "clock", 1)  # the one worker holding the stream subscribes
    redis.publish("clock", "tick")
    assert client.read_events(1) == ["tick"]
    client.close()
