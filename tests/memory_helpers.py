"""One gateway process in memory: a real GatewaySite driven through StringTransport on a
fake clock (as treq.testing drives a real Site), for tests that open no socket and talk to
no Redis.

The hub is given a Redis address it never reaches (its connection attempts stay in the
MemoryReactor), and messages are handed to the hub's server as its Redis connection would
hand them over.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from sse_offload.broadcast import Broadcaster
from sse_offload.channel import deadline_channel_factory
from sse_offload.config import parse_rules_text
from sse_offload.front import FrontProtocol, GatewaySite
from sse_offload.gateway import Gateway
from sse_offload.pubsub import Hub
from sse_offload.redis_address import parse_address
from sse_offload.web import GatewayResource

RULES = """\
[uwsgi]
route = ^/ev/(.*)$ sse:$1
route = ^/raw/(.*)$ sseraw:$1
route = ^/teapot return:418
"""
ADDRESS = parse_address("/nonexistent/in-process-redis.sock")
PEER = IPv4Address("TCP", "10.0.0.7", 50000)
HOST = IPv4Address("TCP", "127.0.0.1", 9090)


class Memory:
    """One gateway process in memory."""

    def __init__(self, rules: str = RULES, **gateway: object) -> None:
        self.reactor = MemoryReactorClock()
        self.hub = Hub(self.reactor, ADDRESS)
        self.streams = Broadcaster(self.hub, keepalive=15, drain=1.0)
        self.gateway = Gateway(
            config=parse_rules_text(rules, "memory.ini"), streams=self.streams,
            default_address=ADDRESS, **gateway,  # type: ignore[arg-type]
        )
        self.gateway.allow([ADDRESS])
        self.site = GatewaySite(GatewayResource(self.gateway), reactor=self.reactor)
        self.site.protocol = deadline_channel_factory()  # type: ignore[method-assign]
        self.streams.startService()

    def connect(
        self, request: bytes, transport_class: type[StringTransport] = StringTransport
    ) -> tuple[FrontProtocol, StringTransport]:
        protocol = self.site.buildProtocol(PEER)
        transport = transport_class(hostAddress=HOST, peerAddress=PEER)
        protocol.makeConnection(transport)
        protocol.dataReceived(request)
        return protocol, transport

    def publish(self, channel: bytes, *payloads: bytes) -> None:
        """As the hub's Redis connection hands over the messages of one read."""
        self.hub.server(ADDRESS).deliver([(channel, p) for p in payloads])

    def listeners(self, channel: bytes) -> int:
        sub = self.hub.server(ADDRESS).channels.get(channel)
        return 0 if sub is None else len(sub)
