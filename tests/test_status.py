"""The status page's snapshot, merge and feed, without a reactor: tables of input and
expected output, the channel cap, and the feed's timing on a Clock."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.web.test.requesthelper import DummyRequest

from sse_offload.redis_protocol import PATTERN, SHARDED
from sse_offload.sse import KEEPALIVE
from sse_offload.status import (
    TOP_CHANNELS,
    WorkerStatus,
    changed,
    channel_table,
    merge_snapshots,
    process_snapshot,
)
from sse_offload.status_page import PAGE, PAGE_HEADERS, SCRIPT, STYLE, _csp_hash
from sse_offload.status_site import (
    COST_FACTOR,
    STATUS_INTERVAL,
    STATUS_KEEPALIVE,
    ProcessStatus,
    StatusFeed,
    add_status,
)
from test_hub import RecordingListener
from twisted_helpers import make_streams


class FakeServer:
    """A hub connection as the status reads it: describe() and its listing."""

    def __init__(self, address: str, channels=None, patterns=None, keys=None, sharded=None,
                 **more) -> None:
        self.address = address
        self.channels = {k: [None] * n for k, n in (channels or {}).items()}
        self.patterns = {k: [None] * n for k, n in (patterns or {}).items()}
        self.sharded = {k: [None] * n for k, n in (sharded or {}).items()}
        self.keys = {k: [None] * n for k, n in (keys or {}).items()}
        self.more = more

    def describe(self) -> dict[str, object]:
        return {"address": self.address, "kind": "fake", "connected": True, **self.more}


def _snapshot(servers=(), stream_servers=(), clients=0, stats=None, limit=TOP_CHANNELS):
    return process_snapshot(
        servers=servers, stream_servers=stream_servers, clients=clients, stats=stats or {},
        version="9.9", pid=42, started=1000.0, now=1010.0, limit=limit,
    )


def _rows(snapshot) -> list[tuple[str, str, str, int]]:
    return [(r["server"], r["kind"], r["name"], r["listeners"]) for r in
            snapshot["channels"]["top"]]


@pytest.mark.parametrize(
    ("servers", "stream_servers", "rows"),
    [
        pytest.param([], [], [], id="nothing held"),
        pytest.param(
            [FakeServer("r:1", {b"a": 2, b"b": 5})], [],
            [("r:1", "channel", "b", 5), ("r:1", "channel", "a", 2)],
            id="most listeners first",
        ),
        pytest.param(
            [FakeServer("r:2", {b"z": 1}), FakeServer("r:1", {b"z": 1, b"y": 1})], [],
            [("r:1", "channel", "y", 1), ("r:1", "channel", "z", 1), ("r:2", "channel", "z", 1)],
            id="ties in a fixed order: server, kind, name",
        ),
        pytest.param(
            [FakeServer("r:1", {b"news": 3}, patterns={b"news.*": 4}, sharded={b"o.1": 2})],
            [FakeServer("r:1", keys={b"orders": 1})],
            [("r:1", "pattern", "news.*", 4), ("r:1", "channel", "news", 3),
             ("r:1", "sharded", "o.1", 2), ("r:1", "stream", "orders", 1)],
            id="channels, patterns, sharded channels and stream keys",
        ),
        pytest.param(
            [FakeServer("r:1", {b"caf\xc3\xa9": 1, b"bad\xff": 1, b"<b>&": 1})], [],
            [("r:1", "channel", "<b>&", 1), ("r:1", "channel", "bad\\xff", 1),
             ("r:1", "channel", "café", 1)],
            id="names as text: utf-8 decoded, other bytes escaped, markup left as it is",
        ),
    ],
)
def test_the_channel_table_of_a_process(servers, stream_servers, rows) -> None:
    snap = _snapshot(servers, stream_servers)
    assert _rows(snap) == rows
    assert snap["channels"]["total"] == len(rows)
    assert snap["channels"]["listeners"] == sum(r[3] for r in rows)
    assert snap["channels"]["shown"] == len(rows)
    json.dumps(snap)  # JSON as it is


def test_a_snapshot_says_what_the_process_is_and_holds() -> None:
    server = FakeServer("r:1", {b"a": 1}, connected=False, down_since=5.0)
    snap = _snapshot([server], [FakeServer("r:1", keys={b"k": 2}, kind="streams")], clients=3,
                     stats={"messages_received": 7, "requests_over_capacity": 2})
    assert {k: snap[k] for k in ("version", "pid", "started", "now", "clients")} == {
        "version": "9.9", "pid": 42, "started": 1000.0, "now": 1010.0, "clients": 3,
    }
    assert snap["redis"] == [
        {"address": "r:1", "kind": "fake", "connected": False, "down_since": 5.0},
        {"address": "r:1", "kind": "streams", "connected": True},
    ]
    assert snap["counters"] == {"messages_received": 7, "requests_over_capacity": 2}


def test_100000_channels_send_the_top_ones_and_the_totals_in_a_few_kilobytes() -> None:
    channels = {f"channel-{i:06d}".encode(): 1 for i in range(100_000)}
    channels[b"busy"] = 50
    channels[b"busier"] = 80
    snap = _snapshot([FakeServer("10.0.0.1:6379", channels)])
    table = snap["channels"]
    assert (table["total"], table["shown"]) == (100_002, TOP_CHANNELS)
    assert table["listeners"] == 100_000 + 130
    assert [r["name"] for r in table["top"][:3]] == ["busier", "busy", "channel-000000"]
    size = len(json.dumps(snap))
    assert size < 12_000, size  # not megabytes per update
    table = channel_table([("s", "channel", {b"a": [1], b"b": [1, 2]}),
                           ("s", "pattern", {b"c": [1, 2, 3]})], limit=2)
    assert (table["total"], table["listeners"], table["shown"]) == (3, 6, 2)
    assert [r["name"] for r in table["top"]] == ["c", "b"]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (None, {"now": 1}, True),
        ({"now": 1, "clients": 1}, {"now": 2, "clients": 1}, False),
        ({"now": 1, "clients": 1}, {"now": 1, "clients": 2}, True),
        ({"channels": {"top": [1]}}, {"channels": {"top": [1, 2]}}, True),
        ({"clients": 1}, {"clients": 1, "workers": []}, True),
    ],
)
def test_a_snapshot_changed_unless_only_its_time_did(before, after, expected) -> None:
    assert changed(before, after) is expected


def _worker_snap(clients, rows, total=None, redis=(), counters=None, pid=100):
    top = [{"server": "r:1", "kind": "channel", "name": n, "listeners": c} for n, c in rows]
    return {
        "pid": pid, "clients": clients,
        "channels": {"total": total if total is not None else len(rows),
                     "listeners": sum(c for _, c in rows), "shown": len(top), "exact": True,
                     "top": top},
        "redis": list(redis), "counters": counters or {},
    }


def _merge(workers, limit=TOP_CHANNELS):
    return merge_snapshots(workers, version="9.9", pid=1, started=0.0, now=1.0, limit=limit)


def test_the_master_sums_its_workers_per_channel_and_lists_their_connections() -> None:
    a = _worker_snap(2, [("news", 2)], redis=[{"address": "r:1", "connected": True}],
                     counters={"messages_received": 3, "requests_stream": 2}, pid=11)
    b = _worker_snap(3, [("news", 1), ("sport", 2)], redis=[{"address": "r:1",
                     "connected": False}], counters={"messages_received": 4}, pid=12)
    merged = _merge([WorkerStatus(0, 11, 0, a), WorkerStatus(1, 12, 2, b)])
    assert merged["clients"] == 5
    assert [(r["name"], r["listeners"]) for r in merged["channels"]["top"]] == [
        ("news", 3), ("sport", 2)]
    assert merged["channels"]["total"] == 2 and merged["channels"]["exact"]
    assert merged["channels"]["listeners"] == 5
    assert merged["redis"] == [
        {"worker": 0, "address": "r:1", "connected": True},
        {"worker": 1, "address": "r:1", "connected": False},
    ]
    assert merged["workers"] == [
        {"index": 0, "pid": 11, "answering": True, "clients": 2, "restarts": 0, "error": ""},
        {"index": 1, "pid": 12, "answering": True, "clients": 3, "restarts": 2, "error": ""},
    ]
    assert merged["counters"] == {"messages_received": 7, "requests_stream": 2}


def test_a_worker_that_does_not_answer_is_shown_and_left_out_of_the_sums() -> None:
    a = _worker_snap(2, [("news", 2)])
    merged = _merge([WorkerStatus(0, 11, 0, a), WorkerStatus(1, 12, 0, None, "no answer in 2 s"),
                     WorkerStatus(2, None, 1, None, "refused")])
    assert merged["clients"] == 2
    assert merged["workers"][1:] == [
        {"index": 1, "pid": 12, "answering": False, "clients": None, "restarts": 0,
         "error": "no answer in 2 s"},
        {"index": 2, "pid": None, "answering": False, "clients": None, "restarts": 1,
         "error": "refused"},
    ]
    assert not merged["channels"]["exact"]  # what the silent workers hold is missing


def test_a_merged_count_is_marked_partial_where_a_capped_worker_may_hold_more() -> None:
    # worker a holds 5 channels and listed its top 2; b holds 2 and listed both
    a = _worker_snap(10, [("x", 6), ("y", 4)], total=5)
    b = _worker_snap(3, [("y", 2), ("z", 1)])
    merged = _merge([WorkerStatus(0, 1, 0, a), WorkerStatus(1, 2, 0, b)], limit=2)
    top = merged["channels"]["top"]
    assert [(r["name"], r["listeners"], r.get("partial", False)) for r in top] == [
        ("x", 6, False), ("y", 6, False)]
    merged = _merge([WorkerStatus(0, 1, 0, a), WorkerStatus(1, 2, 0, b)], limit=3)
    assert merged["channels"]["top"][2] == {
        "server": "r:1", "kind": "channel", "name": "z", "listeners": 1, "partial": True}
    assert merged["channels"]["total"] == 5 and not merged["channels"]["exact"]
    assert merged["channels"]["shown"] == 3


# -- the feed: one timer for every open status stream ----------------------------------------


class Source:
    """Snapshots on demand; ``state`` is what the next one says."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.state = 0
        self.made = 0

    def __call__(self) -> dict[str, object]:
        self.made += 1
        return {"state": self.state, "now": self.clock.seconds()}


def _events(writes: list[bytes]) -> list[int]:
    return [json.loads(w[len(b"data: "):])["state"] for w in writes if w.startswith(b"data: ")]


class Writer:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


def test_the_feed_sends_changes_coalesced_and_nothing_else_but_keepalives() -> None:
    clock = task.Clock()
    source = Source(clock)
    feed = StatusFeed(source, clock)
    assert clock.getDelayedCalls() == [] and source.made == 0  # nothing while nobody looks

    page = Writer()
    feed.add(page)
    assert _events(page.writes) == [0]  # the state at once
    clock.advance(STATUS_INTERVAL * 4)
    assert _events(page.writes) == [0]  # unchanged: nothing sent

    source.state = 1  # three changes inside one interval: one update, the last state
    clock.advance(STATUS_INTERVAL / 4)
    source.state = 2
    clock.advance(STATUS_INTERVAL / 4)
    source.state = 3
    clock.advance(STATUS_INTERVAL / 2)
    assert _events(page.writes) == [0, 3]

    second = Writer()  # a page opened later gets the last state at once
    feed.add(second)
    assert _events(second.writes) == [3]

    before = len(page.writes)
    clock.pump([STATUS_INTERVAL] * int(STATUS_KEEPALIVE / STATUS_INTERVAL + 1))
    assert page.writes[before:] == [KEEPALIVE]  # idle: one comment per keepalive period

    feed.remove(page)
    feed.remove(second)
    assert clock.getDelayedCalls() == []  # the last page gone: no timer left
    made = source.made
    clock.advance(60)
    assert source.made == made


def test_the_feed_waits_for_a_snapshot_that_comes_later() -> None:
    clock = task.Clock()
    pending: list[Deferred[dict[str, object]]] = []

    def source() -> Deferred[dict[str, object]]:
        pending.append(Deferred())
        return pending[-1]

    feed = StatusFeed(source, clock)
    page = Writer()
    feed.add(page)
    clock.advance(STATUS_INTERVAL * 3)
    assert len(pending) == 1 and clock.getDelayedCalls() == []  # one ask at a time
    pending[0].callback({"state": 5, "now": 0})
    assert _events(page.writes) == [5]
    clock.advance(STATUS_INTERVAL)
    assert len(pending) == 2
    feed.remove(page)
    pending[1].callback({"state": 6, "now": 0})
    assert clock.getDelayedCalls() == [] and _events(page.writes) == [5]


# -- a serving process ------------------------------------------------------------------------


def _process(clock: task.Clock, timer=lambda: 0.0):
    streams = make_streams(clock, _address(), clock=clock)  # never started: no connection
    gateway = SimpleNamespace(streams=streams, open_streams=0, stats=streams.stats)
    return gateway, ProcessStatus(gateway, clock, timer=timer)  # type: ignore[arg-type]


def _address():
    from sse_offload.redis_address import parse_address

    return parse_address("127.0.0.1:1")


def test_a_process_snapshot_reads_the_hub_and_describe() -> None:
    clock = task.Clock()
    clock.advance(500)
    gateway, status = _process(clock)
    server = gateway.streams.hub.server(_address())
    server.add(b"news", RecordingListener())
    server.add(b"news", RecordingListener())
    server.add(b"n*", RecordingListener(), kind=PATTERN)
    server.add(b"o.1", RecordingListener(), kind=SHARDED)
    gateway.streams.stream_server(_address()).add(b"orders", RecordingListener())
    gateway.open_streams = 4
    gateway.stats["requests_stream"] += 4
    clock.advance(10)
    snap = status.snapshot()
    assert (snap["started"], snap["now"], snap["clients"]) == (500, 510, 4)
    assert _rows(snap) == [("127.0.0.1:1", "channel", "news", 2),
                           ("127.0.0.1:1", "pattern", "n*", 1),
                           ("127.0.0.1:1", "sharded", "o.1", 1),
                           ("127.0.0.1:1", "stream", "orders", 1)]
    pubsub, streams = snap["redis"]
    assert pubsub == {"address": "127.0.0.1:1", "kind": "pubsub", "connected": False,
                      "down_since": None, "expired": False, "channels": 2, "patterns": 1,
                      "sharded_channels": 1, "connections_made": 0}
    assert streams["kind"] == "streams" and streams["channels"] == 1
    assert [link["role"] for link in streams["links"]] == ["stream reader", "streams"]
    assert snap["counters"] == {"requests_stream": 4}


def test_a_costly_snapshot_is_reused_for_its_cost_times_the_factor() -> None:
    clock = task.Clock()
    ticks = iter(range(0, 10**6, 100))  # each snapshot "takes" 0.1 s of the timer
    gateway, status = _process(clock, timer=lambda: next(ticks) / 1000)
    first = status.snapshot()
    gateway.open_streams = 1
    clock.advance(0.1 * COST_FACTOR - 0.01)
    again = status.snapshot()
    assert again["clients"] == 0 and again["now"] == clock.seconds()  # reused, time current
    clock.advance(0.01)
    assert status.snapshot()["clients"] == 1
    assert first["clients"] == 0


# -- the resources -------------------------------------------------------------------------


def test_the_events_resource_streams_the_feed_and_leaves_it_when_the_client_goes() -> None:
    from twisted.web import resource, server

    clock = task.Clock()
    gateway, _ = _process(clock)
    site = server.Site(resource.Resource())
    add_status(site, gateway, clock)  # type: ignore[arg-type]
    request = DummyRequest([b"status", b"events"])
    events = site.resource.getChildWithDefault(b"status", request)
    events = events.getChildWithDefault(b"events", request)
    assert events.render(request) == server.NOT_DONE_YET
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"text/event-stream"]
    assert request.written[0] == b"retry: 1000\n\n"
    assert json.loads(request.written[1][len(b"data: "):])["clients"] == 0
    gateway.open_streams = 1
    clock.advance(STATUS_INTERVAL)
    assert json.loads(request.written[2][len(b"data: "):])["clients"] == 1
    request.finish()  # the client goes: its notifyFinish fires
    assert clock.getDelayedCalls() == []

    head = DummyRequest([b"status", b"events"])
    head.method = b"HEAD"
    assert events.render(head) == b""  # a head, not a stream held open
    assert clock.getDelayedCalls() == [] and not events.feed.listeners


def test_the_page_is_self_contained_and_allows_only_its_own_script() -> None:
    text = PAGE.decode()
    # nothing fetched but its own stream: no URL, no src/href, no import
    assert not re.search(r"https?:|//[a-z]|\bsrc=|\bhref=|@import|<link", text, re.I)
    headers = dict(PAGE_HEADERS)
    csp = headers[b"Content-Security-Policy"].decode()
    assert f"script-src {_csp_hash(SCRIPT)};" in csp
    assert f"style-src {_csp_hash(STYLE)};" in csp
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert f"<script>{SCRIPT}</script>" in text and f"<style>{STYLE}</style>" in text
    # data reaches the DOM as text only
    assert "innerHTML" not in SCRIPT and "insertAdjacentHTML" not in SCRIPT
    assert "document.write" not in SCRIPT
