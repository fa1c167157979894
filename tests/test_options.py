"""Listen endpoints: uWSGI's http-socket forms, the listen backlog, the default listener."""

from __future__ import annotations

from pathlib import Path

import pytest

from sse_offload.endpoints import (
    DEFAULT_BACKLOG,
    DEFAULT_LISTEN,
    admin_endpoint,
    http_socket_endpoint,
    with_backlog,
)


@pytest.mark.parametrize(
    ("value", "endpoint"),
    [
        (":9090", "tcp:9090:interface=0.0.0.0"),
        ("127.0.0.1:8080", "tcp:8080:interface=127.0.0.1"),
        ("[::1]:9090", "tcp6:9090:interface=\\:\\:1"),
        ("/run/sse.sock", "unix:/run/sse.sock"),
    ],
)
def test_http_socket_forms(value: str, endpoint: str) -> None:
    assert http_socket_endpoint(value) == endpoint


@pytest.mark.parametrize("value", ["9090", "host:", "[::1]", "host:port"])
def test_bad_http_socket_is_a_value_error(value: str) -> None:
    with pytest.raises(ValueError):
        http_socket_endpoint(value)


def test_backlog_added_unless_given() -> None:
    assert with_backlog("tcp:9090") == f"tcp:9090:backlog={DEFAULT_BACKLOG}"
    assert with_backlog("unix:/x.sock") == f"unix:/x.sock:backlog={DEFAULT_BACKLOG}"
    assert with_backlog("tcp:9090:backlog=5") == "tcp:9090:backlog=5"
    assert with_backlog("systemd:domain=INET:index=0") == "systemd:domain=INET:index=0"


@pytest.mark.parametrize(
    ("given", "endpoint"),
    [
        ("9091", "tcp:9091:interface=127.0.0.1"),
        ("tcp:9091", "tcp:9091:interface=127.0.0.1"),
        ("tcp:9091:interface=0.0.0.0", "tcp:9091:interface=0.0.0.0"),
        ("unix:/run/admin.sock", "unix:/run/admin.sock"),
    ],
)
def test_admin_listener_binds_to_loopback_unless_told(given: str, endpoint: str) -> None:
    assert admin_endpoint(given) == endpoint


def test_the_default_listener_is_loopback_only(tmp_path: Path) -> None:
    from sse_offload import tap
    from sse_offload.processes.listeners import ReusePortListenService

    rules = tmp_path / "rules.ini"
    rules.write_text("[uwsgi]\nroute = ^/s sse:s\n")  # no listen, no http-socket
    options = tap.Options()
    options.parseOptions(["--rules", str(rules), "--redis", "127.0.0.1:1"])
    root = tap.makeService(options)  # builds the tree; nothing listens before startService
    listeners = [s for s in root if isinstance(s, ReusePortListenService)]
    assert [s.spec.address for s in listeners] == [("127.0.0.1", 9090)]


def test_the_listen_help_says_the_default_is_loopback() -> None:
    from sse_offload.tap import Options

    help_text = " ".join(Options().getUsage().split())
    assert f"else {DEFAULT_LISTEN}, loopback only" in help_text
