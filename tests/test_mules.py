"""Mule services (``mule = SCRIPT``) and the clock publisher example.

Real child processes throughout. Backoff timing uses ``ClockedReactor``: children are spawned
by the real reactor, but the Mule's timers run on a ``task.Clock`` the test advances, so the
1, 2, 4 ... 30 s sequence is checked without waiting for it. Every wait has a deadline.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher

from redis_helpers import RedisServer, RespClient, free_port, wait_for
from sse_offload.processes import mules
from sse_offload.processes.mules import (
    RESTART_DELAY_INITIAL,
    RESTART_DELAY_MAX,
    STABLE_RUN_SECONDS,
    STOP_GRACE_SECONDS,
    Mule,
)
from twisted_helpers import (
    WAIT,
    eventually,
    no_delayed_calls_left_behind,
    stop_and_check_gone,
)

pytestmark = pytest.mark.usefixtures(no_delayed_calls_left_behind.__name__)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CLOCK_PUBLISHER = EXAMPLES / "clock_publisher.py"

PY_PUBLISHER = """\
import os, socket, sys, time
from urllib.parse import urlsplit

url = urlsplit(os.environ["REDIS_URL"])
channel = os.environ["MULE_CHANNEL"].encode()
print("publisher running in", os.getcwd())
print("a line on stderr", file=sys.stderr)
sock = socket.create_connection((url.hostname, url.port), timeout=5)
n = 0
while True:
    n += 1
    payload = b"tick %d" % n
    sock.sendall(b"*3\\r\\n$7\\r\\nPUBLISH\\r\\n$%d\\r\\n%s\\r\\n$%d\\r\\n%s\\r\\n"
                 % (len(channel), channel, len(payload), payload))
    sock.recv(64)
    time.sleep(0.1)
"""

PERL_PUBLISHER = """\
use strict;
use warnings;
use Redis;
use Time::HiRes qw(sleep);
my $redis = Redis->new(server => $ENV{REDIS_SERVER});
$| = 1;
print "perl publisher on $ENV{REDIS_SERVER}\\n";
while (1) { $redis->publish($ENV{MULE_CHANNEL}, "perl " . time); sleep 0.1; }
"""


class ClockedReactor:
    """Real child processes, fake time: spawnProcess goes to the reactor, timers to a Clock."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock

    def spawnProcess(self, *args: Any, **kwargs: Any) -> Any:
        return reactor.spawnProcess(*args, **kwargs)

    def callLater(self, *args: Any, **kwargs: Any) -> Any:
        return self.clock.callLater(*args, **kwargs)

    def seconds(self) -> float:
        return self.clock.seconds()


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


def _no_environment() -> dict[str, str]:
    return {}


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def _texts(events: list[dict[str, Any]], mule: Mule) -> list[str]:
    return [formatEvent(e) for e in events if e.get("mule") == mule.script]


def _count(events: list[dict[str, Any]], mule: Mule, needle: str) -> int:
    return sum(needle in text for text in _texts(events, mule))


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def stop_after() -> Iterator[Callable[[Mule], Mule]]:
    """Register a Mule to be stopped (and its process waited for) after the test."""
    started: list[Mule] = []
    yield lambda mule: started.append(mule) or mule
    for mule in started:
        if not mule.running:
            continue
        done = mule.stopService()
        kill = None
        clock = getattr(mule._reactor, "clock", None)
        if clock is not None:
            # A SIGTERM that lands between fork and exec is lost; the SIGKILL fallback then
            # runs on the mule's fake clock, so move that clock on if the child lingers.
            kill = reactor.callLater(2, clock.advance, STOP_GRACE_SECONDS)
        try:
            pytest_twisted.blockon(done.addTimeout(WAIT, reactor))
        finally:
            if kill is not None and kill.active():
                kill.cancel()


@pytest.fixture
def start_clocked(tmp_path: Path, clock: task.Clock, stop_after) -> Callable[..., Mule]:
    """Write ``body`` (unless None) to a script in tmp_path and start a Mule on it.

    The Mule's timers run on ``clock``; it is stopped after the test.
    """

    def start(
        script: str,
        body: str | None,
        mode: int = 0o644,
        environment: Callable[[], Mapping[str, str]] = _no_environment,
    ) -> Mule:
        if body is not None:
            _write(tmp_path / script, body, mode)
        mule = stop_after(Mule(script, environment, ClockedReactor(clock), cwd=str(tmp_path)))
        mule.startService()
        return mule

    return start


def _pending_delay(clock: task.Clock) -> float:
    """The delay of the one call pending on ``clock`` (the scheduled restart)."""
    (call,) = clock.getDelayedCalls()
    return call.getTime() - clock.seconds()


def _follow_restarts(clock: task.Clock, times: int) -> list[float]:
    """Let the pending restart run ``times`` times; return the delays it was scheduled with."""
    delays = []
    for _ in range(times):
        delays.append(_pending_delay(clock))
        clock.advance(delays[-1])
    return delays


async def _restart_delay(mule: Mule, clock: task.Clock) -> float:
    """Wait for the running child to exit; return the delay of the restart it scheduled."""
    await eventually(
        lambda: mule.pid is None and len(clock.getDelayedCalls()) == 1,
        f"{mule.script} to exit and schedule a restart",
    )
    return _pending_delay(clock)


def _subscribe(port: int, channel: str) -> RespClient:
    client = RespClient.tcp(port)
    assert client.call("SUBSCRIBE", channel) == [b"subscribe", channel.encode(), 1]
    return client


def _message(client: RespClient) -> bytes:
    """The next pub/sub message payload (blocking, with the client's 10 s socket timeout)."""
    kind, _, payload = client.read_reply()
    assert kind == b"message"
    return payload


# -- running mules ----------------------------------------------------------------------------


_PERL_REDIS = pytest.mark.skipif(
    subprocess.run(["perl", "-MRedis", "-e1"], capture_output=True).returncode != 0,
    reason="perl or the CPAN Redis module (Debian libredis-perl) is not installed",
)


@pytest.mark.parametrize(
    ("script", "body", "variable", "redis_attribute", "payload_start"),
    [
        pytest.param("publisher.py", PY_PUBLISHER, "REDIS_URL", "url", b"tick ", id="python"),
        pytest.param(
            "clock.pl",
            PERL_PUBLISHER,
            "REDIS_SERVER",
            "address",
            b"perl ",
            id="perl",
            marks=_PERL_REDIS,
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_mule_publishes_to_the_redis_server_its_environment_names(
    script: str,
    body: str,
    variable: str,
    redis_attribute: str,
    payload_start: bytes,
    redis_server: RedisServer,
    tmp_path: Path,
    stop_after,
) -> None:
    environment = {variable: getattr(redis_server, redis_attribute)}
    channel = f"mule-{uuid.uuid4().hex}"
    _write(tmp_path / script, body)
    subscriber = _subscribe(redis_server.port, channel)
    try:
        mule = stop_after(
            Mule(
                script,
                lambda: {**environment, "MULE_CHANNEL": channel},
                reactor,
                cwd=str(tmp_path),
            )
        )
        mule.startService()
        payload = await deferToThread(_message, subscriber)
        assert payload.startswith(payload_start)
        if script.endswith(".pl"):  # clock.pl publishes "perl EPOCH_SECONDS"
            assert abs(int(payload.split()[1]) - time.time()) < 60
        await stop_and_check_gone(mule)
    finally:
        subscriber.close()


@pytest_twisted.ensureDeferred
async def test_environment_is_read_again_at_each_spawn(
    tmp_path: Path, clock: task.Clock, start_clocked
) -> None:
    out = tmp_path / "seen"
    calls: list[int] = []

    def environment() -> dict[str, str]:
        calls.append(1)
        return {"N": str(len(calls))}

    mule = start_clocked(
        "env.py",
        f"import os\nopen({str(out)!r}, 'a').write(os.environ['N'] + ',')\n",
        environment=environment,
    )
    await _restart_delay(mule, clock)
    clock.advance(RESTART_DELAY_INITIAL)
    await _restart_delay(mule, clock)
    assert out.read_text() == "1,2,"


@pytest_twisted.ensureDeferred
async def test_output_lines_reach_the_log_with_mule_and_stream(
    redis_server: RedisServer, tmp_path: Path, log_events, stop_after
) -> None:
    _write(tmp_path / "publisher.py", PY_PUBLISHER)
    mule = stop_after(
        Mule(
            "publisher.py",
            lambda: {"REDIS_URL": redis_server.url, "MULE_CHANNEL": "mule-log-test"},
            reactor,
            cwd=str(tmp_path),
        )
    )
    mule.startService()

    def lines() -> set[tuple[str, str]]:
        return {
            (e["stream"], e["line"])
            for e in log_events
            if e.get("mule") == "publisher.py" and "line" in e
        }

    await eventually(lambda: len(lines()) >= 2, "both output lines in the log")
    # The relative script ran from cwd, and each stream is told apart.
    assert lines() == {
        ("stdout", f"publisher running in {tmp_path}"),
        ("stderr", "a line on stderr"),
    }
    assert any(e.get("pid") == mule.pid for e in log_events if e.get("line"))


@pytest_twisted.ensureDeferred
async def test_relative_script_resolves_against_the_current_directory_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: task.Clock, stop_after
) -> None:
    (tmp_path / "sub").mkdir()
    marker = tmp_path / "sub" / "ran"
    _write(tmp_path / "sub" / "m.py", f"open({str(marker)!r}, 'w').write('yes')\n")
    monkeypatch.chdir(tmp_path)
    mule = stop_after(Mule("sub/m.py", _no_environment, ClockedReactor(clock)))
    assert mule.path == str(tmp_path / "sub" / "m.py")
    mule.startService()
    await _restart_delay(mule, clock)
    assert marker.read_text() == "yes"


# -- restarts and backoff ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_exiting_mule_is_restarted_after_about_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_after
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "quits.sh", "#!/bin/sh\nexit 0\n", 0o755)
    mule = stop_after(Mule("quits.sh", _no_environment, reactor))
    started = time.monotonic()
    mule.startService()
    await eventually(lambda: mule.spawn_count >= 2, "a second spawn", timeout=5)
    assert time.monotonic() - started >= 0.9 * RESTART_DELAY_INITIAL
    assert mule.spawn_count == 2


@pytest_twisted.ensureDeferred
async def test_restart_delay_doubles_up_to_the_cap(clock: task.Clock, start_clocked) -> None:
    mule = start_clocked("fails.sh", "#!/bin/sh\necho boom\nexit 3\n", 0o755)
    delays = []
    for _ in range(7):
        delay = await _restart_delay(mule, clock)
        delays.append(delay)
        clock.advance(delay)
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert RESTART_DELAY_MAX == 30
    assert mule.spawn_count == 8


@pytest_twisted.ensureDeferred
async def test_restart_delay_resets_after_a_long_run(
    tmp_path: Path, clock: task.Clock, start_clocked
) -> None:
    fail, running = tmp_path / "fail", tmp_path / "running"
    fail.touch()
    mule = start_clocked(
        "flaky.sh", f"#!/bin/sh\n[ -e {fail} ] && exit 3\ntouch {running}\nexec sleep 60\n", 0o755
    )
    assert await _restart_delay(mule, clock) == 1
    clock.advance(1)
    assert await _restart_delay(mule, clock) == 2
    clock.advance(2)
    assert await _restart_delay(mule, clock) == 4
    fail.unlink()
    clock.advance(4)
    # Signalled before its exec, the child would lose the SIGTERM (Twisted's fork path).
    await eventually(running.exists, "the healthy run")
    clock.advance(STABLE_RUN_SECONDS)
    os.kill(mule.pid, signal.SIGTERM)
    assert await _restart_delay(mule, clock) == RESTART_DELAY_INITIAL


@pytest_twisted.ensureDeferred
async def test_short_run_does_not_reset_the_delay(clock: task.Clock, start_clocked) -> None:
    mule = start_clocked("sleeper.sh", "#!/bin/sh\nexec sleep 60\n", 0o755)
    for expected in (1, 2, 4):
        await eventually(lambda: mule.pid is not None, "a running child")
        clock.advance(STABLE_RUN_SECONDS - 1)
        os.kill(mule.pid, signal.SIGKILL)
        delay = await _restart_delay(mule, clock)
        assert delay == expected
        clock.advance(delay)


@pytest.mark.parametrize(
    ("script", "needle", "status"),
    [
        ("needs_module.pl", "Can't locate NoSuchModule/Xyz.pm", 2),
        ("needs_module.py", "ModuleNotFoundError: No module named 'no_such_module_xyz'", 1),
    ],
)
@pytest_twisted.ensureDeferred
async def test_identical_failures_are_logged_in_full_once_then_in_one_line(
    script: str,
    needle: str,
    status: int,
    clock: task.Clock,
    log_events,
    start_clocked,
) -> None:
    body = "use NoSuchModule::Xyz;\n" if script.endswith(".pl") else "import no_such_module_xyz\n"
    mule = start_clocked(script, body)
    for _ in range(3):
        clock.advance(await _restart_delay(mule, clock))
    await _restart_delay(mule, clock)
    assert mule.spawn_count == 4
    assert _count(log_events, mule, needle) == 1
    assert _count(log_events, mule, f"exited with status {status}") == 1
    again = [t for t in _texts(log_events, mule) if "exited again" in t]
    assert again == [
        f"mule {script} exited again with status {status}; retrying in {d}s" for d in (2, 4, 8)
    ]


@pytest_twisted.ensureDeferred
async def test_a_child_that_exits_before_twisted_looks_keeps_its_pid(
    tmp_path: Path, clock: task.Clock, log_events, start_clocked, monkeypatch
) -> None:
    """A quick failure can be over before spawnProcess returns (seen on a fast machine):
    Twisted then hands back a transport whose pid is already None. The mule still knows the
    pid, and a run is not taken as ended while it is going."""
    from twisted.internet import process

    register = process.registerReapProcessHandler

    def after_the_exit(pid: int, proc: Any) -> None:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        register(pid, proc)

    monkeypatch.setattr(process, "registerReapProcessHandler", after_the_exit)
    mule = start_clocked("quick.sh", "#!/bin/sh\necho 'quick failure' >&2\nexit 3\n", 0o755)
    pid = mule.pid
    assert pid is not None and pid > 0
    assert await _restart_delay(mule, clock) == 1
    ended = [e for e in log_events if "exited with" in formatEvent(e)]
    assert [e["pid"] for e in ended] == [pid]
    assert [e["pid"] for e in log_events if e.get("line") == "quick failure"] == [pid]


@pytest_twisted.ensureDeferred
async def test_a_different_failure_is_logged_in_full_again(
    tmp_path: Path, clock: task.Clock, log_events, start_clocked
) -> None:
    mule = start_clocked("changes.sh", "#!/bin/sh\necho 'failure A' >&2\nexit 3\n", 0o755)
    path = tmp_path / "changes.sh"
    clock.advance(await _restart_delay(mule, clock))
    delay = await _restart_delay(mule, clock)  # the same again: one short line
    # Changed while no run is going, so the next run reads all of it.
    _write(path, "#!/bin/sh\necho 'failure A' >&2\necho 'failure B' >&2\nexit 3\n", 0o755)
    clock.advance(delay)
    await _restart_delay(mule, clock)
    texts = _texts(log_events, mule)
    assert sum("failure A" in t for t in texts) == 2  # first run, and with failure B
    assert sum("failure B" in t for t in texts) == 1
    assert sum("exited with status 3" in t for t in texts) == 2
    assert sum("exited again" in t for t in texts) == 1


@pytest_twisted.ensureDeferred
async def test_output_held_after_a_failure_is_logged_once_the_run_lasts(
    tmp_path: Path, clock: task.Clock, log_events, start_clocked
) -> None:
    fail, running = tmp_path / "fail", tmp_path / "running"
    fail.touch()
    mule = start_clocked(
        "slow_start.sh",
        f"#!/bin/sh\necho warming up\n[ -e {fail} ] && exit 3\ntouch {running}\nexec sleep 60\n",
        0o755,
    )
    delay = await _restart_delay(mule, clock)
    fail.unlink()
    clock.advance(delay)
    await eventually(running.exists, "the second run")
    # "warming up" repeats the failed run's output, so it is held back until the run lasts.
    assert _count(log_events, mule, "warming up") == 1
    clock.advance(STABLE_RUN_SECONDS)
    await eventually(lambda: _count(log_events, mule, "warming up") == 2, "the held line")


# -- scripts that cannot run ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_missing_script_is_logged_once_retried_and_started_when_it_appears(
    tmp_path: Path, clock: task.Clock, log_events, start_clocked
) -> None:
    mule = start_clocked("later.py", None)  # written later
    assert _follow_restarts(clock, 4) == [1, 2, 4, 8]
    assert mule.spawn_count == 0
    assert _count(log_events, mule, "does not exist") == 1
    _write(tmp_path / "later.py", "import time\nprint('here', flush=True)\ntime.sleep(60)\n")
    clock.advance(_pending_delay(clock))
    assert mule.spawn_count == 1 and mule.pid is not None
    await eventually(lambda: _count(log_events, mule, "here"), "the late script's output")
    assert _count(log_events, mule, "does not exist") == 1


def _environment_not_ready() -> dict[str, str]:
    raise RuntimeError("the embedded redis-server is not started yet")


@pytest.mark.parametrize(
    ("script", "environment", "empty_path", "needle"),
    [
        pytest.param(
            "clock.pl", _no_environment, True, "perl is not on PATH", id="missing-interpreter"
        ),
        pytest.param(
            "m.py", _environment_not_ready, False, "not started yet", id="environment-failure"
        ),
    ],
)
def test_problem_before_the_spawn_is_logged_once_and_retried_with_backoff(
    script: str,
    environment: Callable[[], dict[str, str]],
    empty_path: bool,
    needle: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: task.Clock,
    log_events,
) -> None:
    _write(tmp_path / script, "")  # never run: the problem comes first
    if empty_path:
        empty = tmp_path / "empty"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
    # A bare Clock as reactor: no spawnProcess, so the test fails if the mule tries to spawn.
    mule = Mule(script, environment, clock, cwd=str(tmp_path))
    mule.startService()
    assert _follow_restarts(clock, 6) == [1, 2, 4, 8, 16, 30]
    assert _count(log_events, mule, needle) == 1
    assert len(clock.getDelayedCalls()) == 1
    mule.stopService()
    assert clock.getDelayedCalls() == []


def test_script_that_is_neither_py_pl_nor_executable_is_not_run(
    tmp_path: Path, clock: task.Clock, log_events
) -> None:
    _write(tmp_path / "clock.rb", "puts 1\n")
    mule = Mule("clock.rb", _no_environment, clock, cwd=str(tmp_path))
    mule.startService()
    assert clock.getDelayedCalls() == []
    assert mule.spawn_count == 0
    assert _count(log_events, mule, "neither .py nor .pl nor executable") == 1
    mule.stopService()


# -- stopping ---------------------------------------------------------------------------------


async def _running_mule(script: str, ready: str, log_events: list[dict[str, Any]]) -> Mule:
    """Start a mule on ``script`` in the current directory; return once it has logged ``ready``."""
    mule = Mule(script, _no_environment, reactor)
    mule.startService()
    await eventually(lambda: _count(log_events, mule, ready), f"{script} to print {ready!r}")
    return mule


@pytest_twisted.ensureDeferred
async def test_stop_terminates_the_mule_and_cancels_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_events
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "waits.py", "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    mule = await _running_mule("waits.py", "up", log_events)
    await stop_and_check_gone(mule)
    assert _count(log_events, mule, "stopped: signal 15 (SIGTERM)") == 1
    assert _count(log_events, mule, "restarting") == 0


@pytest_twisted.ensureDeferred
async def test_mule_ignoring_sigterm_is_killed_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_events
) -> None:
    monkeypatch.setattr(mules, "STOP_GRACE_SECONDS", 0.3)
    monkeypatch.chdir(tmp_path)
    _write(
        tmp_path / "stubborn.py",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\ntime.sleep(60)\n",
    )
    mule = await _running_mule("stubborn.py", "ignoring SIGTERM", log_events)
    await stop_and_check_gone(mule)
    assert _count(log_events, mule, "sending SIGKILL") == 1
    assert _count(log_events, mule, "stopped: signal 9 (SIGKILL)") == 1


def test_stop_before_any_spawn_fires_at_once(tmp_path: Path, clock: task.Clock) -> None:
    mule = Mule("absent.py", _no_environment, clock, cwd=str(tmp_path))
    mule.startService()
    d = mule.stopService()
    assert d.called
    assert clock.getDelayedCalls() == []


# -- examples/clock_publisher.py --------------------------------------------------------------


def _start_publisher(url: str, stderr_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url}
    with open(stderr_path, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, str(CLOCK_PUBLISHER)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _terminate(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_clock_publisher_publishes_epoch_seconds_a_second_apart(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    subscriber = _subscribe(redis_server.port, "clock")
    proc = _start_publisher(redis_server.url, tmp_path / "stderr")
    try:
        received = []
        for _ in range(4):
            payload = _message(subscriber)
            received.append((time.monotonic(), payload))
        assert _terminate(proc) == 0
    finally:
        subscriber.close()
        if proc.poll() is None:
            _terminate(proc)
    for _, payload in received:
        assert payload.isdigit(), payload  # the integer as text, no newline
        assert abs(int(payload) - time.time()) < 10
    values = [int(p) for _, p in received]
    assert all(b - a in (1, 2) for a, b in itertools.pairwise(values))
    # The first publish is at connect time, the next on the following whole second; from
    # then on one a second.
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(received[1:])]
    assert all(0.7 < gap < 1.3 for gap in gaps), gaps
    log = (tmp_path / "stderr").read_text()
    assert f"connected to {redis_server.url}" in log
    assert "stopping on signal 15" in log


def test_clock_publisher_reconnects_over_a_unix_socket_when_redis_comes_back(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    url = "unix://" + fresh_redis.unix_path
    stderr_path = tmp_path / "stderr"
    subscriber = _subscribe(fresh_redis.port, "clock")
    proc = _start_publisher(url, stderr_path)
    try:
        assert _message(subscriber).isdigit()
        subscriber.close()
        fresh_redis.stop()
        wait_for(lambda: "lost" in stderr_path.read_text(), what="the publisher to notice")
        # Redis stays down over several retries; none of them adds a log line.
        quiet_until = time.monotonic() + 2.5
        while time.monotonic() < quiet_until:
            assert proc.poll() is None
            assert stderr_path.read_text().count("\n") == 2, stderr_path.read_text()
            time.sleep(0.1)
        fresh_redis.start()
        subscriber = _subscribe(fresh_redis.port, "clock")
        assert _message(subscriber).isdigit()
        assert _terminate(proc) == 0
    finally:
        subscriber.close()
        if proc.poll() is None:
            _terminate(proc)
    lines = stderr_path.read_text().splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == [
        "connected",
        "lost",
        "connected",
        "stopping",
    ]


def test_clock_publisher_waits_for_redis_and_logs_the_failure_once(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = RedisServer(tmp_path_factory.mktemp("late"))
    server.port = free_port()
    stderr_path = tmp_path / "stderr"
    proc = _start_publisher(server.url, stderr_path)
    try:
        wait_for(lambda: "cannot connect" in stderr_path.read_text(), what="a failed connect")
        server.start()
        try:
            subscriber = _subscribe(server.port, "clock")
            try:
                assert _message(subscriber).isdigit()
            finally:
                subscriber.close()
        finally:
            assert _terminate(proc) == 0
            server.stop()
    finally:
        if proc.poll() is None:
            _terminate(proc)
    log = stderr_path.read_text()
    assert log.count("cannot connect") == 1
    assert log.count("connected to") == 1
