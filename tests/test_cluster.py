"""A real Redis Cluster (cluster_helpers.py) behind real gateways: sharded and classic
channels, a slot migrated under an open stream, the publish endpoint, what is refused.

The failover acceptance test (three gateways, 3,000 clients, a master killed) is in
tests/test_cluster_failover.py, on a cluster of its own.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import jwt
import pytest

from cluster_helpers import RedisCluster, redis7_binaries
from gateway_helpers import GatewayProcess, port_open
from redis_helpers import RedisServer, free_port, http_get, wait_for, wait_for_http
from sse_client import SSEClient
from sse_offload.answers import CLUSTER_STREAMS, stream_target
from sse_offload.cluster_topology import keyslot
from sse_offload.config import load_rules
from sse_offload.explain import explain
from sse_offload.redis_address import parse_address
from sse_offload.service import GatewayService, check_cluster_use, literal_addresses

RULES = """\
[uwsgi]
route = ^/s/(.+)$ sse:ssubscribe=$1
route = ^/c/(.+)$ sse:subscribe=$1
route = ^/both$ sse:ssubscribe=alpha;{alpha}.2,subscribe=gamma,psubscribe=del*
"""
SECRET = "cluster-publish-secret-" + "x" * 32


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, redis_cluster: RedisCluster):
    """One gateway on the module's cluster, with the publish endpoint."""
    publish_port, admin_port = free_port(), free_port()
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gwc"), RULES, redis=redis_cluster.seeds(),
        args=("--keepalive", "0", "--publish", str(publish_port), "--publish-key", SECRET,
              "--admin", str(admin_port)),
    )
    gw.start()
    gw.publish_port = publish_port  # type: ignore[attr-defined]
    gw.admin_port = admin_port  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def stream(gw: GatewayProcess, path: str) -> SSEClient:
    client = SSEClient(gw.port, path)
    assert client.read_head() == 200
    return client


def wait_subscribed(cluster: RedisCluster, channel: str, count: int = 1) -> None:
    wait_for(lambda: cluster.shard_numsub(channel) == count, timeout=15,
             what=f"{count} subscriber(s) of sharded channel {channel} at its master")


def wait_classic(cluster: RedisCluster, channel: str) -> None:
    def subscribed() -> bool:
        return any(n.call("PUBSUB", "NUMSUB", channel)[1] for n in cluster.nodes if n.alive())

    wait_for(subscribed, timeout=15, what=f"a subscriber of channel {channel}")


def test_keyslot_agrees_with_the_cluster(redis_cluster: RedisCluster) -> None:
    rng = random.Random(13)
    alphabet = "ab{}xyz.:-{}é"
    names = ["", "{", "}", "{}", "a{}b", "{a}{b}", "x{y}", "é"] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(200)
    ]
    node = redis_cluster.any_alive()
    client = node.client()
    try:
        for name in names:
            assert keyslot(name.encode()) == client.call("CLUSTER", "KEYSLOT", name), name
    finally:
        client.close()


def test_sharded_and_classic_channels_reach_their_streams(
    gateway: GatewayProcess, redis_cluster: RedisCluster
) -> None:
    sharded, classic, both = stream(gateway, "/s/news"), stream(gateway, "/c/sport"), stream(
        gateway, "/both")
    for channel in ("news", "alpha", "{alpha}.2"):
        wait_subscribed(redis_cluster, channel)
    wait_classic(redis_cluster, "sport")
    wait_classic(redis_cluster, "gamma")
    assert redis_cluster.spublish("news", "s1") == 1
    redis_cluster.publish("sport", "c1")
    assert sharded.read_events(1) == ["s1"]
    assert classic.read_events(1) == ["c1"]
    redis_cluster.spublish("alpha", "a")
    redis_cluster.spublish("{alpha}.2", "b")
    redis_cluster.publish("gamma", "g")
    redis_cluster.publish("delta", "d")  # the pattern del*
    assert sorted(both.read_events(4)) == ["a", "b", "d", "g"]
    assert "news" not in sharded.body.decode() and sharded.events() == ["s1"]
    admin = f"http://127.0.0.1:{gateway.admin_port}"  # type: ignore[attr-defined]
    wait_for_http(f"{admin}/health", lambda status, body: status == 200, what="ready")
    _, metrics = http_get(f"{admin}/metrics")
    server = redis_cluster.seeds().replace("redis-cluster://", "")
    assert f'sse_offload_redis_connected{{server="redis-cluster://{server}"}} 1.0' in (
        metrics.decode())
    assert f'sse_offload_channels{{server="redis-cluster://{server}"}} 5.0' in metrics.decode()
    for client in (sharded, classic, both):
        client.close()
    wait_subscribed(redis_cluster, "news", 0)
    # our own SUNSUBSCRIBE's answer is not taken for Redis dropping the channel
    assert "dropped sharded channel news " not in gateway.log()


def _migrate(cluster: RedisCluster, slot: int, source, target) -> None:
    """Move an empty slot from ``source`` to ``target`` by hand: IMPORTING, MIGRATING, then
    NODE on every master, as ``redis-cli --cluster reshard`` does."""
    source_id, target_id = source.call("CLUSTER", "MYID"), target.call("CLUSTER", "MYID")
    target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    cluster.roles()
    for node in [target, source] + [n for n in cluster.nodes if n.role == "master"]:
        node.call("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def test_a_resharded_slot_moves_the_subscription_and_keeps_the_stream(
    gateway: GatewayProcess, redis_cluster: RedisCluster
) -> None:
    client = stream(gateway, "/s/moving")
    wait_subscribed(redis_cluster, "moving")
    redis_cluster.spublish("moving", "before")
    assert client.read_events(1) == ["before"]
    slot = redis_cluster.keyslot("moving")
    source = redis_cluster.master_of("moving")
    redis_cluster.roles()
    target = next(n for n in redis_cluster.nodes if n.role == "master" and n is not source)
    _migrate(redis_cluster, slot, source, target)
    wait_for(lambda: redis_cluster.master_of("moving") is target, what="the new owner")
    wait_for(lambda: target.call("PUBSUB", "SHARDNUMSUB", "moving")[1] == 1, timeout=15,
             what="the gateway subscribed at the slot's new master")
    assert source.call("PUBSUB", "SHARDNUMSUB", "moving")[1] == 0
    assert target.call("SPUBLISH", "moving", "after") == 1
    client.read_until(lambda c: "after" in c.events(), what="the message at the new owner")
    assert not client.closed
    assert client.events() == ["before", "after"]
    log = gateway.log()
    assert f"moved from {source.address} to {target.address}" in log
    assert "moving" in log.split(f"moved from {source.address}")[1].splitlines()[0]
    client.close()


def _post(port: int, path: str, body: dict) -> tuple[int, dict]:
    import http.client

    token = jwt.encode({"sse": {"publish": ["*"]}}, SECRET, algorithm="HS256")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    answer = json.loads(response.read() or b"null")
    conn.close()
    return response.status, answer



def test_the_publish_endpoint_publishes_to_a_cluster(
    gateway: GatewayProcess, redis_cluster: RedisCluster
) -> None:
    port = gateway.publish_port  # type: ignore[attr-defined]
    wait_for(lambda: port_open(port), timeout=20, what="the publish listener")
    sharded, classic = stream(gateway, "/s/orders"), stream(gateway, "/c/prices")
    wait_subscribed(redis_cluster, "orders")
    wait_classic(redis_cluster, "prices")
    # every channel name lands on some master: the endpoint follows MOVED to it
    names = [f"orders.{i}" for i in range(3)] + ["orders"]
    for name in names:
        status, answer = _post(port, f"/publish/{name}?to=sharded", {"data": f"to {name}"})
        assert status == 200, answer
    assert answer == {"receivers": 1}
    status, answer = _post(port, "/publish/prices", {"data": "up"})
    assert status == 200, answer
    assert sharded.read_events(1) == ["to orders"]
    assert classic.read_events(1) == ["up"]
    status, answer = _post(port, "/publish/x?to=stream", {"data": "kept"})
    assert status == 200 and "id" in answer  # XADD at the key's master
    assert redis_cluster.master_of("x").call("XLEN", "x") == 1
    sharded.close()
    classic.close()


@pytest.mark.parametrize("rules", [
    "[uwsgi]\nroute = ^/x$ sse:stream=feed\n",
    "[uwsgi]\nmirror = clock\nroute = ^/c$ sse:clock\n",
])
def test_streams_mode_and_the_mirror_refuse_a_cluster_at_start_up(tmp_path: Path,
                                                                   rules: str) -> None:
    gw = GatewayProcess(tmp_path, rules, redis="redis-cluster://127.0.0.1:1,127.0.0.1:2")
    status, output = gw.run_to_exit()
    assert status != 0
    assert "do not run on a Redis Cluster address" in output, output


def test_a_standalone_redis_named_as_a_cluster_is_said_so(
    gateway_factory, redis_server: RedisServer
) -> None:
    gw = gateway_factory(RULES, redis=f"redis-cluster://{redis_server.address}")
    gw.start()
    client = stream(gw, "/s/news")  # the stream waits, as for an unreachable Redis
    gw.wait_log("not in cluster mode")
    assert "is it a cluster? a standalone Redis takes redis://" in gw.log()
    assert not client.closed
    client.close()


def test_ssubscribe_on_a_standalone_redis_7(gateway_factory, tmp_path: Path) -> None:
    found = redis7_binaries()
    if found is None:
        pytest.skip("needs redis-server 7 (sharded pub/sub)")
    server = RedisServer(tmp_path / "r7", binary=found[0]).start()
    try:
        gw = gateway_factory(RULES, redis=server.address)
        gw.start()
        client = stream(gw, "/s/news")
        redis = server.client()
        wait_for(lambda: redis.call("PUBSUB", "SHARDNUMSUB", "news")[1] == 1, timeout=15,
                 what="the sharded subscription")
        assert redis.call("PUBLISH", "news", "classic") == 0  # another namespace
        assert redis.call("SPUBLISH", "news", "sharded") == 1
        assert client.read_events(1) == ["sharded"]
        client.close()
        redis.close()
    finally:
        server.stop()


def test_workers_of_one_gateway_each_subscribe_through_the_cluster(
    gateway_factory, redis_cluster: RedisCluster
) -> None:
    gw = gateway_factory(RULES, redis=redis_cluster.seeds(), args=("--processes", "2"))
    gw.start()
    clients = [stream(gw, "/s/workers") for _ in range(8)]  # spread over both workers
    wait_for(lambda: redis_cluster.shard_numsub("workers") == 2, timeout=20,
             what="one subscription per worker")
    redis_cluster.spublish("workers", "w")
    for client in clients:
        assert client.read_events(1) == ["w"]
        client.close()


def test_mules_get_a_node_and_the_cluster() -> None:
    root = GatewayService(None)
    root.redis_address = parse_address("redis-cluster://u:p%2Cw@10.0.0.1:7000,10.0.0.2:7000")
    assert root.mule_environment() == {
        "REDIS_URL": "redis://u:p,w@10.0.0.1:7000",
        "REDIS_SERVER": "10.0.0.1:7000",
        "REDIS_CLUSTER": "redis-cluster://u:p%2Cw@10.0.0.1:7000,10.0.0.2:7000",
    }


def test_a_stream_on_an_expanded_cluster_server_is_refused_at_request_time(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.ini"
    rules.write_text(
        "[uwsgi]\n"
        "route = ^/lit$ sse:server=redis-cluster://10.0.0.1:7000,subscribe=x\n"
        "route = ^/s/(.*)$ sse:server=redis-cluster://$1,stream=feed\n"
    )
    config = load_rules(str(rules))
    default = parse_address("127.0.0.1:6379")
    check_cluster_use(config, default)  # start-up cannot tell where $1 points
    result = explain(config, "GET /s/10.0.0.1:7000")
    assert result.offload is not None
    allowed = {a.key for a in literal_addresses(config)}
    assert stream_target(result.offload, default, allowed)[1] == CLUSTER_STREAMS
    assert f"refused ({CLUSTER_STREAMS}): the gateway answers 500" in result.lines[-1]


def test_an_unreachable_cluster_behaves_like_an_unreachable_redis(gateway_factory) -> None:
    seeds = f"redis-cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    gw = gateway_factory(RULES, redis=seeds, args=("--redis-outage-limit", "2"))
    gw.start()
    gw.wait_log("no node gave the slot map")
    started = time.monotonic()
    client = stream(gw, "/s/news")
    client.wait_closed(timeout=15)  # closed by the outage limit, not at once
    assert time.monotonic() - started > 0.5
