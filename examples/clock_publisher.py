#!/usr/bin/env python3
"""Publish the current epoch seconds to the Redis channel ``clock`` once a second.

The Python twin of the original plugin's ``clock.pl`` (its README's mule, which publishes
``time()`` on ``clock`` every second with Perl's Redis module): the payload is the integer as
text, no newline, so ``route = ^/whattimeisit sse:clock`` streams
``data: 1420070400``. Standard library only; run it as a mule (``mule = clock_publisher.py``)
or on its own.

Redis address from ``REDIS_URL`` (``redis://[:password@]host:port``, ``unix:///path``), else
``REDIS_SERVER`` (``host:port`` or a socket path, as the gateway gives mules), else
127.0.0.1:6379. If Redis goes away it retries every second; SIGTERM or SIGINT ends it with
status 0. One line on stderr per connect or failure, not one per second.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
from urllib.parse import unquote, urlsplit

CHANNEL = b"clock"
RETRY_SECONDS = 1.0
SOCKET_TIMEOUT_SECONDS = 2.0


def log(message: str) -> None:
    sys.stderr.write(f"clock_publisher: {message}\n")
    sys.stderr.flush()


def parse_address(text: str) -> tuple[str | tuple[str, int], str | None]:
    """``(unix path or (host, port), password)`` from a URL or a ``host:port``/path form."""
    if text.startswith("/"):
        return text, None
    if "://" not in text:
        host, _, port = text.rpartition(":")
        return (host.strip("[]") or "127.0.0.1", int(port or 6379)), None
    url = urlsplit(text)
    password = unquote(url.password) if url.password else None
    if url.scheme == "unix":
        return url.path, password
    if url.scheme != "redis":
        raise ValueError(f"unsupported Redis URL scheme {url.scheme!r} in {text!r}")
    return (url.hostname or "127.0.0.1", url.port or 6379), password


def command(*args: bytes) -> bytes:
    """RESP encoding of one command."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def call(sock: socket.socket, *args: bytes) -> bytes:
    """Send one command and return its one-line reply (``:1``, ``+OK``); raise on ``-ERR``."""
    sock.sendall(command(*args))
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(512)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        reply += chunk
    if reply.startswith(b"-"):
        raise ConnectionError(reply[1:].strip().decode(errors="replace"))
    return reply


def connect(address: str | tuple[str, int], password: str | None) -> socket.socket:
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(SOCKET_TIMEOUT_SECONDS)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
    else:
        sock = socket.create_connection(address, timeout=SOCKET_TIMEOUT_SECONDS)
    if password is not None:
        try:
            call(sock, b"AUTH", password.encode())
        except OSError:
            sock.close()
            raise
    return sock


def main() -> int:
    target = os.environ.get("REDIS_URL") or os.environ.get("REDIS_SERVER") or "127.0.0.1:6379"
    try:
        address, password = parse_address(target)
    except ValueError as e:
        log(str(e))
        return 2

    # A signal wakes the select() below through this pipe instead of killing us mid-write.
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    stopping: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stopping.append(signum))

    def sleep(seconds: float) -> None:
        if not stopping and select.select([wake_read], [], [], max(0.0, seconds))[0]:
            os.read(wake_read, 64)

    sock: socket.socket | None = None
    failing = False
    while not stopping:
        if sock is None:
            try:
                sock = connect(address, password)
            except OSError as e:
                if not failing:
                    log(f"cannot connect to {target}: {e}; retrying every {RETRY_SECONDS:g}s")
                    failing = True
                sleep(RETRY_SECONDS)
                continue
            log(f"connected to {target}")
            failing = False
        try:
            call(sock, b"PUBLISH", CHANNEL, str(int(time.time())).encode())
        except OSError as e:
            log(f"lost {target}: {e}; reconnecting")
            sock.close()
            sock = None
            failing = True
            sleep(RETRY_SECONDS)
            continue
        sleep(1.0 - time.time() % 1.0)  # publish on each whole second
    if sock is not None:
        sock.close()
    log(f"stopping on signal {stopping[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
