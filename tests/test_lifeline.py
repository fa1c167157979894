"""A worker's lifeline to its master, each sign on its own; and the port a new gateway probes.

tests/test_processes.py kills a real master and watches its workers end; here each of the
two signs a worker watches (the death signal, end of file on stdin) is shown to be enough
alone, and a new gateway is shown to refuse a port that orphans still listen on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest
import pytest_twisted

from gateway_helpers import kill_group
from redis_helpers import wait_for
from sse_offload.processes import lifeline
from sse_offload.processes.lifeline import MasterWatch, _EndOfFile
from sse_offload.processes.listeners import ListenSpec, open_sockets
from twisted_helpers import eventually

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def _exited(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


@linux_only
def test_the_death_signal_ends_a_child_whose_parent_is_killed(tmp_path: Path) -> None:
    # parent.py spawns child.py and waits; child.py asks for the death signal and sleeps,
    # with its stdin closed (the death signal alone must end it), and writes its pid.
    pid_file = tmp_path / "child.pid"
    child = textwrap.dedent(f"""
        import os, time
        from sse_offload.processes.lifeline import die_with_parent
        assert die_with_parent()
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    """)
    parent = textwrap.dedent(f"""
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", {child!r}], stdin=subprocess.DEVNULL).wait()
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], start_new_session=True)
    try:
        pid = wait_for(lambda: pid_file.exists() and pid_file.read_text() and int(
            pid_file.read_text()), what="the child to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for(lambda: _exited(pid), timeout=5, what="the child to end with its parent")
    finally:
        proc.kill()
        proc.wait()
        kill_group(proc.pid)


def _unread(fd: int) -> int:
    """Bytes waiting in pipe ``fd``."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


@pytest_twisted.ensureDeferred
async def test_end_of_file_on_stdin_is_seen_by_the_reactor() -> None:
    from twisted.internet import reactor

    read, write = os.pipe()
    ended: list[bool] = []
    reader = _EndOfFile(read, lambda: ended.append(True), reactor)
    reactor.addReader(reader)
    try:
        os.write(write, b"ignored")  # what comes through is not the end
        await eventually(lambda: _unread(read) == 0, what="the reader to read it")
        assert ended == []
        os.close(write)  # as the master's exit closes its end
        await eventually(lambda: ended, what="the end of file")
    finally:
        reactor.removeReader(reader)
        os.close(read)


def test_a_worker_whose_master_is_already_gone_does_not_start(tmp_path: Path) -> None:
    rules = tmp_path / "rules.ini"
    rules.write_text("[uwsgi]\nroute = ^/s sse:s\n")
    not_my_parent = 1  # the worker's parent is this test, not pid 1
    done = subprocess.run(
        [sys.executable, "-m", "sse_offload.processes.worker", "--rules", str(rules),
         "--redis", "127.0.0.1:1", "--keepalive", "0", "--master-pid", str(not_my_parent)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert "the master (pid 1) is gone: not starting" in done.stderr


def _orphans(family: socket.AddressFamily, host: str, count: int = 2) -> list[socket.socket]:
    """Listening SO_REUSEPORT sockets on one port, as orphan workers would hold them."""
    return open_sockets(ListenSpec(family, (host, 0), 16), count)


@pytest.mark.parametrize(
    ("orphans_on", "gateway_on"),
    [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("127.0.0.1", "0.0.0.0")],
)
def test_a_new_gateway_refuses_a_port_orphans_still_listen_on(
    orphans_on: str, gateway_on: str
) -> None:
    orphans = _orphans(socket.AF_INET, orphans_on)
    port = orphans[0].getsockname()[1]
    try:
        with pytest.raises(OSError) as caught:
            open_sockets(ListenSpec(socket.AF_INET, (gateway_on, port), 16), 4)
        assert caught.value.errno == errno.EADDRINUSE  # as a plain listenTCP gets
    finally:
        for s in orphans:
            s.close()
    # once they are gone the port is the new gateway's
    for s in open_sockets(ListenSpec(socket.AF_INET, (gateway_on, port), 16), 4):
        s.close()


class _Port:
    def __init__(self) -> None:
        self.listening = True

    def stopListening(self) -> None:
        self.listening = False


class _Reactor:
    """What MasterWatch uses of a reactor, recorded."""

    running = True

    def __init__(self) -> None:
        self.readers: list[object] = []
        self.triggers: list[tuple[str, str, object]] = []
        self.stopped = 0

    def addReader(self, reader: object) -> None:
        self.readers.append(reader)

    def removeReader(self, reader: object) -> None:
        self.readers.remove(reader)

    def addSystemEventTrigger(self, phase: str, event: str, f: object) -> None:
        self.triggers.append((phase, event, f))

    def stop(self) -> None:
        self.stopped += 1


@pytest.fixture
def armed(monkeypatch):
    """arm() a MasterWatch of this process's parent, on a pipe and a recording reactor
    (without the death signal: that would be asked for the test runner itself)."""
    monkeypatch.setattr(lifeline, "die_with_parent", lambda sig: True)
    read, write = os.pipe()
    reactor, ports = _Reactor(), [_Port(), _Port()]
    assert MasterWatch(os.getppid(), reactor, ports).arm(stdin=read)
    yield reactor, ports, write
    os.close(read)
    with contextlib.suppress(OSError):
        os.close(write)


def test_the_masters_own_sigterm_leaves_the_sockets_to_the_master(armed) -> None:
    reactor, ports, _ = armed
    [(phase, event, before_shutdown)] = reactor.triggers
    assert (phase, event) == ("before", "shutdown")
    before_shutdown()  # a SIGTERM while the master is there: the master's stop
    assert all(p.listening for p in ports)


def test_the_death_signals_shutdown_releases_the_sockets_first(armed, monkeypatch) -> None:
    reactor, ports, _ = armed
    monkeypatch.setattr(os, "getppid", lambda: 1)  # adopted: the master is gone
    reactor.triggers[0][2]()
    assert not any(p.listening for p in ports)


def test_end_of_file_releases_the_sockets_and_stops_once(armed) -> None:
    reactor, ports, write = armed
    [reader] = reactor.readers
    os.close(write)
    reader.doRead()
    assert not any(p.listening for p in ports)
    assert reactor.stopped == 1 and reactor.readers == []
    reactor.triggers[0][2]()  # the shutdown that follows: nothing more to do
    assert reactor.stopped == 1
