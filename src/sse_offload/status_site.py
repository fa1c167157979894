"""The status page on the admin listener: ``/status``, ``/status.json``, ``/status/events``.

``/status`` is one self-contained HTML page (status_page.py) that reads ``/status/events``
with ``EventSource``: the gateway feeds its own status page with SSE. ``/status.json`` is the
same snapshot (status.py) on demand.

What it costs: nothing per message, and nothing while no status page is open. Snapshots are
computed from the hub's state when asked: for ``/status.json``, and every
:data:`STATUS_INTERVAL` while at least one ``/status/events`` stream is open (one timer for
all of them). A snapshot is sent only when it differs from the last one, so a new client
shows on the page within ``STATUS_INTERVAL`` plus a snapshot's time, and an idle gateway
sends only a keepalive comment. A snapshot that is costly to compute (many thousands of
channels) is reused for :data:`COST_FACTOR` times what it cost, so the status never takes
more than about 1/COST_FACTOR of the process.

With ``--processes N`` the master's admin listener asks every worker for its
``/status.json`` over its unix admin socket (``admin.ask_workers``: the timeout of
``/metrics``) and merges the answers (``status.merge_snapshots``); a worker that does not
answer is listed as not answering, and logged once when it stops and once when it is back.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.server import Request

from . import __version__
from .admin import _PoolResource, ask_workers
from .answers import SSE_HEADERS
from .broadcast import DEFAULT_KEEPALIVE
from .sse import KEEPALIVE, frame_sse, retry_field
from .status import TOP_CHANNELS, WorkerStatus, changed, merge_snapshots, process_snapshot
from .status_page import PAGE, PAGE_HEADERS
from .timers import cancel

if TYPE_CHECKING:
    from .gateway import Gateway
    from .processes.pool import WorkerPool

log = Logger()

#: How often an open status stream looks for a change: a new client shows on the page
#: within this (plus a snapshot's time), well inside the 1 s a person notices, and a busy
#: gateway's page moves at most 4 times a second.
STATUS_INTERVAL: Final = 0.25
#: A status stream with nothing new gets a comment this often: the streams' keepalive
#: default (proxies with idle timeouts keep it open, and a page that is gone is found).
STATUS_KEEPALIVE: Final = DEFAULT_KEEPALIVE
#: A snapshot is reused for this many times what it took to make: the status costs at most
#: about 1/10 of a process, however many pages and scrapers ask. Measured on the 2-core
#: development VM: 1,000 channels take 0.6 ms (reused for 6 ms: no delay a page can see),
#: 100,000 channels 58 ms, so that page moves every 0.6-0.85 s.
COST_FACTOR: Final = 10.0
#: The page's EventSource comes back this soon after the gateway restarts (browsers wait
#: 3 s by default).
STATUS_RETRY_MS: Final = 1000
JSON_TYPE: Final = b"application/json"

Snapshot = dict[str, Any]


def encode(snapshot: Snapshot) -> bytes:
    """A snapshot as compact JSON (one line: one SSE ``data:`` line)."""
    return json.dumps(snapshot, separators=(",", ":")).encode()


class ProcessStatus:
    """This serving process's snapshot, made from the gateway's state when asked (reused
    while a fresh one would cost more than 1/COST_FACTOR of the time since the last)."""

    def __init__(
        self,
        gateway: Gateway,
        clock: IReactorTime,
        limit: int = TOP_CHANNELS,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.gateway = gateway
        self.clock = clock
        self.limit = limit
        self.timer = timer  # measures what a snapshot costs
        self.started = clock.seconds()
        self.pid = os.getpid()
        self._last: Snapshot | None = None
        self._last_at = 0.0
        self._cost = 0.0

    def snapshot(self) -> Snapshot:
        """The current snapshot (status.process_snapshot), or the last one with its ``now``
        brought up to date while it is still fresh for its cost."""
        now = self.clock.seconds()
        if self._last is not None and now - self._last_at < self._cost * COST_FACTOR:
            return {**self._last, "now": now}
        began = self.timer()
        streams = self.gateway.streams
        snap = process_snapshot(
            servers=list(streams.hub.servers.values()),
            stream_servers=list(streams.stream_servers.values()),
            clients=self.gateway.open_streams,
            stats=self.gateway.stats,
            version=__version__,
            pid=self.pid,
            started=self.started,
            now=now,
            limit=self.limit,
        )
        self._cost = self.timer() - began
        self._last, self._last_at = snap, now
        return snap


class PoolStatus:
    """The whole gateway's snapshot, made by the master from its workers' answers."""

    def __init__(self, pool: WorkerPool, reactor: Any, limit: int = TOP_CHANNELS) -> None:
        self.pool = pool
        self.reactor = reactor
        self.limit = limit
        self.started = reactor.seconds()
        self._answering: dict[int, bool] = {}

    async def snapshot(self) -> Snapshot:
        """Ask every worker (``ask_workers``, its timeout) and merge what they answer."""
        answers = await ask_workers(self.pool, self.reactor, b"/status.json", quiet=True)
        by_index = {w.index: w for w in self.pool.workers}
        workers = []
        for answer in answers:
            snap, error = None, answer.error
            if answer.code == 200:
                try:
                    snap = json.loads(answer.body)
                except ValueError as e:
                    error = f"not JSON: {e}"
            elif answer.code is not None:
                error = f"answered {answer.code}"
            self._note(answer.index, snap is not None, error)
            worker = by_index[answer.index]
            workers.append(WorkerStatus(answer.index, worker.pid, worker.restarts, snap, error))
        return merge_snapshots(
            workers, version=__version__, pid=os.getpid(), started=self.started,
            now=self.reactor.seconds(), limit=self.limit,
        )

    def _note(self, index: int, answering: bool, error: str) -> None:
        """A log line when a worker stops answering and when it is back (not every ask:
        an open page asks 4 times a second)."""
        if self._answering.get(index, True) == answering:
            self._answering[index] = answering
            return
        self._answering[index] = answering
        if answering:
            log.info("worker {index} answers /status.json again", index=index)
        else:
            log.warn("worker {index} left out of /status.json: {error}", index=index, error=error)


class StatusFeed:
    """The snapshots for every open ``/status/events`` stream: one timer for all of them,
    running only while there is one (module docstring). ``source`` makes a snapshot, at
    once or through a Deferred; a listener is anything with ``write(bytes)``."""

    def __init__(
        self,
        source: Callable[[], Snapshot | Deferred[Snapshot]],
        clock: IReactorTime,
        interval: float = STATUS_INTERVAL,
        keepalive: float = STATUS_KEEPALIVE,
    ) -> None:
        self.source = source
        self.clock = clock
        self.interval = interval
        self.keepalive = keepalive
        self.listeners: dict[Any, None] = {}
        self._call: IDelayedCall | None = None
        self._busy = False  # a snapshot is being made
        self._last: Snapshot | None = None
        self._last_frame: bytes | None = None
        self._last_write = 0.0

    def add(self, listener: Any) -> None:
        """``listener`` gets the last snapshot now, then every change."""
        self.listeners[listener] = None
        if self._last_frame is not None:
            listener.write(self._last_frame)
        if self._call is None and not self._busy:
            self._tick()

    def remove(self, listener: Any) -> None:
        """``listener`` is gone; the last one stops the timer."""
        self.listeners.pop(listener, None)
        if not self.listeners:
            cancel(self._call)
            self._call = None
            self._last = self._last_frame = None

    def _tick(self) -> None:
        self._call = None
        self._busy = True
        d = maybeDeferred(self.source)
        d.addCallbacks(self._got, self._failed)
        d.addBoth(self._next)

    def _got(self, snapshot: Snapshot) -> None:
        if not self.listeners:
            return
        now = self.clock.seconds()
        if changed(self._last, snapshot):
            frame = frame_sse(encode(snapshot))
            self._last, self._last_frame = snapshot, frame
            self._send(frame, now)
        elif now - self._last_write >= self.keepalive:
            self._send(KEEPALIVE, now)

    def _send(self, data: bytes, now: float) -> None:
        self._last_write = now
        for listener in tuple(self.listeners):
            listener.write(data)

    def _failed(self, failure: Failure) -> None:
        log.failure("status snapshot", failure)

    def _next(self, _: object) -> None:
        self._busy = False
        if self.listeners and self._call is None:
            self._call = self.clock.callLater(self.interval, self._tick)


class _Page(resource.Resource):
    """``/status``: the page; ``/status/events``: its stream."""

    def __init__(self, feed: StatusFeed) -> None:
        super().__init__()
        self.putChild(b"events", _Events(feed))
        self.putChild(b"", self)  # /status/ too

    def render_GET(self, request: Request) -> bytes:
        for name, value in PAGE_HEADERS:
            request.setHeader(name, value)
        return PAGE


class _Events(resource.Resource):
    isLeaf = True

    def __init__(self, feed: StatusFeed) -> None:
        super().__init__()
        self.feed = feed

    def render_GET(self, request: Request) -> int | bytes:
        for name, value in SSE_HEADERS:
            request.setHeader(name, value)
        if request.method == b"HEAD":
            return b""  # the head alone, and done: not a stream held open for nothing
        request.write(retry_field(STATUS_RETRY_MS))  # the head goes out now
        request.notifyFinish().addBoth(lambda _: self.feed.remove(request))
        self.feed.add(request)
        return server.NOT_DONE_YET


class _Json(resource.Resource):
    isLeaf = True

    def __init__(self, status: ProcessStatus) -> None:
        super().__init__()
        self.status = status

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", JSON_TYPE)
        request.setHeader(b"Cache-Control", b"no-store")
        return encode(self.status.snapshot())


class _PoolJson(_PoolResource):
    path = b"/status.json"

    def __init__(self, pool: WorkerPool, reactor: Any, status: PoolStatus) -> None:
        super().__init__(pool, reactor)
        self.status = status

    async def page(self) -> tuple[int, bytes, bytes]:
        return 200, JSON_TYPE, encode(await self.status.snapshot())


def add_status(site: server.Site, gateway: Gateway, clock: IReactorTime) -> ProcessStatus:
    """Put the status page, its JSON and its stream on ``site`` (a serving process's admin
    site: ``admin.admin_site``); returns the snapshot source."""
    status = ProcessStatus(gateway, clock)
    site.resource.putChild(b"status", _Page(StatusFeed(status.snapshot, clock)))
    site.resource.putChild(b"status.json", _Json(status))
    return status


def add_pool_status(site: server.Site, pool: WorkerPool, reactor: Any) -> PoolStatus:
    """The same on the master's admin site (``admin.pool_admin_site``), for the whole
    gateway: its workers' snapshots merged."""
    status = PoolStatus(pool, reactor)
    feed = StatusFeed(lambda: Deferred.fromCoroutine(status.snapshot()), reactor)
    site.resource.putChild(b"status", _Page(feed))
    site.resource.putChild(b"status.json", _PoolJson(pool, reactor, status))
    return status
