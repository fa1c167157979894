"""The hub's Redis connection: txredisapi's subscriber protocol fed by a hiredis reader.

pubsub.py's :class:`~sse_offload.pubsub.RedisServerConnection` owns one of these per
server (and one per node of a Redis Cluster, cluster.py) and decides what to do with what it
reads (:class:`ProtocolOwner`); this module only speaks RESP: it connects, authenticates,
writes (UN)SUBSCRIBE and PING, and parses replies.
txredisapi's pure-Python reply parser managed about 8,000 messages a second when measured,
hiredis's C parser far more, so replies are parsed here with hiredis.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Protocol

import hiredis
import txredisapi
from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure

from .redis_address import RedisAddress
from .resp import encode_command as encode_command  # the hub's, kept importable from here
from .sentinel import sentinel_endpoint

#: Connect timeout for a Redis server; a SYN to a dead host should not stall a retry for long.
CONNECT_TIMEOUT: Final = 5.0

#: The kinds of subscription, each named after the command that makes it: a channel
#: (``PUBLISH`` publishers), a glob pattern, and a sharded channel (``SPUBLISH`` publishers;
#: Redis 7 and later). In a Redis Cluster a sharded channel lives on the master that owns its
#: slot, where the others reach every node.
CHANNEL: Final = "subscribe"
PATTERN: Final = "psubscribe"
SHARDED: Final = "ssubscribe"
KINDS: Final = (CHANNEL, PATTERN, SHARDED)
#: The (subscribe, unsubscribe) commands of each kind.
COMMANDS: Final = {
    CHANNEL: (b"SUBSCRIBE", b"UNSUBSCRIBE"),
    PATTERN: (b"PSUBSCRIBE", b"PUNSUBSCRIBE"),
    SHARDED: (b"SSUBSCRIBE", b"SUNSUBSCRIBE"),
}


class ProtocolOwner(Protocol):
    """What the connection reports to (pubsub.RedisServerConnection)."""

    address: RedisAddress
    log: Any
    max_message_size: int

    def connection_ready(self, p: HubProtocol) -> None: ...

    def connection_lost(self, p: HubProtocol, reason: Failure) -> None: ...

    def deliver(self, batch: list[tuple[bytes, bytes]], kind: str = CHANNEL) -> None: ...

    def dropped(self, channel: bytes, size: int) -> None: ...

    def sunsubscribed(self, channel: bytes) -> None:
        """A ``sunsubscribe`` came: the answer to ours, or Redis dropping the sharded
        channel itself (its slot moved to another node, or this node became a replica)."""

    def reply_error(self, error: Exception) -> None:
        """An error reply once the connection is ready: a ``MOVED`` answering an
        SSUBSCRIBE in a cluster, or a command this server refused."""

    def log_failure(self, failure: Failure, why: str) -> None: ...


_CONFIRMATIONS: Final = (
    b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe", b"ssubscribe", b"sunsubscribe"
)


class HubProtocol(txredisapi.SubscriberProtocol):
    """txredisapi's subscriber protocol (AUTH, SELECT, PING), fed by our own hiredis reader.

    Every complete reply in a read is handled (the original plugin handled one reply per
    read and so lagged a message behind, difference 2); messages of one read are handed to
    the server as one batch. (Un)subscribe confirmations are consumed here: txredisapi
    queues one reply per (UN)SUBSCRIBE command but Redis sends one per channel, so its reply
    queue goes out of step as soon as a command names several channels.
    """

    server: ProtocolOwner

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._hub_reader = hiredis.Reader(
            protocolError=txredisapi.InvalidData, replyError=txredisapi.ResponseError
        )

    def connectionMade(self) -> defer.Deferred[object]:
        d: defer.Deferred[object] = super().connectionMade()
        d.addCallback(self._auth_done)
        d.addErrback(self.server.log_failure, "redis connection set-up failed")
        return d

    def _auth_done(self, _: object) -> None:
        if self._ready:
            self.server.connection_ready(self)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.server.connection_lost(self, reason)

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        reader = self._hub_reader
        reader.feed(data)
        batch: list[tuple[bytes, bytes]] = []
        sharded: list[tuple[bytes, bytes]] = []  # smessage: a sharded channel's
        matched: list[tuple[bytes, bytes]] = []  # (pattern, payload) of PSUBSCRIBE matches
        limit = self.server.max_message_size
        while True:
            try:
                reply = reader.gets()
            except txredisapi.InvalidData as e:
                self.server.log.error(
                    "protocol error from redis {server}: {error}", server=self.server, error=e
                )
                self.transport.abortConnection()
                break
            if reply is False:
                break
            if type(reply) is not list:
                self._other_reply(reply)
                continue
            head = reply[0] if reply else None
            if head == b"message" and len(reply) == 3:
                if len(reply[2]) > limit:
                    self.server.dropped(reply[1], len(reply[2]))
                    continue
                batch.append((reply[1], reply[2]))
            elif head == b"smessage" and len(reply) == 3:
                if len(reply[2]) > limit:
                    self.server.dropped(reply[1], len(reply[2]))
                    continue
                sharded.append((reply[1], reply[2]))
            elif head == b"pmessage" and len(reply) == 4:
                if len(reply[3]) > limit:
                    self.server.dropped(reply[2], len(reply[3]))
                    continue
                matched.append((reply[1], reply[3]))
            else:
                self._other_reply(reply)
        if batch:
            self.server.deliver(batch)
        if sharded:
            self.server.deliver(sharded, SHARDED)
        if matched:
            self.server.deliver(matched, PATTERN)

    def _other_reply(self, reply: object) -> None:
        if type(reply) is list and reply and reply[0] in _CONFIRMATIONS:
            if reply[0] == b"sunsubscribe" and len(reply) == 3:
                self.server.sunsubscribed(reply[1])
            return
        if isinstance(reply, txredisapi.ResponseError) and self._ready:
            # Once AUTH is done the only command waiting for a reply is a PING, which
            # never answers with an error: an error answers a (UN)SUBSCRIBE.
            self.server.reply_error(reply)
            return
        self.replyQueue.put(reply)

    def write_commands(self, commands: Iterable[bytes]) -> None:
        data = b"".join(commands)
        if data:
            self.transport.write(data)


class HubFactory(protocol.Factory):
    """Builds hub protocols with the settings txredisapi's factories would give them."""

    protocol = HubProtocol
    noisy = False  # the hub logs connects and losses itself
    # Attributes txredisapi's protocol reads from its factory on AUTH/SELECT failure.
    isLazy = False

    def __init__(self, server: ProtocolOwner) -> None:
        self.server = server

    def buildProtocol(self, addr: object) -> HubProtocol:
        a = self.server.address
        p = HubProtocol(
            charset=None,
            convertNumbers=False,
            password=a.password,
            username=a.username,
            # pub/sub channels span every logical database: a SELECT would only cost a
            # round trip (and fail on a Redis that has one database)
            dbid=None,
            replyTimeout=None,
        )
        p.factory = self
        p.server = self.server
        return p

    def stopTrying(self) -> None:
        """txredisapi calls this when AUTH fails; the hub keeps retrying with backoff."""

    def connectionError(self, message: str) -> None:
        self.server.log.error("redis {server}: {message}", server=self.server, message=message)


def client_endpoint(reactor: object, address: RedisAddress) -> IStreamClientEndpoint:
    """A Twisted client endpoint for ``address`` (TLS verifies the server's certificate; a
    Sentinel address connects to the master its sentinels name, sentinel.py). Raises
    ValueError for a cluster address: a cluster is reached through its nodes'."""
    if address.kind == "cluster":
        raise ValueError(f"{address} is a Redis Cluster: connect to one of its nodes")
    if address.kind == "sentinel":
        return sentinel_endpoint(reactor, address, client_endpoint)
    if address.kind == "unix":
        return UNIXClientEndpoint(reactor, address.path, timeout=CONNECT_TIMEOUT)
    endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout=CONNECT_TIMEOUT)
    if address.kind == "tls":
        return wrapClientTLS(optionsForClientTLS(address.host), endpoint)
    return endpoint
