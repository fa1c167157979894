"""The hub and the stream layer over it: shared subscriptions against a real redis-server,
keepalive and drain on a Clock."""

from __future__ import annotations

import signal

import pytest
import pytest_twisted
from twisted.internet import task

from sse_offload.redis_address import parse_address
from sse_offload.sse import GAP_COMMENT, Mode, http_chunk
from sse_offload.timers import BACKOFF_MAX, backoff_delay
from twisted_helpers import eventually, make_streams, subscribe


def _stop_on_clock(streams, clock: task.Clock) -> None:
    """Stop a streams that runs on a fake clock: let the drain period pass; nothing may be left."""
    done = streams.stopService()
    clock.pump([0.1] * int(streams.drain / 0.1 + 2))
    assert done.called
    assert clock.getDelayedCalls() == []


class RecordingListener:
    """A listener that records what the streams writes (the stream layer is tested elsewhere)."""

    def __init__(self, mode: Mode = Mode.SSE, chunked: bool = False) -> None:
        self.mode = mode
        self.envelope = False
        self.chunked = chunked
        self.wrote = False
        self.received: list[bytes] = []
        self.gap = GAP_COMMENT if mode is Mode.SSE else None
        self.closed = False

    def send(self, data: bytes) -> None:
        self.received.append(data)
        self.wrote = True

    def close(self, reason: str = "server") -> None:
        self.closed = True


async def _until(predicate, timeout: float = 10.0) -> None:
    await eventually(predicate, "the condition", timeout)


@pytest_twisted.ensureDeferred
async def test_thousand_listeners_share_one_subscription_and_leave_no_state(redis_server, redis):
    from twisted.internet import reactor

    address = parse_address(redis_server.address)
    streams = make_streams(reactor, address, keepalive=0)
    streams.startService()
    try:
        listeners = [RecordingListener() for _ in range(1000)]
        removers = [subscribe(streams, address, b"shared", lst) for lst in listeners]
        await _until(lambda: redis.numsub("shared") == 1)
        redis.publish("shared", "hello")
        await _until(lambda: all(lst.received for lst in listeners))
        # framed once: every listener got the very same bytes object
        assert len({id(lst.received[0]) for lst in listeners}) == 1
        assert listeners[0].received == [b"data: hello\n\n"]
        for remove in removers:
            remove()
        await _until(lambda: redis.numsub("shared") == 0)
        assert streams.hub.server(address).channels == {}
    finally:
        await streams.stopService()


@pytest_twisted.ensureDeferred
async def test_groups_by_mode_and_wire(redis_server, redis):
    from twisted.internet import reactor

    address = parse_address(redis_server.address)
    streams = make_streams(reactor, address, keepalive=0)
    streams.startService()
    try:
        sse_chunked = RecordingListener(Mode.SSE, chunked=True)
        sse_bare = RecordingListener(Mode.SSE)
        raw = RecordingListener(Mode.RAW)
        removers = [subscribe(streams, address, b"g", x) for x in (sse_chunked, sse_bare, raw)]
        await _until(lambda: redis.numsub("g") == 1)
        redis.publish("g", "a\nb")
        await _until(lambda: sse_chunked.received and sse_bare.received and raw.received)
        assert sse_bare.received == [b"data: a\ndata: b\n\n"]
        assert sse_chunked.received == [b"11\r\ndata: a\ndata: b\n\n\r\n"]
        assert raw.received == [b"a\nb"]
        for remove in removers:
            remove()
    finally:
        await streams.stopService()


@pytest_twisted.ensureDeferred
async def test_resubscribe_while_unsubscribe_in_flight_keeps_the_channel(redis_server, redis):
    """Leave and come back before Redis answers: the later SUBSCRIBE wins (commands are ordered)."""
    from twisted.internet import reactor

    address = parse_address(redis_server.address)
    streams = make_streams(reactor, address, keepalive=0)
    streams.startService()
    try:
        await _until(lambda: streams.hub.server(address).protocol is not None)
        first = RecordingListener()
        remove = subscribe(streams, address, b"flip", first)
        remove()
        second = RecordingListener()
        remove2 = subscribe(streams, address, b"flip", second)
        await _until(lambda: redis.numsub("flip") == 1)
        redis.publish("flip", "x")
        await _until(lambda: second.received)
        assert first.received == []
        remove2()
    finally:
        await streams.stopService()


def test_keepalive_only_to_idle_sse_listeners() -> None:
    clock = task.Clock()
    address = parse_address("/nonexistent/redis.sock")
    streams = make_streams(clock, None, keepalive=15, clock=clock)
    streams.startService()
    server = streams.hub.server(address)
    idle_sse, busy_sse = RecordingListener(Mode.SSE), RecordingListener(Mode.SSE, chunked=True)
    idle_raw = RecordingListener(Mode.RAW)
    for lst in (idle_sse, busy_sse, idle_raw):
        server.add(b"k", lst)
    idle_chunked = RecordingListener(Mode.SSE, chunked=True)
    server.add(b"k", idle_chunked)
    clock.advance(10)
    busy_sse.send(b"x")
    clock.advance(5)  # first tick at 15 s
    assert idle_sse.received == [b":\n\n"]
    assert idle_chunked.received == [b"3\r\n:\n\n\r\n"]
    assert busy_sse.received == [b"x"]
    assert idle_raw.received == []
    clock.advance(15)  # nothing written since the last tick: all sse listeners get one
    assert busy_sse.received == [b"x", b"3\r\n:\n\n\r\n"]
    _stop_on_clock(streams, clock)


@pytest.mark.parametrize("attempt", range(12))
def test_backoff_grows_by_half_with_ten_percent_jitter(attempt: int) -> None:
    base = min(BACKOFF_MAX, 0.5 * 1.5**attempt)
    assert backoff_delay(attempt, rand=lambda: 0.0) == pytest.approx(base * 0.9)
    assert backoff_delay(attempt, rand=lambda: 1.0) == pytest.approx(base * 1.1)


@pytest_twisted.ensureDeferred
async def test_after_a_redis_restart_streams_get_the_gap_notice_then_messages(fresh_redis):
    from twisted.internet import reactor

    address = parse_address(fresh_redis.address)
    streams = make_streams(reactor, address, keepalive=0)
    streams.startService()
    redis = fresh_redis.client()
    try:
        sse, raw = RecordingListener(Mode.SSE), RecordingListener(Mode.RAW)
        chunked = RecordingListener(Mode.SSE, chunked=True)
        for lst in (sse, raw, chunked):
            subscribe(streams, address, b"g", lst)
        await _until(lambda: redis.numsub("g") == 1)
        redis.close()
        fresh_redis.kill()
        await _until(lambda: streams.hub.server(address).protocol is None)
        fresh_redis.start()
        redis = fresh_redis.client()
        await _until(lambda: sse.received, timeout=20)
        assert sse.received == [GAP_COMMENT]
        assert chunked.received == [http_chunk(GAP_COMMENT)]
        assert raw.received == [], "raw streams get no notice"
        await _until(lambda: redis.numsub("g") == 1)
        redis.publish("g", "after")
        await _until(lambda: len(sse.received) == 2)
        assert sse.received[1] == b"data: after\n\n"
        assert not sse.closed
        assert streams.stats["redis_reconnects"] == 1
    finally:
        redis.close()
        await streams.stopService()


def test_outage_longer_than_the_limit_closes_the_streams() -> None:
    clock = task.Clock()
    streams = make_streams(clock, None, keepalive=0, clock=clock, outage_limit=30)
    streams.startService()
    server = streams.hub.server(parse_address("/nonexistent/redis.sock"))  # never connects
    waiting = RecordingListener()
    server.add(b"k", waiting)
    clock.advance(29)
    assert not waiting.closed
    clock.advance(1)
    assert waiting.closed
    late = RecordingListener()
    assert not streams.join(server.address, b"k", late)  # after the limit, streams do not wait
    assert late.closed
    assert late not in list(server.listeners())
    _stop_on_clock(streams, clock)


@pytest_twisted.ensureDeferred
async def test_a_redis_that_stops_answering_is_dropped_and_reconnected(fresh_redis):
    from twisted.internet import reactor

    from sse_offload import pubsub

    clock = task.Clock()
    address = parse_address(fresh_redis.address)
    streams = make_streams(reactor, address, keepalive=0, clock=clock)
    streams.startService()
    try:
        listener = RecordingListener()
        subscribe(streams, address, b"h", listener)
        server = streams.hub.server(address)
        await _until(lambda: server.protocol is not None)
        first = server.protocol
        fresh_redis.proc.send_signal(signal.SIGSTOP)  # half-open: connected, silent
        try:
            clock.advance(pubsub.PING_INTERVAL)  # PING sent
            clock.advance(pubsub.PING_TIMEOUT)  # no answer: the connection is dropped
            await _until(lambda: server.protocol is not first)
        finally:
            fresh_redis.proc.send_signal(signal.SIGCONT)
        while server.protocol is None:  # reconnect attempts run on the fake clock
            clock.advance(1)
            await task.deferLater(reactor, 0.05)
        await _until(lambda: listener.received == [GAP_COMMENT])
    finally:
        await streams.stopService()


class PausableStream:
    """Just enough of a stream for the watch: it records aborts."""

    def __init__(self) -> None:
        self.aborted: list[str] = []

    def abort(self, why: str, reason: str) -> None:
        self.aborted.append(f"{reason}: {why}")


def test_streams_paused_longer_than_the_limit_are_aborted() -> None:
    from sse_offload.stream import SlowClientWatch

    clock = task.Clock()
    watch = SlowClientWatch(clock, max_paused=30)
    watch.start()
    stuck, recovering = PausableStream(), PausableStream()
    watch.paused[stuck] = clock.seconds()  # as SSEStream.pauseProducing records it
    watch.paused[recovering] = clock.seconds()
    clock.advance(20)
    del watch.paused[recovering]  # resumeProducing
    clock.advance(11)
    assert stuck.aborted == ["slow_paused: slow client: paused for more than 30s"]
    assert recovering.aborted == []
    assert watch.aborted == 1
    watch.stop()
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_messages_over_the_size_limit_are_dropped_and_counted(redis_server, redis):
    from twisted.internet import reactor

    address = parse_address(redis_server.address)
    streams = make_streams(reactor, address, keepalive=0, max_message_size=1000)
    streams.startService()
    try:
        listener = RecordingListener()
        remove = subscribe(streams, address, b"big", listener)
        await _until(lambda: redis.numsub("big") == 1)
        redis.publish("big", b"x" * 1001)
        redis.publish("big", b"y" * 1000)
        await _until(lambda: listener.received)
        assert listener.received == [b"data: " + b"y" * 1000 + b"\n\n"]
        assert streams.stats["messages_dropped_too_large"] == 1
        remove()
    finally:
        await streams.stopService()


def test_shutdown_sends_retry_hints_then_closes_streams_over_the_drain_period() -> None:
    clock = task.Clock()
    streams = make_streams(clock, None, keepalive=0, clock=clock, drain=1.0)
    streams.startService()
    server = streams.hub.server(parse_address("/nonexistent/redis.sock"))
    sse = [RecordingListener(Mode.SSE) for _ in range(50)]
    raw = RecordingListener(Mode.RAW)
    for s in [*sse, raw]:
        server.add(b"k", s)
    done = streams.stopService()
    assert all(s.received and s.received[0].startswith(b"retry: ") for s in sse)
    assert raw.received == []
    closed_at_start = sum(s.closed for s in [*sse, raw])
    assert 0 < closed_at_start < 51, "closes are spread, not all at once"
    clock.pump([0.1] * 5)
    assert not done.called
    clock.pump([0.1] * 6)  # 1.1 s in all
    assert all(s.closed for s in [*sse, raw])
    assert done.called
    assert clock.getDelayedCalls() == []
