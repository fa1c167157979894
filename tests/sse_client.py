"""A raw-socket HTTP/SSE client for tests: exact bytes, no client library in between.

Blocking (for tests against a gateway subprocess). It parses the response head, removes
HTTP/1.1 chunk framing when the response is chunked, and splits SSE events.
"""

from __future__ import annotations

import socket
import time


class SSEClient:
    """One connection: sends a request, then reads the head and the (de-chunked) body."""

    def __init__(
        self,
        port: int,
        path: str = "/",
        *,
        version: str = "HTTP/1.1",
        method: str = "GET",
        headers: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        connect: bool = True,
    ) -> None:
        self.port = port
        self.path = path
        self.version = version
        self.method = method
        self.headers = {"Host": f"{host}:{port}", "Accept": "text/event-stream", **(headers or {})}
        self.host = host
        self.raw = b""
        self.head: bytes | None = None
        self.status: int | None = None
        self.response_headers: list[tuple[str, str]] = []
        self.chunked = False
        self.body = b""
        self.chunks: list[bytes] = []  # HTTP/1.1 chunk payloads, one per gateway write
        self.closed = False
        self._pending = b""  # raw body bytes not de-chunked yet
        self.sock: socket.socket | None = None
        if connect:
            self.connect()

    def request_bytes(self) -> bytes:
        lines = [f"{self.method} {self.path} {self.version}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def connect(self) -> SSEClient:
        self.sock = socket.create_connection((self.host, self.port), timeout=10)
        self.sock.sendall(self.request_bytes())
        return self

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def header(self, name: str) -> str | None:
        for k, v in self.response_headers:
            if k.lower() == name.lower():
                return v
        return None

    # --- reading ---------------------------------------------------------------------------
    def _recv(self, deadline: float) -> bool:
        assert self.sock is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return False
        if not data:
            self.closed = True
            return False
        self.feed(data)
        return True

    def feed(self, data: bytes) -> None:
        """Add received bytes (also used by the non-blocking many-clients tests)."""
        self.raw += data
        if self.head is None:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head = self.raw[: end + 4]
            lines = self.head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            self.response_headers = [
                (k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
            ]
            te = self.header("Transfer-Encoding")
            self.chunked = te is not None and "chunked" in te.lower()
            data = self.raw[end + 4 :]
        self._pending += data
        if not self.chunked:
            self.body += self._pending
            self._pending = b""
            return
        while True:
            line_end = self._pending.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self._pending[:line_end].split(b";")[0], 16)
            start = line_end + 2
            if len(self._pending) < start + size + 2:
                return
            assert self._pending[start + size : start + size + 2] == b"\r\n", "bad chunk"
            self.body += self._pending[start : start + size]
            self.chunks.append(self._pending[start : start + size])
            self._pending = self._pending[start + size + 2 :]
            if size == 0:
                self.closed = True
                return

    def read_head(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.head is None:
            if not self._recv(deadline):
                raise AssertionError(f"no response head within {timeout}s; got {self.raw!r}")
        assert self.status is not None
        return self.status

    def read_until(self, predicate, timeout: float = 10.0, what: str = "body"):
        """Read until ``predicate(self)`` is truthy; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            if self.closed or not self._recv(deadline):
                value = predicate(self)
                if value:
                    return value
                state = "closed" if self.closed else f"nothing more within {timeout}s"
                raise AssertionError(f"{what}: {state}; body so far {self.body[-500:]!r}")

    def read_body(self, size: int, timeout: float = 10.0) -> bytes:
        self.read_until(lambda c: len(c.body) >= size, timeout, f"{size} body bytes")
        return self.body

    def read_events(self, count: int, timeout: float = 10.0) -> list[str]:
        self.read_until(lambda c: len(c.events()) >= count, timeout, f"{count} events")
        return self.events()

    def wait_closed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed:
            if not self._recv(deadline) and not self.closed:
                if time.monotonic() >= deadline:
                    raise AssertionError("connection still open")

    def events(self) -> list[str]:
        """The data of every complete event (comments skipped), as an EventSource sees it."""
        out = []
        for block in self.body.replace(b"\r\n", b"\n").split(b"\n\n")[:-1]:
            data = [
                line[5:].removeprefix(b" ")
                for line in block.split(b"\n")
                if line.startswith(b"data:")
            ]
            if data:
                out.append(b"\n".join(data).decode("utf-8", "replace"))
        return out
