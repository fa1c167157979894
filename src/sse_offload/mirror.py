"""The mirror: resume for publishers that only PUBLISH.

``mirror = clock`` in the rules file (repeatable; or
``mirror = channel=clock,stream=clock,maxlen=10000,server=ADDRESS``) appends every pub/sub
message of the channel to a Redis Stream (``XADD KEY MAXLEN ~ N * data PAYLOAD``), so that
``sse:stream=clock`` clients get ids and resume while the publisher (the original's
``PUBLISH clock time``) is unchanged. The stream key defaults to the channel's name: keys
and pub/sub channels are separate namespaces in Redis.

Every gateway process subscribes to the channel, but only one appends, else each message
would be appended once per process and node: the one holding a lease, a Redis key
``sse-offload:mirror:KEY`` set with ``NX PX`` and renewed by its holder every second. A
holder that stops cleanly gives the lease up at once; one that dies holds it until it
expires (LEASE_MS), and messages published in that window are not appended. Run the
mirror on more than one gateway so that a restart of one loses nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from .config.values import parse_kvlist
from .hub_types import show_channel
from .redis_address import RedisAddress
from .timers import cancel

LEASE_MS: Final = 3000
RENEW_EVERY: Final = 1.0
DEFAULT_MAXLEN: Final = 10_000
LEASE_PREFIX: Final = b"sse-offload:mirror:"

# Renew or give up the lease only while this process holds it (compare and act, atomic).
_RENEW: Final = (
    b"if redis.call('GET', KEYS[1]) == ARGV[1] then "
    b"return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"
)
_RELEASE: Final = (
    b"if redis.call('GET', KEYS[1]) == ARGV[1] then "
    b"return redis.call('DEL', KEYS[1]) else return 0 end"
)

log = Logger(namespace="sse_offload.mirror")


class MirrorError(ValueError):
    """A ``mirror`` value that cannot be used."""


@dataclass(frozen=True)
class MirrorSpec:
    channel: str
    key: str
    maxlen: int = DEFAULT_MAXLEN
    server: str | None = None


def parse_mirror(text: str) -> MirrorSpec:
    """``CHANNEL``, or ``channel=..,stream=..,maxlen=..,server=..``."""
    if "=" not in text:
        if not text:
            raise MirrorError("mirror: a channel is needed")
        return MirrorSpec(text, text)
    items = parse_kvlist(text)
    unknown = set(items) - {"channel", "stream", "maxlen", "server"}
    if unknown:
        raise MirrorError(f"mirror: unknown key(s) {', '.join(sorted(unknown))}")
    channel = items.get("channel")
    if not channel:
        raise MirrorError("mirror: channel= is needed")
    maxlen = items.get("maxlen", str(DEFAULT_MAXLEN))
    if not maxlen.isdigit() or int(maxlen) < 1:
        raise MirrorError(f"mirror: maxlen={maxlen} is not a whole number > 0")
    return MirrorSpec(channel, items.get("stream") or channel, int(maxlen), items.get("server"))


class Mirror:
    """One mirrored channel in this process (module docstring); a tap of the channel's
    fan-out (broadcast.ChannelFanout), so it gets the payloads themselves."""

    takes_payloads = True

    def __init__(self, streams: Any, address: RedisAddress, spec: MirrorSpec) -> None:
        self.streams = streams
        self.address = address
        self.spec = spec
        self.channel = spec.channel.encode("utf-8", "surrogateescape")
        self.key = spec.key.encode("utf-8", "surrogateescape")
        self.lease = LEASE_PREFIX + self.key
        self.token = secrets.token_hex(8).encode()
        self.holding = False
        self._call: IDelayedCall | None = None
        self.appended = 0

    def start(self) -> None:
        self.server = self.streams.stream_server(self.address)
        self.streams.hub.server(self.address).add(self.channel, self)
        self._tick()

    def stop(self) -> defer.Deferred[Any]:
        cancel(self._call)
        self._call = None
        self.streams.hub.server(self.address).remove(self.channel, self)
        if not self.holding:
            return defer.succeed(None)
        self.holding = False
        d = self.server.control.command(b"EVAL", _RELEASE, b"1", self.lease, self.token)
        d.addErrback(lambda _: None)
        return d

    def _tick(self) -> None:
        self._call = self.streams.clock.callLater(RENEW_EVERY, self._tick)
        if self.holding:
            d = self.server.control.command(
                b"EVAL", _RENEW, b"1", self.lease, self.token, b"%d" % LEASE_MS
            )
            d.addCallbacks(self._renewed, self._lost)
        else:
            d = self.server.control.command(
                b"SET", self.lease, self.token, b"NX", b"PX", b"%d" % LEASE_MS
            )
            d.addCallbacks(self._acquired, self._lost)

    def _acquired(self, reply: object) -> None:
        if reply == b"OK" and not self.holding:
            self.holding = True
            log.info("{line}", line=f"mirroring channel {show_channel(self.channel)} to "
                     f"stream {show_channel(self.key)} on {self.address}")

    def _renewed(self, reply: object) -> None:
        if reply != 1:
            self.holding = False
            log.warn("{line}", line=f"lost the mirror lease of {show_channel(self.key)}; "
                     "another gateway appends now")

    def _lost(self, failure: Any) -> None:
        self.holding = False  # Redis is away: whoever gets the lease next appends

    def payloads(self, channel: bytes, payloads: list[bytes]) -> None:
        """Messages of the channel: appended, in order, while this process holds the lease."""
        if not self.holding:
            return
        control = self.server.control
        for payload in payloads:
            control.command(
                b"XADD", self.key, b"MAXLEN", b"~", b"%d" % self.spec.maxlen, b"*",
                b"data", payload,
            ).addErrback(self._append_failed)
        self.appended += len(payloads)

    def _append_failed(self, failure: Any) -> None:
        log.error("{line}", line=f"mirror of {show_channel(self.channel)}: XADD failed: "
                  f"{failure.getErrorMessage()}")
