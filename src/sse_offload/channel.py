"""The HTTP channel of the gateway's site: twisted.web's, plus a deadline for request heads.

twisted.web's idle timeout (60 s) starts again with every byte, so a client that sends its
request head one byte a minute (slowloris) holds a connection for ever. Here a request head
must be complete within ``HEADER_DEADLINE`` of the connection (or of the previous response on
a kept-alive connection); one timer per connection, cancelled as soon as the head is in, so
an open stream holds no timer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http

from .timers import cancel

#: Seconds a client has to send a whole request head. nginx's client_header_timeout is 60 s;
#: a browser sends its head in one packet, so 20 s leaves any honest client ample room.
HEADER_DEADLINE: Final = 20.0

_log = Logger()


class DeadlineHTTPChannel(http.HTTPChannel):
    """HTTPChannel with a deadline on reading each request head."""

    header_deadline: float = HEADER_DEADLINE
    _head_call: IDelayedCall | None = None
    #: The request chain's result for the first request, when the front protocol
    #: (front.py) ran the chain on its head before handing the connection over.
    _routed: Any = None

    def hand_over(self, routed: object) -> None:
        """The first request of this connection was routed already (``replies.Routed``)."""
        self._routed = routed

    def take_routed(self) -> Any:
        """What :meth:`hand_over` gave, once: the first request's GatewayRequest takes it."""
        routed, self._routed = self._routed, None
        return routed

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def allHeadersReceived(self) -> None:
        self._disarm()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if self.transport is not None and not getattr(self.transport, "disconnecting", False):
            self._arm()  # the next request on a kept-alive connection gets its own deadline

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        super().connectionLost(reason)

    def _arm(self) -> None:
        self._disarm()
        # The site's reactor (Site.buildProtocol sets callLater): a test's Clock drives it.
        self._head_call = self.callLater(self.header_deadline, self._too_slow)

    def _disarm(self) -> None:
        cancel(self._head_call)
        self._head_call = None

    def _too_slow(self) -> None:
        self._head_call = None
        peer = self.transport.getPeer() if self.transport is not None else None
        close_slow_head(self.transport, getattr(peer, "host", peer), self.header_deadline)


def close_slow_head(transport: Any, peer: object, deadline: float) -> None:
    """A request head did not arrive within ``deadline`` seconds: log it and cut the
    connection (twisted.web's channel and the front protocol's HeadWatch alike)."""
    _log.info("closing {peer}: no complete request head within {deadline:g}s",
              peer=peer, deadline=deadline)
    if transport is not None:
        transport.abortConnection()


def deadline_channel_factory(deadline: float = HEADER_DEADLINE) -> Callable[[], Any]:
    """A ``Site.protocol``: twisted.web's HTTP/1.1-or-h2 wrapper around our channel."""

    def build() -> Any:
        channel = DeadlineHTTPChannel()
        channel.header_deadline = deadline
        return http._GenericHTTPChannelProtocol(channel)

    return build
