"""The status page's snapshot: what a gateway process (or the whole gateway) holds, as JSON.

Pure functions over the hub's public listing and its connections' ``describe()``; no I/O,
no clock (times come in as arguments). status_site.py serves the result as ``/status.json``
and as the ``/status/events`` stream the page at ``/status`` reads.

A snapshot is bounded whatever the gateway holds: the channel list is the top
:data:`TOP_CHANNELS` by listeners, plus totals, so 100,000 channels cost a page the same few
kilobytes as 100. Channel names are the clients' (any bytes): they are decoded as log lines
do (undecodable bytes escaped) and left for the page to put in the DOM as text.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass
from typing import Any, Final, Protocol

from .pubsub import show_channel

#: Rows of the channel table. One row is under 100 bytes of JSON, so an update stays near
#: 10 KB however many channels there are (a page of 100,000 rows, 4 times a second, would
#: be megabytes a second to a browser that can show a screenful); a person reads the busiest
#: channels, and the totals say how many more there are.
TOP_CHANNELS: Final = 100

#: The row kinds of the channel table: a SUBSCRIBE channel, a PSUBSCRIBE pattern, an
#: SSUBSCRIBE (sharded) channel, a Redis Stream key.
CHANNEL, PATTERN, SHARDED, STREAM = "channel", "pattern", "sharded", "stream"

#: Keys of a snapshot that change without anything happening (the time it was made): a
#: snapshot that differs from the last one only there is not sent again.
VOLATILE: Final = frozenset({"now"})


class PubSubServer(Protocol):
    """A hub connection as the status reads it: ``describe()`` and its public listing."""

    @property
    def channels(self) -> Mapping[bytes, Sized]: ...

    @property
    def patterns(self) -> Mapping[bytes, Sized]: ...

    @property
    def sharded(self) -> Mapping[bytes, Sized]: ...

    def describe(self) -> dict[str, object]: ...


class StreamsServer(Protocol):
    """A Redis Streams server as the status reads it: ``describe()`` and its keys."""

    @property
    def keys(self) -> Mapping[bytes, Sized]: ...

    def describe(self) -> dict[str, object]: ...


@dataclass(frozen=True, slots=True)
class ChannelRow:
    """One row of the channel table: a channel, pattern or stream key of one server."""

    server: str
    kind: str
    name: str
    listeners: int

    def as_json(self) -> dict[str, object]:
        """The row as the snapshot carries it."""
        return {"server": self.server, "kind": self.kind, "name": self.name,
                "listeners": self.listeners}


def _rank(row: ChannelRow) -> tuple[int, str, str, str]:
    # Most listeners first; ties in a fixed order, so an unchanged gateway gives an
    # unchanged snapshot (and no update is sent).
    return (-row.listeners, row.server, row.kind, row.name)


Listing = tuple[str, str, Mapping[bytes, Sized]]  # server, kind, {name: its listeners}


def channel_table(listings: Iterable[Listing], limit: int = TOP_CHANNELS) -> dict[str, Any]:
    """The channel part of a snapshot: ``total`` channels, the ``listeners`` of all of
    them (a stream of two channels counts in both), and the ``top`` ``limit`` by listeners
    (``shown`` of them; ties by server, kind and name).

    Only the rows shown are built and their names decoded: 100,000 channels cost a tuple
    each (about 0.6 µs), the snapshot's cost.
    """
    total = listeners = 0
    best: list[tuple[int, str, str, bytes]] = []
    for server, kind, subs in listings:
        counts = [(-len(sub), name) for name, sub in subs.items()]
        total += len(counts)
        listeners -= sum(c for c, _ in counts)
        best += [(c, server, kind, name) for c, name in heapq.nsmallest(limit, counts)]
    top = [ChannelRow(server, kind, show_channel(name), -c)
           for c, server, kind, name in heapq.nsmallest(limit, best)]
    return {
        "total": total,
        "listeners": listeners,
        "shown": len(top),
        "exact": True,
        "top": [r.as_json() for r in top],
    }


def listings(
    servers: Iterable[PubSubServer], stream_servers: Iterable[StreamsServer]
) -> Iterable[Listing]:
    """Every server's channels, patterns, sharded channels and stream keys, from the hub's
    public listing."""
    for server in servers:
        address = str(server.describe()["address"])
        yield address, CHANNEL, server.channels
        yield address, PATTERN, server.patterns
        yield address, SHARDED, server.sharded
    for streams in stream_servers:
        yield str(streams.describe()["address"]), STREAM, streams.keys


def process_snapshot(
    *,
    servers: Iterable[PubSubServer],
    stream_servers: Iterable[StreamsServer],
    clients: int,
    stats: Mapping[str, int],
    version: str,
    pid: int,
    started: float,
    now: float,
    limit: int = TOP_CHANNELS,
) -> dict[str, Any]:
    """One serving process's status: its open streams (``clients``), channels (capped at
    ``limit`` rows), Redis connections (each one's ``describe()``) and counters (``stats``,
    every key, sorted). ``started`` and ``now`` are epoch seconds."""
    servers, stream_servers = list(servers), list(stream_servers)
    return {
        "version": version,
        "pid": pid,
        "started": started,
        "now": now,
        "clients": clients,
        "channels": channel_table(listings(servers, stream_servers), limit),
        "redis": [s.describe() for s in servers] + [s.describe() for s in stream_servers],
        "counters": dict(sorted(stats.items())),
    }


def changed(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> bool:
    """Does ``after`` say anything ``before`` did not (its time aside)?"""
    if before is None:
        return True
    keys = (before.keys() | after.keys()) - VOLATILE
    return any(before.get(k) != after.get(k) for k in keys)


# -- the whole gateway: the master of --processes N ----------------------------------------


@dataclass(frozen=True)
class WorkerStatus:
    """What the master knows of worker ``index``: its pid (None while it is not running),
    its restarts, and its own snapshot, or None with ``error`` saying why it gave none."""

    index: int
    pid: int | None
    restarts: int
    snapshot: Mapping[str, Any] | None
    error: str = ""


def merge_channels(tables: list[Mapping[str, Any]], limit: int = TOP_CHANNELS) -> dict[str, Any]:
    """Workers' channel tables as one: listeners summed per (server, kind, name).

    A worker holding more than ``limit`` channels sent only its top ``limit``: a row missing
    from its list may still have listeners there. Such rows are marked ``partial`` (their
    count is at least what is shown), and ``total`` is then a lower bound (``exact`` false).
    """
    sums: dict[tuple[str, str, str], int] = {}
    listed: list[set[tuple[str, str, str]]] = []
    truncated: list[bool] = []
    for table in tables:
        keys = set()
        for row in table["top"]:
            key = (row["server"], row["kind"], row["name"])
            sums[key] = sums.get(key, 0) + int(row["listeners"])
            keys.add(key)
        listed.append(keys)
        truncated.append(int(table["shown"]) < int(table["total"]) or not table["exact"])
    rows = [ChannelRow(*key, listeners) for key, listeners in sums.items()]
    top = heapq.nsmallest(limit, rows, key=_rank)
    exact = not any(truncated)
    out = []
    for row in top:
        item = row.as_json()
        key = (row.server, row.kind, row.name)
        if any(t and key not in keys for t, keys in zip(truncated, listed, strict=True)):
            item["partial"] = True
        out.append(item)
    totals = [int(t["total"]) for t in tables]
    return {
        "total": len(rows) if exact else max([len(rows), *totals]),
        "listeners": sum(int(t["listeners"]) for t in tables),
        "shown": len(out),
        "exact": exact,
        "top": out,
    }


def merge_snapshots(
    workers: list[WorkerStatus],
    *,
    version: str,
    pid: int,
    started: float,
    now: float,
    limit: int = TOP_CHANNELS,
) -> dict[str, Any]:
    """The whole gateway from its workers' snapshots: clients and counters summed, channel
    tables merged (:func:`merge_channels`), every worker's Redis connections listed with its
    ``worker`` index, and a row per worker (``answering`` false, and the ``error``, for one
    that gave no snapshot: what it holds is missing from every figure)."""
    answered = [w for w in workers if w.snapshot is not None]
    snaps = [w.snapshot for w in answered if w.snapshot is not None]
    counters: dict[str, int] = {}
    for snap in snaps:
        for key, value in snap["counters"].items():
            counters[key] = counters.get(key, 0) + int(value)
    channels = merge_channels([s["channels"] for s in snaps], limit)
    if len(answered) < len(workers):
        channels["exact"] = False
    return {
        "version": version,
        "pid": pid,
        "started": started,
        "now": now,
        "clients": sum(int(s["clients"]) for s in snaps),
        "channels": channels,
        "redis": [
            {"worker": w.index, **conn}
            for w in answered if w.snapshot is not None
            for conn in w.snapshot["redis"]
        ],
        "workers": [
            {
                "index": w.index,
                "pid": w.snapshot.get("pid", w.pid) if w.snapshot is not None else w.pid,
                "answering": w.snapshot is not None,
                "clients": int(w.snapshot["clients"]) if w.snapshot is not None else None,
                "restarts": w.restarts,
                "error": w.error,
            }
            for w in workers
        ],
        "counters": dict(sorted(counters.items())),
    }
