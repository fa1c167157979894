"""The admin listener in-process: /metrics parses with prometheus-client and moves."""

from __future__ import annotations

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.protocols.policies import WrappingFactory

from sse_offload.admin import admin_site
from sse_offload.redis_address import parse_address
from test_hub import RecordingListener, _until
from twisted_helpers import make_streams, subscribe


async def _get(port: int, path: str) -> tuple[int, bytes]:
    import treq

    # Not persistent: treq's global pool would keep the connection open after the test,
    # and the server's idle timeout would fire (HTTPChannel.forceAbortClient) in a later
    # test's reactor.
    response = await treq.get(f"http://127.0.0.1:{port}{path}", persistent=False)
    return response.code, await response.content()


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest_twisted.ensureDeferred
async def test_metrics_and_health_follow_the_hub(redis_server, redis):
    from twisted.internet import reactor

    address = parse_address(redis_server.address)
    streams = make_streams(reactor, address, keepalive=0)
    # Wrapped to see its connections: none may outlive the test (see _get).
    site = WrappingFactory(admin_site(streams.hub))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        code, body = await _get(port.getHost().port, "/health")
        assert code == 503 and b"not ready" in body
        streams.startService()
        await _until(lambda: streams.hub.server(address).protocol is not None)
        code, body = await _get(port.getHost().port, "/health")
        assert (code, body) == (200, b"ready\n")

        listeners = [RecordingListener() for _ in range(3)]
        removers = [subscribe(streams, address, b"m", x) for x in listeners]
        await _until(lambda: redis.numsub("m") == 1)
        redis.publish("m", "hello")
        await _until(lambda: all(x.received for x in listeners))
        code, body = await _get(port.getHost().port, "/metrics")
        assert code == 200
        samples = _samples(body)
        assert samples[("sse_offload_clients", ())] == 3
        assert samples[("sse_offload_channels", (("server", str(address)),))] == 1
        assert samples[("sse_offload_redis_connected", (("server", str(address)),))] == 1
        assert samples[("sse_offload_messages_received_total", ())] == 1
        assert samples[("sse_offload_messages_delivered_total", ())] == 3
        assert samples[("sse_offload_bytes_written_total", ())] == 3 * len(b"data: hello\n\n")
        for remove in removers:
            remove()
        await _until(lambda: not site.protocols)
    finally:
        await port.stopListening()
        await streams.stopService()


WORKER_A = """\
# HELP sse_offload_clients Open streams.
# TYPE sse_offload_clients gauge
sse_offload_clients 3.0
# HELP sse_offload_redis_connected 1 while the subscriber connection is up.
# TYPE sse_offload_redis_connected gauge
sse_offload_redis_connected{server="r:1"} 1.0
# HELP sse_offload_messages_delivered_total Messages written to streams (one per stream).
# TYPE sse_offload_messages_delivered_total counter
sse_offload_messages_delivered_total 10.0
# HELP sse_offload_requests_total Requests, by outcome.
# TYPE sse_offload_requests_total counter
sse_offload_requests_total{outcome="stream"} 3.0
"""
WORKER_B = """\
# HELP sse_offload_clients Open streams.
# TYPE sse_offload_clients gauge
sse_offload_clients 4.0
# HELP sse_offload_redis_connected 1 while the subscriber connection is up.
# TYPE sse_offload_redis_connected gauge
sse_offload_redis_connected{server="r:1"} 1.0
sse_offload_redis_connected{server="r:2"} 0.0
# HELP sse_offload_messages_delivered_total Messages written to streams (one per stream).
# TYPE sse_offload_messages_delivered_total counter
sse_offload_messages_delivered_total 5.0
# HELP sse_offload_requests_total Requests, by outcome.
# TYPE sse_offload_requests_total counter
sse_offload_requests_total{outcome="stream"} 4.0
sse_offload_requests_total{outcome="over_capacity"} 2.0
"""


def test_merged_metrics_sum_every_sample_by_name_and_labels() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from sse_offload.admin import _Families, merge_metrics

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(merge_metrics([WORKER_A, WORKER_B])))
    text = generate_latest(registry)
    assert _samples(text) == {
        ("sse_offload_clients", ()): 7,
        ("sse_offload_redis_connected", (("server", "r:1"),)): 2,
        ("sse_offload_redis_connected", (("server", "r:2"),)): 0,
        ("sse_offload_messages_delivered_total", ()): 15,
        ("sse_offload_requests_total", (("outcome", "stream"),)): 7,
        ("sse_offload_requests_total", (("outcome", "over_capacity"),)): 2,
    }
    # the types survive: a counter is still a counter for Prometheus
    assert b"# TYPE sse_offload_messages_delivered_total counter" in text
    assert b"# TYPE sse_offload_clients gauge" in text
    assert merge_metrics([]) == []
