"""The front resource, the fast path and the stream in memory (memory_helpers.Memory: a
real GatewaySite on StringTransport and a fake clock), beside the end-to-end tests that run
twistd. Nothing here opens a socket or talks to Redis.
"""

from __future__ import annotations

import re

import pytest
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import StringTransport

from memory_helpers import RULES, Memory


def _head(data: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"", data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")


FAST = b"GET /ev/news HTTP/1.1\r\nHost: a\r\n\r\n"
#: A repeated header name: the fast path leaves this head to twisted.web.
SLOW = b"GET /ev/news HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n"


@pytest.mark.parametrize("request_bytes", [FAST, SLOW], ids=["fast path", "twisted.web"])
def test_a_stream_gets_its_head_messages_and_keepalives(request_bytes: bytes) -> None:
    memory = Memory()
    protocol, transport = memory.connect(request_bytes)
    head = _head(transport.value())
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/event-stream\r\n" in head
    assert b"Transfer-Encoding: chunked\r\n" in head
    assert memory.listeners(b"news") == 1
    assert memory.gateway.open_streams == 1
    transport.clear()

    memory.publish(b"news", b"one", b"two\nlines")
    assert transport.value() == b"22\r\ndata: one\n\ndata: two\ndata: lines\n\n\r\n"
    transport.clear()
    memory.reactor.advance(15)  # written since the last tick: no keepalive yet
    assert transport.value() == b""
    memory.reactor.advance(15)
    assert transport.value() == b"3\r\n:\n\n\r\n"

    protocol.connectionLost(connectionDone)
    assert memory.listeners(b"news") == 0
    assert memory.gateway.open_streams == 0


def test_both_paths_send_the_same_head() -> None:
    memory = Memory()
    heads = [_head(memory.connect(r)[1].value()) for r in (FAST, SLOW)]
    assert heads[0] == heads[1]


def test_the_same_bytes_object_goes_to_every_listener_of_a_group() -> None:
    writes: list[bytes] = []

    class Recording(StringTransport):
        def write(self, data: bytes) -> None:
            writes.append(data)
            super().write(data)

    memory = Memory()
    for _ in range(3):
        memory.connect(FAST, Recording)
    writes.clear()
    memory.publish(b"news", b"shared")
    assert len(writes) == 3 and len({id(w) for w in writes}) == 1


def test_answers_and_not_found_come_from_twisted_web() -> None:
    memory = Memory()
    _, teapot = memory.connect(b"GET /teapot HTTP/1.1\r\nHost: a\r\n\r\n")
    assert teapot.value().startswith(b"HTTP/1.1 418 ")
    _, missing = memory.connect(b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n")
    assert missing.value().startswith(b"HTTP/1.1 404 ")
    assert missing.value().endswith(b"404 Not Found\n")


def test_the_response_side_applies_to_a_stream_on_the_twisted_web_path() -> None:
    memory = Memory(RULES + "add-header = X-Extra: yes\n")
    protocol, transport = memory.connect(FAST)  # response rules: never the fast path
    assert b"X-Extra: yes\r\n" in _head(transport.value())
    assert memory.listeners(b"news") == 1
    protocol.connectionLost(connectionDone)
    assert memory.listeners(b"news") == 0


def test_a_full_gateway_tells_an_eventsource_to_retry_and_others_503() -> None:
    memory = Memory(max_clients=1)
    memory.connect(FAST)
    _, es = memory.connect(
        b"GET /ev/news HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n"
    )
    assert es.value().startswith(b"HTTP/1.1 200 OK\r\n")
    assert re.search(rb"\r\n\r\nretry: \d+\n\n$", es.value())
    _, other = memory.connect(b"GET /ev/news HTTP/1.1\r\nHost: a\r\n\r\n")
    assert other.value().startswith(b"HTTP/1.1 503 ")
    assert b"Retry-After: 5\r\n" in other.value()
    assert memory.listeners(b"news") == 1


def test_a_paused_client_over_its_backlog_is_dropped_and_the_others_go_on() -> None:
    memory = Memory(max_queued=100)
    _, slow = memory.connect(FAST)
    _, fine = memory.connect(FAST)
    slow.producer.pauseProducing()  # as Twisted does when the client stops reading
    memory.publish(b"news", b"x" * 150)  # queued while paused: 150 > 100
    memory.publish(b"news", b"y")  # the cap is checked before writing: dropped now
    assert slow.disconnecting
    assert memory.listeners(b"news") == 1
    fine.clear()
    memory.publish(b"news", b"still here")
    assert fine.value() == b"12\r\ndata: still here\n\n\r\n"


def test_shutdown_sends_a_retry_hint_then_the_last_chunk() -> None:
    memory = Memory()
    _, transport = memory.connect(FAST)
    transport.clear()
    done = memory.streams.stopService()
    memory.reactor.pump([0.1] * 12)
    assert done.called
    assert re.fullmatch(rb"[0-9a-f]+\r\nretry: \d+\n\n\r\n0\r\n\r\n", transport.value())
    assert transport.disconnecting


def test_a_head_that_never_ends_is_cut_at_the_deadline() -> None:
    memory = Memory()
    _, transport = memory.connect(b"GET /ev/news HTTP/1.1\r\nHost: a\r\n")
    memory.reactor.advance(19)
    assert not transport.disconnecting
    memory.reactor.advance(2)
    assert transport.disconnecting


def test_the_stream_end_log_line_names_the_channel_as_text() -> None:
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event))

    memory = Memory()
    protocol, _ = memory.connect(b"GET /ev/caf%C3%A9 HTTP/1.1\r\nHost: a\r\n\r\n")
    globalLogPublisher.addObserver(observe)
    try:
        protocol.connectionLost(connectionDone)
    finally:
        globalLogPublisher.removeObserver(observe)
    ended = [line for line in lines if line.startswith("stream ")]
    assert len(ended) == 1 and ended[0].startswith("stream café of 10.0.0.7:50000 ended"), lines
