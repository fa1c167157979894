"""RESP2, the wire format of Redis: encoding a command, and a small client.

The hub writes its (UN)SUBSCRIBE commands with :func:`encode_command`. :class:`RespClient`
is for the few commands Sentinel support sends outside the hub's and the links' protocols
(``SENTINEL get-master-addr-by-name``, ``AUTH``, ``ROLE``, ``SUBSCRIBE +switch-master``,
``PING``): its replies are hiredis's, in order, and after a SUBSCRIBE the messages go to a
callback. It sits below redis_protocol.py, which connects through sentinel.py, so that
sentinel.py can use it without an import cycle.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from twisted.internet import defer, protocol
from twisted.python.failure import Failure


def encode_command(*args: bytes) -> bytes:
    """RESP2 encoding of one command; the hub writes (UN)SUBSCRIBE itself, one channel each."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(parts)


class RedisReplyError(Exception):
    """Redis answered a command with an error (``-ERR ...``, ``-WRONGPASS ...``)."""


class RespClient(protocol.Protocol):
    """Commands whose replies come back in order, each a Deferred; after SUBSCRIBE, the
    channel's messages go to ``on_message(channel, payload)``.

    A command's Deferred fails with :class:`RedisReplyError` for an error reply, and with the
    connection's loss reason when the connection goes first; cancelling it aborts the
    connection (a reply can no longer be matched to its command).
    """

    transport: Any  # a TCP transport once connected

    def __init__(self, on_message: Callable[[bytes, bytes], None] | None = None) -> None:
        self.on_message = on_message
        self.on_lost: Callable[[Failure], None] | None = None
        self._reader = hiredis.Reader(replyError=RedisReplyError)
        self._waiting: deque[defer.Deferred[Any]] = deque()
        self._subscribed = False
        self.lost = False

    def command(self, *args: bytes) -> defer.Deferred[Any]:
        """Send one command: a Deferred of its reply (see the class docstring)."""
        if self.lost or self.transport is None:
            return defer.fail(ConnectionError("not connected"))
        if args[0].upper() == b"SUBSCRIBE":
            self._subscribed = True
        d: defer.Deferred[Any] = defer.Deferred(lambda _: self.transport.abortConnection())
        self._waiting.append(d)
        self.transport.write(encode_command(*args))
        return d

    def dataReceived(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError:
                self.transport.abortConnection()
                return
            if reply is False:
                return
            if (
                self._subscribed
                and type(reply) is list
                and len(reply) == 3
                and reply[0] == b"message"
            ):
                if self.on_message is not None:
                    self.on_message(reply[1], reply[2])
            elif self._waiting:
                d = self._waiting.popleft()
                if d.called:  # cancelled: the connection is being aborted
                    continue
                if isinstance(reply, RedisReplyError):
                    d.errback(reply)
                else:
                    d.callback(reply)
            else:  # nothing asked for it: the peer is not speaking RESP as we know it
                self.transport.abortConnection()
                return

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost = True
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            if not d.called:
                d.errback(reason)
        if self.on_lost is not None:
            self.on_lost(reason)
