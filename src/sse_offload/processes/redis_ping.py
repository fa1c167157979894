"""Does a redis-server answer on its unix socket yet? One inline PING, no client library.

The embedded redis-server (embedded_redis.py) is polled with it until it is ready: the
hub's txredisapi connection would log every refused attempt, and a PING answered ``+PONG``
is what ready means (``-LOADING`` while a dataset loads is not).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure


class _PingProtocol(Protocol):
    """Send one inline PING; ``answer`` fires True on ``+PONG``, False on anything else."""

    def __init__(self) -> None:
        self.answer: Deferred[bool] = Deferred()
        self._buffer = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"PING\r\n")

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n" in self._buffer and not self.answer.called:
            # "-LOADING ..." while a dataset loads: not ready yet.
            self.answer.callback(self._buffer.startswith(b"+PONG\r\n"))
            assert self.transport is not None
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.answer.called:
            self.answer.callback(False)


class _PingFactory(Factory):
    protocol = _PingProtocol
    noisy = False  # no "Starting factory" line for every poll


async def answers_ping(reactor: Any, unix_path: str, timeout: float) -> bool:
    """True if the server on ``unix_path`` answers PING with PONG within ``timeout``
    seconds (to connect, then to answer); False otherwise. Cancellable."""
    endpoint = UNIXClientEndpoint(reactor, unix_path, timeout=timeout)
    try:
        protocol = await endpoint.connect(_PingFactory())
    except CancelledError:
        raise
    except Exception:
        return False
    try:
        return bool(await protocol.answer.addTimeout(timeout, reactor))
    except CancelledError:
        protocol.transport.abortConnection()
        raise
    except Exception:
        protocol.transport.abortConnection()
        return False
