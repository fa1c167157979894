"""What the front needs to decide a request: the rules, the streams, the limits and counts.

:class:`Gateway` is plain state shared by both HTTP paths (the front protocol's fast path
and twisted.web): the configuration, the stream layer (:class:`~sse_offload.broadcast.
Broadcaster`), the Redis servers streams may use, and the accounting of open streams for
``--max-clients`` / ``--max-clients-per-ip``. :meth:`Gateway.plan` is the one check of
whether an offload can become a stream, for both paths.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from twisted.internet import threads
from twisted.internet.defer import Deferred

from .answers import MAX_CHANNEL_NAME, stream_target
from .broadcast import Broadcaster
from .config import Config
from .cors import CorsPolicy
from .redis_address import RedisAddress
from .routing import Offload, SseTarget
from .routing.state import DEFAULT_WORKER_ID, Verifier
from .stream import DEFAULT_MAX_QUEUED
from .stream_auth import authorize
from .tokens import TokenKey

if TYPE_CHECKING:
    from .backends import Backend

#: :meth:`Gateway.plan`'s answer when the gateway is full.
FULL: Final = "no room for another stream"


def _run_in_thread(work: Callable[[], Any]) -> Deferred[Any]:
    return threads.deferToThread(work)


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """An offload that can stream: its target (channel, mode options) and Redis server."""

    target: SseTarget
    address: RedisAddress
    channel: bytes
    last_event_id: str | None = None  # where a Redis Streams client resumes
    expires: float | None = None  # the ``exp`` of an ``auth=jwt`` stream's token


@dataclass
class Gateway:
    """What the front resource needs: the rules, the streams, and the servers they may use.

    ``verifier`` checks htpasswd passwords (None: the process-wide store of
    :mod:`sse_offload.auth`); ``run_in_thread`` runs a slow password hash off the reactor.
    """

    config: Config
    streams: Broadcaster
    default_address: RedisAddress
    allowed_servers: set[tuple[object, ...]] = field(default_factory=set)
    max_queued: int = DEFAULT_MAX_QUEUED
    verifier: Verifier | None = None
    run_in_thread: Callable[[Callable[[], Any]], Deferred[Any]] = _run_in_thread
    backend: Backend | None = None
    #: Open streams accepted (0: no limit), in all (the gateway) and per client address.
    max_clients: int = 0
    max_clients_per_ip: int = 0
    max_channel_length: int = MAX_CHANNEL_NAME
    open_streams: int = 0
    streams_by_ip: dict[str, int] = field(default_factory=dict)
    #: A worker of ``--processes N``: the shared-memory counts through which
    #: ``max_clients`` caps the whole gateway (it may overshoot by N-1: the counts' module
    #: says why). None: this process is the gateway, and ``open_streams`` the figure.
    #: ``max_clients_per_ip`` stays per process.
    counts: Any = None
    #: ``${uwsgi[wid]}``: this process's worker number, from 1.
    worker_id: int = DEFAULT_WORKER_ID
    #: ``--subscribe-key``: verifies the tokens of ``auth=jwt`` streams (stream_auth.py).
    subscribe_key: TokenKey | None = None
    #: ``--cors-origins``: the origins whose pages may read streams (cors.py).
    cors: CorsPolicy | None = None

    @property
    def stats(self) -> collections.Counter[str]:
        """The process's counters (/metrics): the hub's, shared by every layer."""
        return self.streams.stats

    def allow(self, addresses: Iterable[RedisAddress]) -> None:
        self.allowed_servers.update(a.key for a in addresses)

    def total_streams(self) -> int:
        """Open streams of the whole gateway (every worker's, with ``counts``)."""
        return self.open_streams if self.counts is None else int(self.counts.total())

    def has_room(self, ip: str) -> bool:
        """May another stream open, for a client at ``ip``?"""
        if self.max_clients and self.total_streams() >= self.max_clients:
            return False
        return not (
            self.max_clients_per_ip
            and self.streams_by_ip.get(ip, 0) >= self.max_clients_per_ip
        )

    def plan(
        self, outcome: Offload, ip: str, last_event_id: str | None = None,
        vars: Mapping[str, str] | None = None,
    ) -> StreamPlan | tuple[SseTarget, str]:
        """Can ``outcome`` stream, for a client at ``ip``? A :class:`StreamPlan`, or
        ``(target, why)``: a reason of :func:`~sse_offload.answers.stream_target`, or
        :data:`FULL`, or an ``auth=jwt`` refusal (stream_auth.authorize) for the token in
        the request's ``vars``."""
        target, address = stream_target(
            outcome, self.default_address, self.allowed_servers, self.max_channel_length
        )
        if not isinstance(address, RedisAddress):
            return target, str(address)
        expires = None
        if target.auth is not None:
            now = self.streams.clock.seconds()
            access = authorize(self.subscribe_key, target, vars or {}, now)
            if isinstance(access, str):
                return target, access
            expires = access
        if not self.has_room(ip):
            return target, FULL
        channel = (target.channel or "").encode("utf-8", "surrogateescape")
        return StreamPlan(target, address, channel, last_event_id, expires)

    def stream_opened(self, ip: str) -> None:
        """Count a stream (``stream_closed`` uncounts it)."""
        self.open_streams += 1
        self.streams_by_ip[ip] = self.streams_by_ip.get(ip, 0) + 1
        if self.counts is not None:
            self.counts.set(self.open_streams)

    def stream_closed(self, ip: str) -> None:
        self.open_streams -= 1
        if self.counts is not None:
            self.counts.set(self.open_streams)
        left = self.streams_by_ip[ip] - 1
        if left:
            self.streams_by_ip[ip] = left
        else:
            del self.streams_by_ip[ip]

    def response_side(self) -> bool:
        """Does anything in the rules look at, or change, the responses?"""
        c = self.config
        return bool(
            c.response_rules or c.final_rules or c.header_vars or c.add_headers or c.del_headers
        )
