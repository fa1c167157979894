"""The status page of a gateway run as a user runs it (``twistd`` with ``--admin``, a real
redis-server): ``/status.json``, the ``/status/events`` stream, the merged status of
``--processes 2``, and the page itself in headless Chromium."""

from __future__ import annotations

import json
import os
import signal
import time
from itertools import pairwise
from urllib.parse import quote

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from gateway_helpers import wait_numsub
from redis_helpers import free_port, http_get, wait_for, wait_for_http
from sse_client import SSEClient
from test_browser import browser  # noqa: F401  (the fixture)
from test_processes import PID_RULES, _Streams

RULES = (
    "[uwsgi]\nroute = ^/s/(.*)$ sse:$1\nroute = ^/x/(.*)$ sse:stream=$1\n"
    "route = ^/k/(.*)$ sse:subscribe=$1\n"  # a channel name with = in it
)


def _admin_gateway(gateway_factory, redis, *args: str):
    admin = free_port()
    gw = gateway_factory(
        RULES if "--processes" not in args else PID_RULES, redis=redis.address,
        args=("--admin", f"tcp:{admin}:interface=127.0.0.1", *args),
    ).start()
    wait_for_http(f"http://127.0.0.1:{admin}/status.json", lambda code, _: code == 200,
                  what="the admin listener")
    return gw, admin


def _status(admin: int) -> dict:
    code, body = http_get(f"http://127.0.0.1:{admin}/status.json")
    assert code == 200, body
    return json.loads(body)


def _until_status(admin: int, accept, what: str, timeout: float = 10.0) -> dict:
    def look() -> dict | None:
        status = _status(admin)
        return status if accept(status) else None

    return wait_for(look, timeout, what=what)


def _listeners(status: dict) -> dict[tuple[str, str], int]:
    return {(r["kind"], r["name"]): r["listeners"] for r in status["channels"]["top"]}


def _pubsub(status: dict) -> dict:
    (conn,) = [c for c in status["redis"] if c["kind"] == "pubsub"]
    return conn


def test_status_json_counts_clients_and_channels_and_shows_redis_down_and_back(
    gateway_factory, fresh_redis
) -> None:
    gw, admin = _admin_gateway(gateway_factory, fresh_redis)
    status = _until_status(admin, lambda s: _pubsub(s)["connected"], "redis connected")
    assert status["clients"] == 0 and status["channels"]["total"] == 0
    assert status["pid"] == gw.proc.pid

    clients = [SSEClient(gw.port, path) for path in ["/s/news"] * 3 + ["/s/sport", "/x/orders"]]
    for c in clients:
        assert c.read_head() == 200
    status = _status(admin)
    assert status["clients"] == 5
    assert _listeners(status) == {("channel", "news"): 3, ("channel", "sport"): 1,
                                  ("stream", "orders"): 1}
    assert status["channels"]["top"][0]["server"] == fresh_redis.address
    conn = _pubsub(status)
    assert (conn["address"], conn["channels"], conn["connections_made"]) == (
        fresh_redis.address, 2, 1)
    assert status["counters"]["requests_stream"] == 5

    fresh_redis.kill()
    began = time.time()
    status = _until_status(admin, lambda s: not _pubsub(s)["connected"], "redis shown down")
    conn = _pubsub(status)
    assert began - 1 <= conn["down_since"] <= time.time() and not conn["expired"]
    streams = [c for c in status["redis"] if c["kind"] == "streams"]
    assert not streams[0]["connected"] and streams[0]["down_since"] is not None
    assert status["clients"] == 5  # the streams wait

    fresh_redis.start()
    status = _until_status(
        admin, lambda s: all(c["connected"] for c in s["redis"]), "redis shown back", 20
    )
    conn = _pubsub(status)
    assert (conn["down_since"], conn["connections_made"], conn["channels"]) == (None, 2, 2)
    (streams_conn,) = [c for c in status["redis"] if c["kind"] == "streams"]
    assert (streams_conn["down_since"], streams_conn["connections_made"]) == (None, 4)
    for c in clients:
        c.close()
    _until_status(admin, lambda s: s["clients"] == 0 and not s["channels"]["top"],
                  "the clients gone from the status")


def _data(client: SSEClient) -> list[dict]:
    return [json.loads(e) for e in client.events()]


def test_status_events_push_changes_coalesced_and_nothing_while_idle(
    gateway_factory, redis_server
) -> None:
    gw, admin = _admin_gateway(gateway_factory, redis_server)
    _until_status(admin, lambda s: _pubsub(s)["connected"], "redis connected")
    feed = SSEClient(admin, "/status/events")
    assert feed.read_head() == 200
    assert feed.header("Content-Type") == "text/event-stream"
    feed.read_until(lambda c: c.events(), what="the first snapshot")
    assert _data(feed)[-1]["clients"] == 0 and feed.body.startswith(b"retry: 1000\n\n")

    client = SSEClient(gw.port, "/s/news")
    assert client.read_head() == 200
    began = time.monotonic()
    feed.read_until(lambda c: _data(c)[-1]["clients"] == 1, timeout=1, what="the new client")
    pushed_in = time.monotonic() - began
    assert _listeners(_data(feed)[-1]) == {("channel", "news"): 1}

    # nothing changes: nothing is sent (a snapshot's time alone is no change)
    seen = len(feed.events())
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        feed._recv(deadline)
    assert len(feed.events()) == seen, feed.body[-300:]

    # a new client every 50 ms for half a second: an update at most every 250 ms
    more, arrivals = [], []
    for _ in range(10):
        more.append(SSEClient(gw.port, "/s/news"))
        assert more[-1].read_head() == 200
        pause = time.monotonic() + 0.05
        while time.monotonic() < pause:
            if feed._recv(pause) and len(feed.events()) > seen + len(arrivals):
                arrivals.append(time.monotonic())
    feed.read_until(lambda c: _data(c)[-1]["clients"] == 11, timeout=1, what="11 clients")
    updates = len(feed.events()) - seen
    gaps = [b - a for a, b in pairwise(arrivals)]
    assert 1 <= updates <= 4 and all(g > 0.15 for g in gaps), (updates, gaps)
    print(f"status pushed a new client in {pushed_in * 1000:.0f} ms; 10 clients over 0.5 s: "
          f"{updates} update(s)")
    for c in [client, feed, *more]:
        c.close()


def test_the_master_merges_its_workers_status_and_shows_a_killed_one_not_answering(
    gateway_factory, redis_server, redis
) -> None:
    gw, admin = _admin_gateway(gateway_factory, redis_server, "--processes", "2")
    status = _until_status(
        admin, lambda s: all(w["answering"] for w in s["workers"]) and len(s["workers"]) == 2,
        "both workers answering", 20,
    )
    streams = _Streams(gw.port)
    try:
        streams.spread(6)  # both workers hold some
        wait_numsub(redis, "s", 2)
        status = _status(admin)
        assert status["clients"] == 6
        assert _listeners(status) == {("channel", "s"): 6}  # summed over the workers
        by_pid = {w["pid"]: w for w in status["workers"]}
        assert {pid: by_pid[pid]["clients"] for pid in streams.by_pid} == {
            pid: len(c) for pid, c in streams.by_pid.items()}
        assert sorted(c["worker"] for c in status["redis"] if c["kind"] == "pubsub") == [0, 1]
        assert status["pid"] == gw.proc.pid

        victim, survivor = streams.by_pid
        index = by_pid[victim]["index"]
        os.kill(victim, signal.SIGKILL)
        status = _until_status(
            admin, lambda s: not s["workers"][index]["answering"], "the killed worker shown"
        )
        assert status["workers"][index]["error"]
        assert status["clients"] == len(streams.by_pid[survivor])
        assert not status["channels"]["exact"]
        assert "left out of /status.json" in gw.log()
        status = _until_status(
            admin, lambda s: all(w["answering"] for w in s["workers"]), "its successor", 20
        )
        assert status["workers"][index]["restarts"] == 1
        assert status["workers"][index]["pid"] not in (victim, None)
    finally:
        streams.close_all()


#: A channel name that is markup: the page must show it as text, never run it.
HOSTILE = "<img src=x onerror=window.__pwned=1>"


def test_the_status_page_shows_a_new_client_within_a_second_in_chromium(
    gateway_factory, redis_server, browser  # noqa: F811
) -> None:
    gw, admin = _admin_gateway(gateway_factory, redis_server)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"http://127.0.0.1:{admin}/status")
    page.wait_for_function(
        "() => document.getElementById('clients').textContent === '0'"
        " && document.getElementById('link').textContent === 'live'", timeout=5000,
    )

    client = SSEClient(gw.port, "/s/news")
    assert client.read_head() == 200
    began = time.monotonic()
    shown = """() => document.getElementById('clients').textContent === '1'
        && [...document.querySelectorAll('#channels tr')].some(
            (tr) => tr.dataset.channel === 'news' && tr.dataset.listeners === '1')"""
    try:
        page.wait_for_function(shown, timeout=1000)
    except PlaywrightTimeoutError:
        raise AssertionError(
            "the page did not show the new client within 1 s: "
            + page.inner_text("body")[:1000]
        ) from None
    took = time.monotonic() - began
    print(f"new client shown by the page {took * 1000:.0f} ms after its 200 head")

    hostile = SSEClient(gw.port, "/k/" + quote(HOSTILE))
    assert hostile.read_head() == 200
    page.wait_for_function(
        "(name) => [...document.querySelectorAll('#channels tr')].some("
        "(tr) => tr.dataset.channel === name && tr.cells[2].textContent === name)",
        arg=HOSTILE, timeout=2000,
    )
    assert page.evaluate("() => window.__pwned") is None
    assert page.query_selector("#channels img") is None
    assert errors == []
    for c in (client, hostile):
        c.close()


#: A gateway of two workers, one silent, whose Redis connections include a kind this page
#: was never told of (a cluster with its nodes): what any describe() may say.
FABRICATED = {
    "version": "9.9", "pid": 7, "started": 1000.0, "now": 1090.0, "clients": 12,
    "channels": {"total": 250, "listeners": 40, "shown": 1, "exact": False, "top": [
        {"server": "r:1", "kind": "channel", "name": "news", "listeners": 9, "partial": True},
    ]},
    "redis": [
        {"worker": 0, "address": "r:1", "kind": "pubsub", "connected": False,
         "down_since": 1030.0, "expired": True, "channels": 3, "patterns": 0,
         "connections_made": 1},
        {"worker": 0, "address": "cluster:7000", "kind": "cluster", "connected": True,
         "down_since": None, "expired": False, "channels": 5, "patterns": 1,
         "connections_made": 3, "slots_moved": 17, "nodes": [
             {"address": "10.0.0.1:7000", "role": "master", "connected": True},
             {"address": "10.0.0.2:7000", "role": "replica", "connected": False},
         ]},
    ],
    "workers": [
        {"index": 0, "pid": 11, "answering": True, "clients": 12, "restarts": 0, "error": ""},
        {"index": 1, "pid": 12, "answering": False, "clients": None, "restarts": 2,
         "error": "no answer in 2 s"},
    ],
    "counters": {"messages_received": 1234567},
}


def test_the_page_draws_any_connection_kind_and_the_workers_from_the_snapshot(
    browser,  # noqa: F811
) -> None:
    from sse_offload.status_page import PAGE, PAGE_HEADERS

    page = browser.new_page()
    headers = {k.decode(): v.decode() for k, v in PAGE_HEADERS}
    page.route("http://status.test/status", lambda route: route.fulfill(
        status=200, headers=headers, body=PAGE))
    page.route("http://status.test/status/events", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"},
        body=f"retry: 60000\n\ndata: {json.dumps(FABRICATED)}\n\n"))
    page.goto("http://status.test/status")
    page.wait_for_function("() => document.getElementById('clients').textContent === '12'",
                           timeout=5000)
    rows = page.eval_on_selector_all(
        "#redis > tbody > tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")
    assert [r[:7] for r in rows] == [
        ["0", "r:1", "pubsub", rows[0][3], "3", "0", "1"],
        ["0", "cluster:7000", "cluster", "connected", "5", "1", "3"],
    ]
    assert rows[0][3].startswith("expired, down since")
    # the keys the page does not know, drawn generically: a list of objects as a table
    nodes = page.eval_on_selector_all(
        "#redis > tbody > tr:nth-child(2) table tr",
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    assert nodes == [["address", "role", "connected"], ["10.0.0.1:7000", "master", "yes"],
                     ["10.0.0.2:7000", "replica", "no"]]
    assert "slots_moved: 17" in rows[1][7]
    workers = page.eval_on_selector_all(
        "#workers tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    assert workers == [["0", "11", "answering", "12", "0"],
                       ["1", "12", "not answering: no answer in 2 s", "—", "2"]]
    assert page.inner_text("#channels tbody").startswith("≥ 9")
    assert "250 or more" in page.inner_text("#channel-count")
    assert page.inner_text("#uptime").startswith("1m 3")  # the server's clock, not the browser's
