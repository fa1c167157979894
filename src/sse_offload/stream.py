"""One SSE client: a response turned into a long-lived stream.

The fan-out (broadcast.py) writes shared, already-framed bytes. twisted.web's
``Request.write`` would build an HTTP/1.1 chunk per call and per listener, so for HTTP/1.x a
stream writes to the connection's transport directly: the fan-out hands it a complete chunk
(``size CRLF frame CRLF``) for HTTP/1.1 or the bare frame for HTTP/1.0 (a close-delimited
body). HTTP/2 streams go through ``request.write``, which frames DATA itself.

A stream does not know which HTTP code serves its client: its :class:`StreamOwner` sends
the head, attaches the stream to the connection and reports the end. Two owners exist: the
front protocol's fast path (front.py) and twisted.web's Request (offload.RequestOwner).
"""

from __future__ import annotations

import collections
import socket
import time
from collections.abc import Callable
from typing import Final, Protocol

from twisted.internet import tcp, unix
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from .sse import GAP_COMMENT, GAP_EVENT, Mode
from .timers import cancel

# Plain TCP and unix-socket server transports, whose socket the fast path may write to.
# Exact types: a subclass (or a TLS layer, which is another object) takes the normal path.
_FAST_TRANSPORTS: Final = (tcp.Server, unix.Server)


def plain_transport(transport: object) -> bool:
    """Is ``transport`` a plain TCP or unix connection (no TLS), whose socket is ours to
    read from and write to?"""
    return type(transport) in _FAST_TRANSPORTS and not getattr(transport, "TLS", False)

#: A stream whose client has taken nothing for this long while we had data for it is
#: aborted: a peer that stopped reading (or vanished behind a NAT) holds memory and a socket.
#: 30 s is twice the keepalive interval, so an idle but healthy stream is never paused that
#: long; nchan's and Pushpin's subscriber timeouts are of the same order.
DEFAULT_MAX_PAUSED: Final = 30.0

# Kernel-side dead-peer detection for stream sockets: unacknowledged data for 30 s ends the
# connection (TCP_USER_TIMEOUT, RFC 5482), and an idle one is probed after 30 s, every 10 s,
# 3 times. The kernel defaults (15 minutes of retransmissions, 2 hours before a probe) would
# keep a vanished client's socket and buffers for far longer than it is any use.
TCP_USER_TIMEOUT_MS: Final = 30_000
TCP_KEEPIDLE_S: Final = 30
TCP_KEEPINTVL_S: Final = 10
TCP_KEEPCNT: Final = 3
#: Kernel send buffer of a stream socket (Linux doubles it). Autotuning lets it grow to
#: tcp_wmem's 4 MiB: 10,000 clients that stop reading could pin 40 GB of kernel memory before
#: the per-stream cap (which counts only what Twisted holds) ever sees a byte. 256 KiB still
#: carries about 5 MB/s at a 50 ms round trip, far more than an event stream needs.
STREAM_SNDBUF: Final = 256 * 1024

_TCP_OPTIONS: Final = (
    (socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF),
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, TCP_KEEPIDLE_S),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, TCP_KEEPINTVL_S),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, TCP_KEEPCNT),
)


def tune_socket(sock: socket.socket) -> None:
    """Give a listening socket the stream settings above (and TCP_NODELAY, as twisted.web
    sets it per connection): Linux copies them to every connection it accepts, so a new
    stream costs no setsockopt calls. Every response of the gateway's listeners has them;
    a 256 KiB send buffer still carries a large static file at tens of MB/s on a LAN."""
    try:
        if sock.family == socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            return
        for level, option, value in _TCP_OPTIONS:
            sock.setsockopt(level, option, value)
    except (OSError, AttributeError):
        pass  # not Linux: the keepalive comments still find dead peers


def tune_port(port: object) -> bool:
    """Tune a Twisted listening port's socket once (see :func:`tune_socket`); True when
    this call did it (connections accepted before it were not tuned)."""
    if getattr(port, "_sse_tuned", False):
        return False
    sock = getattr(port, "socket", None)
    if not isinstance(sock, socket.socket):
        return False
    tune_socket(sock)
    port._sse_tuned = True  # type: ignore[attr-defined]
    return True


def peer_text(address: object) -> str:
    """``host:port`` of a client address, for log lines (a unix peer: its repr)."""
    host = getattr(address, "host", None)
    return f"{host}:{getattr(address, 'port', '')}" if host else str(address)


class StreamOwner(Protocol):
    """The HTTP side of one stream: what :class:`SSEStream` asks of the code serving the
    connection (the front protocol, or twisted.web's Request through offload.RequestOwner).
    """

    def open(self, stream: SSEStream) -> None:
        """Send the response head and attach ``stream`` to the connection
        (:meth:`SSEStream.attach` or :meth:`SSEStream.attach_writer`, then register it as
        the transport's push producer); from then on, call ``stream.finished()`` when the
        connection ends."""

    def finish(self) -> None:
        """End the response cleanly from the server side (the stream is closing)."""

    def abort(self) -> None:
        """Drop the connection at once, without flushing what is buffered."""

    def peer(self) -> str:
        """The client, for the stream's log line."""


class SlowClientWatch:
    """Which streams are paused, since when; aborts those paused longer than ``max_paused``.

    One timer for all streams (no per-connection timers): ``sweep`` runs every second.
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_paused: float = DEFAULT_MAX_PAUSED,
        stats: collections.Counter[str] | None = None,
    ) -> None:
        self.clock = clock
        self.max_paused = max_paused
        self.paused: dict[SSEStream, float] = {}
        self.aborted = 0
        #: Shared counters (the hub's): streams_closed_<reason>, for the log and /metrics.
        self.stats: collections.Counter[str] = stats if stats is not None else collections.Counter()
        self._call: IDelayedCall | None = None

    def start(self) -> None:
        if self.max_paused > 0 and self._call is None:
            self._call = self.clock.callLater(1.0, self.sweep)

    def stop(self) -> None:
        cancel(self._call)
        self._call = None

    def sweep(self) -> None:
        now = self.clock.seconds()
        for stream, since in list(self.paused.items()):
            if now - since > self.max_paused:
                self.aborted += 1
                stream.abort(
                    f"slow client: paused for more than {self.max_paused:g}s", "slow_paused"
                )
        self._call = self.clock.callLater(1.0, self.sweep)


#: Bytes a paused (slow) client may have queued before its stream is aborted. 1 MiB: about
#: 15 s of a busy 64 KiB/s feed; nchan's default per-subscriber buffer is of the same order.
DEFAULT_MAX_QUEUED: Final = 1 << 20


@implementer(IPushProducer)
class SSEStream:
    """A response streaming messages of one channel; the connection's push producer.

    Twisted pauses the producer when the transport buffers more than 64 KiB; from then on the
    stream counts what it writes, and a client whose backlog passes ``max_queued`` is aborted
    so it never holds memory or delays the other listeners.
    """

    log = Logger()
    __slots__ = (
        "_send", "_transport", "_write", "channel", "chunked", "closed", "envelope", "gap",
        "max_queued",
        "mode", "on_close", "owner", "paused", "queued", "sent", "started", "watch", "wrote",
    )

    def __init__(
        self,
        owner: StreamOwner,
        mode: Mode,
        max_queued: int = DEFAULT_MAX_QUEUED,
        gap_event: bool = False,
        watch: SlowClientWatch | None = None,
    ) -> None:
        self.owner = owner
        self.watch = watch
        self.channel = b""  # for the log line at the end
        self.sent = 0
        self.started = watch.clock.seconds() if watch is not None else time.time()
        self.mode = mode
        self.envelope = False  # payloads are JSON envelopes (events.parse_envelope)
        #: What the stream gets after a Redis outage: raw streams get nothing.
        self.gap: bytes | None = None
        if mode is Mode.SSE:
            self.gap = GAP_EVENT if gap_event else GAP_COMMENT
        self.max_queued = max_queued
        self.chunked = False
        self.paused = False
        self.queued = 0
        self.wrote = False
        self.closed = False
        self.on_close: Callable[[], None] | None = None
        self._write: Callable[[bytes], None] = _not_attached
        self._transport: tcp.Connection | None = None
        self._send: Callable[[bytes], int] | None = None

    def start(self) -> None:
        """Send the response head (the owner has it) and start listening for the end."""
        self.owner.open(self)

    def attach(self, transport: object, chunked: bool, head: bytes = b"") -> None:
        """Write to the connection's transport, straight to its socket when it is a plain
        one (TCP or unix, no TLS); ``chunked``: the wire is HTTP/1.1 chunked. ``head``, if
        any, is written first (a head the owner built itself)."""
        self.chunked = chunked
        self._write = transport.write  # type: ignore[attr-defined]
        if plain_transport(transport):
            assert isinstance(transport, _FAST_TRANSPORTS)
            self._transport = transport
            self._send = transport.socket.send
            self._write = self._write_now
            if tune_port(transport.server):
                # A listener the gateway did not open itself: tuned now for the connections
                # to come; this one was accepted before.
                tune_socket(transport.socket)
        if head:
            self._write(head)

    def attach_writer(self, write: Callable[[bytes], None]) -> None:
        """Write through ``write`` (an HTTP/2 request's, which frames DATA itself)."""
        self._write = write

    def send(self, data: bytes) -> None:
        """Write shared bytes. The hot path: one write and a buffer check."""
        if self.paused:
            # What was queued *before* this message counts, so one large message still
            # reaches a client that was keeping up.
            if self.queued > self.max_queued:
                self.abort(f"slow client: more than {self.max_queued} bytes queued", "slow_queued")
                return
            self.queued += len(data)
        self._write(data)
        self.sent += len(data)
        self.wrote = True

    def _write_now(self, data: bytes) -> None:
        """Send at once when nothing is buffered, else queue behind the buffer.

        ``transport.write`` only buffers and asks the reactor for a writable event: two
        epoll_ctl calls and a reactor turn per write, per listener. Trying the socket first
        (as libuv does) makes the common case one send(2). Relies on twisted.internet's
        FileDescriptor buffer attributes; pyproject pins Twisted below the next major.
        """
        t = self._transport
        assert t is not None and self._send is not None
        if t.dataBuffer or t._tempDataBuffer or not t.connected or t.disconnecting or (
            t._writeDisconnected
        ):
            t.write(data)
            return
        try:
            sent = self._send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            t.write(data)  # let the reactor find the error and close the connection
            return
        if sent < len(data):
            t.write(data[sent:])

    # IPushProducer
    def pauseProducing(self) -> None:
        if self.paused:
            return  # Twisted pauses again on every write while its buffer is full
        self.paused = True
        self.queued = 0
        if self.watch is not None and not self.closed:
            self.watch.paused.setdefault(self, self.watch.clock.seconds())

    def resumeProducing(self) -> None:
        self.paused = False
        self.queued = 0
        if self.watch is not None:
            self.watch.paused.pop(self, None)

    def stopProducing(self) -> None:
        pass

    def abort(self, why: str, reason: str = "aborted") -> None:
        """Drop the client at once (no flush of its backlog); ``reason`` names the counter."""
        if self.closed:
            return
        self._detach(reason, why)
        self.owner.abort()

    def close(self, reason: str = "server") -> None:
        """End the stream cleanly from the server side."""
        if self.closed:
            return
        self._detach(reason, "closed by the gateway")
        self.owner.finish()

    def _detach(self, reason: str, why: str) -> None:
        """The stream ends: leave its channel, count it, and say so in the log.

        twisted.web logs a request only at ``finish()``, which a stream the client left never
        reaches: this line is the stream's access log.
        """
        self.closed = True
        watch = self.watch
        if watch is not None:
            watch.paused.pop(self, None)
            watch.stats[f"streams_closed_{reason}"] += 1
            now = watch.clock.seconds()
        else:
            now = time.time()
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()
        # Formatted here: twisted.logger's formatting of a many-field format string (a pure
        # Python string.Formatter) cost more than the rest of a stream's end.
        peer, duration = self.owner.peer(), now - self.started
        channel = self.channel.decode("utf-8", "backslashreplace")
        self.log.info(
            "{line}",
            line=f"stream {channel} of {peer} ended after {duration:.1f}s and "
            f"{self.sent} bytes: {why}",
            channel=self.channel, peer=peer, duration=duration, sent=self.sent, why=why,
            reason=reason,
        )

    def finished(self) -> None:
        """The connection ended (or close() ended the response): the owner reports it."""
        if not self.closed:
            self._detach("client", "the client went away")


def _not_attached(data: bytes) -> None:
    raise RuntimeError("stream written to before its owner attached it to a connection")
