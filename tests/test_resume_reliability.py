"""Redis Streams mode under failures: a Redis restart under 200 streams while publishing,
and Chromium's EventSource resuming by id after the server closed its stream."""

from __future__ import annotations

import threading

import pytest

from gateway_helpers import wait_for
from redis_helpers import RedisServer, RespClient
from sse_client import SSEClient
from test_browser import browser  # noqa: F401  (the fixture)
from test_resume import parsed

RULES = """\
[uwsgi]
route = ^/s/([a-z0-9]+)$ sse:stream=$1
"""


@pytest.fixture
def persistent_redis(tmp_path_factory):
    """A redis-server that keeps its data across a restart (AOF, fsync each write)."""
    server = RedisServer(
        tmp_path_factory.mktemp("rp"),
        extra_args=("--appendonly", "yes", "--appendfsync", "always"),
    ).start()
    yield server
    server.stop()


def _xadd_until_done(server: RedisServer, key: str, count: int, ids: list[str]) -> None:
    """XADD ``count`` entries, retrying each one until Redis takes it (Redis restarts).

    Explicit ids (``N-0``): an XADD whose reply was lost with the connection is not added
    twice, Redis refuses the repeat as not after the stream's top entry."""
    client: RespClient | None = None
    i = 0
    while i < count:
        entry = f"{i + 2}-0"
        try:
            if client is None:
                client = server.client()
            client.call("XADD", key, entry, "data", f"e{i}")
        except RuntimeError as e:  # an error reply
            if "equal or smaller" not in str(e):
                client = None
                threading.Event().wait(0.05)
                continue
        except (OSError, ConnectionError, AssertionError):
            client = None
            threading.Event().wait(0.05)
            continue
        ids.append(entry)
        i += 1


def test_a_redis_restart_under_200_streams_loses_and_repeats_nothing(
    gateway_factory, persistent_redis
) -> None:
    redis = persistent_redis.client()
    start = redis.call("XADD", "restart", "1-0", "data", "start").decode()
    gw = gateway_factory(RULES, redis=persistent_redis.address).start()
    clients = [
        SSEClient(gw.port, "/s/restart", headers={"Last-Event-ID": start}) for _ in range(200)
    ]
    for c in clients:
        assert c.read_head() == 200
    ids: list[str] = []
    publisher = threading.Thread(
        target=_xadd_until_done, args=(persistent_redis, "restart", 300, ids)
    )
    publisher.start()
    wait_for(lambda: len(ids) >= 100, what="100 entries before the restart")
    persistent_redis.restart()
    publisher.join(timeout=60)
    assert not publisher.is_alive() and len(ids) == 300
    for n, c in enumerate(clients):
        c.read_until(lambda c: len(parsed(c)) >= 300, 30, f"client {n}: 300 events")
        events = parsed(c)
        assert [e["id"] for e in events] == ids, f"client {n}"
        assert [e["data"] for e in events] == [f"e{i}" for i in range(300)]
    assert "lost redis" in gw.log()  # the restart happened under the streams
    assert "messages may have been missed" not in gw.log()


PAGE = """<!doctype html>
<script>
window.__got = [];
window.__errors = 0;
const source = new EventSource("/s/browser");
source.onmessage = (e) => window.__got.push([e.lastEventId, e.data]);
source.onerror = () => window.__errors++;
</script>
"""


def test_chromium_eventsource_resumes_by_id_after_the_server_closed(
    gateway_factory, redis_server, browser, tmp_path  # noqa: F811
) -> None:
    (tmp_path / "page.html").write_text(PAGE)
    rules = RULES + f"static-map = /page={tmp_path}/page.html\n"
    redis = redis_server.client()
    gw = gateway_factory(rules, redis=redis_server.address, args=("--drain", "0.5")).start()
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{gw.port}/page")
    wait_for(lambda: _readers(redis) >= 1, what="the gateway's XREAD")
    ids = [redis.call("XADD", "browser", "*", "data", f"b{i}").decode() for i in range(5)]
    page.wait_for_function("() => window.__got.length >= 5", timeout=10000)
    port = gw.port
    gw.stop()  # the server closes the stream (a retry: hint first)
    page.wait_for_function("() => window.__errors >= 1", timeout=10000)
    ids += [redis.call("XADD", "browser", "*", "data", f"b{i}").decode() for i in range(5, 10)]
    gateway_factory(rules, redis=redis_server.address, name="again").start(port=port)
    page.wait_for_function("() => window.__got.length >= 10", timeout=20000)
    got = page.evaluate("() => window.__got")
    assert got == [[ids[i], f"b{i}"] for i in range(10)]


def _readers(redis) -> int:
    listing = redis.call("CLIENT", "LIST").decode()
    return sum(1 for line in listing.splitlines() if "cmd=xread" in line and "flags=b" in line)
