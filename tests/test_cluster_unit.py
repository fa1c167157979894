"""Redis Cluster support without a cluster: slots, slot maps, redirects, the hub protocol's
sharded frames, and the cluster's moves and outages on a fake clock with fake nodes.

The real cluster's behaviour is in tests/test_cluster.py; the figures below that come from
Redis (slots of names, the shape of CLUSTER SHARDS) were read from redis-server 7.0.
"""

from __future__ import annotations

import collections

import pytest
import txredisapi
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from sse_offload import cluster_probe
from sse_offload.cluster import ClusterConnection
from sse_offload.cluster_probe import POLL_MAX, ClusterUnreachable, NotACluster
from sse_offload.cluster_topology import (
    NodeInfo,
    Redirect,
    Shard,
    Topology,
    TopologyError,
    crc16,
    keyslot,
    parse_redirect,
    parse_shards,
    parse_slots,
)
from sse_offload.redis_address import parse_address
from sse_offload.redis_protocol import CHANNEL, PATTERN, SHARDED, HubFactory, encode_command

# --- slots ---------------------------------------------------------------------------------

#: What CLUSTER KEYSLOT answered for these names (redis-server 7.0.15).
KEYSLOTS = [
    (b"foo", 12182),
    (b"{user1000}.following", 3443),
    (b"foo{}{bar}", 8363),  # an empty tag does not count: the whole name is hashed
    (b"foo{{bar}}zap", 4015),  # the tag is "{bar", up to the first "}"
    (b"{}", 15257),
    (b"a{b", 13340),  # no closing brace: the whole name
    (b"news", 5161),
]


def test_crc16_is_xmodem() -> None:
    assert crc16(b"123456789") == 0x31C3  # the standard check value of CRC16/XMODEM


@pytest.mark.parametrize(("name", "slot"), KEYSLOTS)
def test_keyslot_matches_redis(name: bytes, slot: int) -> None:
    assert keyslot(name) == slot


def test_a_hash_tag_puts_names_in_one_slot() -> None:
    assert keyslot(b"{room}.a") == keyslot(b"{room}.b") == keyslot(b"room")


# --- slot maps -----------------------------------------------------------------------------


def _node(port: int, role: str, health: bytes = b"online", endpoint: bytes = b"127.0.0.1"):
    return [b"id", b"%040d" % port, b"port", port, b"ip", b"127.0.0.1", b"endpoint", endpoint,
            b"role", role.encode(), b"replication-offset", 14, b"health", health]


#: CLUSTER SHARDS as redis-server 7.0 answered it after a failover: the dead master is a
#: shard of its own with no slots and health "fail".
SHARDS_REPLY = [
    [b"slots", [10923, 16383], b"nodes", [_node(7002, "master"), _node(7005, "replica")]],
    [b"slots", [0, 5460], b"nodes", [_node(7003, "master")]],
    [b"slots", [], b"nodes", [_node(7000, "master", b"fail")]],
    [b"slots", [5461, 10922], b"nodes", [_node(7001, "master"), _node(7004, "replica")]],
]


def test_parse_shards_maps_every_slot_to_its_master() -> None:
    topology = parse_shards(SHARDS_REPLY, "127.0.0.1")
    assert topology.covered() == 16384
    assert topology.owner(0) == ("127.0.0.1", 7003)
    assert topology.owner(5461) == ("127.0.0.1", 7001)
    assert topology.owner(16383) == ("127.0.0.1", 7002)
    assert [n.key[1] for n in topology.masters()] == [7002, 7003, 7001]
    assert topology.role(("127.0.0.1", 7005)) == "replica"
    dead = [n for n in topology.nodes() if n.port == 7000]
    assert dead and dead[0].failed
    assert topology.summary() == (
        "127.0.0.1:7001 (5462 slots), 127.0.0.1:7002 (5461 slots), 127.0.0.1:7003 (5461 slots)"
    )


def test_parse_shards_endpoints() -> None:
    reply = [
        [b"slots", [0, 99], b"nodes", [_node(7000, "master", endpoint=b"")]],  # as asked
        [b"slots", [100, 199], b"nodes", [_node(7001, "master", endpoint=b"?")]],  # its ip
        [b"slots", [200, 16383], b"nodes", [_node(7002, "master", endpoint=b"redis-2.lan")]],
    ]
    topology = parse_shards(reply, "10.1.1.1")
    assert topology.owner(0) == ("10.1.1.1", 7000)
    assert topology.owner(100) == ("127.0.0.1", 7001)
    assert topology.owner(300) == ("redis-2.lan", 7002)


def test_parse_slots_groups_ranges_by_master() -> None:
    reply = [
        [0, 5460, [b"127.0.0.1", 7000, b"a" * 40, []], [b"127.0.0.1", 7003, b"d" * 40, []]],
        [5461, 10922, [b"", 7001, b"b" * 40, []]],  # empty endpoint: the node asked
        [10923, 16000, [b"127.0.0.1", 7002, b"c" * 40, []]],
        [16001, 16383, [b"127.0.0.1", 7000, b"a" * 40, []]],
    ]
    topology = parse_slots(reply, "10.0.0.9")
    assert topology.owner(16100) == topology.owner(0) == ("127.0.0.1", 7000)
    assert topology.owner(6000) == ("10.0.0.9", 7001)
    assert topology.role(("127.0.0.1", 7003)) == "replica"
    assert len(topology.shards) == 3


@pytest.mark.parametrize("reply", [
    None, b"OK", 3, [b"slots"], [[b"slots", [0, 99999], b"nodes", []]],
    [[b"slots", [5, 1], b"nodes", []]], [[b"nodes", [[b"port"]]]],
])
def test_garbage_is_a_topology_error(reply: object) -> None:
    with pytest.raises(TopologyError):
        parse_shards(reply, "h")


_junk = st.recursive(
    st.none() | st.integers(-5, 70000) | st.binary(max_size=12)
    | st.sampled_from([b"slots", b"nodes", b"port", b"role", b"master", b"endpoint"]),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=30,
)


@given(_junk)
def test_any_reply_is_a_map_or_a_topology_error(reply: object) -> None:
    for parse in (parse_shards, parse_slots):
        try:
            parse(reply, "h")
        except TopologyError:
            pass


@pytest.mark.parametrize(("text", "expected"), [
    ("MOVED 3999 127.0.0.1:6381", Redirect("MOVED", 3999, ("127.0.0.1", 6381))),
    ("ASK 3999 10.0.0.2:7000", Redirect("ASK", 3999, ("10.0.0.2", 7000))),
    ("MOVED 1 ::1:7000", Redirect("MOVED", 1, ("::1", 7000))),
    ("MOVED 1 :7000", Redirect("MOVED", 1, ("asked", 7000))),  # endpoint unknown to Redis
    ("ERR unknown command", None),
    ("MOVED 99999 h:1", None),
    ("MOVED x h:1", None),
    ("MOVED 1 h", None),
    ("CLUSTERDOWN The cluster is down", None),
])
def test_parse_redirect(text: str, expected: Redirect | None) -> None:
    assert parse_redirect(text, "asked") == expected


# --- the hub protocol's sharded frames ------------------------------------------------------


class _Owner:
    """A protocol owner that records what the protocol reports."""

    def __init__(self) -> None:
        self.address = parse_address("127.0.0.1:7000")
        self.max_message_size = 100
        self.log = type("Log", (), {"error": lambda *a, **k: None})()
        self.delivered: list[tuple[str, list[tuple[bytes, bytes]]]] = []
        self.dropped_names: list[bytes] = []
        self.sunsubscribes: list[bytes] = []
        self.errors: list[str] = []
        self.ready = False

    def connection_ready(self, p) -> None:
        self.ready = True

    def connection_lost(self, p, reason) -> None:
        pass

    def deliver(self, batch, kind=CHANNEL) -> None:
        self.delivered.append((kind, batch))

    def dropped(self, channel: bytes, size: int) -> None:
        self.dropped_names.append(channel)

    def sunsubscribed(self, channel: bytes) -> None:
        self.sunsubscribes.append(channel)

    def reply_error(self, error: Exception) -> None:
        self.errors.append(str(error))

    def log_failure(self, failure, why) -> None:
        raise AssertionError(why)


def _resp(*items: bytes) -> bytes:
    return encode_command(*items)  # an array of bulk strings, as Redis pushes frames


def test_sharded_frames_are_one_batch_per_kind_and_sunsubscribe_and_errors_reach_the_owner():
    owner = _Owner()
    p = HubFactory(owner).buildProtocol(None)  # type: ignore[arg-type]
    p.makeConnection(StringTransport())
    assert owner.ready
    p.dataReceived(
        b"*3\r\n$10\r\nssubscribe\r\n$1\r\na\r\n:1\r\n"
        + _resp(b"smessage", b"a", b"1") + _resp(b"message", b"c", b"2")
        + _resp(b"smessage", b"a", b"3") + _resp(b"smessage", b"a", b"x" * 101)
        + b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\na\r\n:0\r\n"
        + b"-MOVED 866 127.0.0.1:7001\r\n"
    )
    assert owner.delivered == [
        (CHANNEL, [(b"c", b"2")]),
        (SHARDED, [(b"a", b"1"), (b"a", b"3")]),
    ]
    assert owner.dropped_names == [b"a"]
    assert owner.sunsubscribes == [b"a"]
    assert owner.errors == ["MOVED 866 127.0.0.1:7001"]


# --- the cluster on a fake clock ------------------------------------------------------------

A, B, C, A2 = ("10.0.0.1", 7000), ("10.0.0.2", 7000), ("10.0.0.3", 7000), ("10.0.0.4", 7000)


def three_masters(first: tuple[str, int] = A) -> Topology:
    return Topology((
        Shard(((0, 5460),), NodeInfo(*first), (NodeInfo(*A2, role="replica"),)),
        Shard(((5461, 10922),), NodeInfo(*B)),
        Shard(((10923, 16383),), NodeInfo(*C)),
    ))


def _name_in(low: int, high: int, prefix: bytes = b"ch") -> bytes:
    return next(b"%s%d" % (prefix, i) for i in range(100000)
                if low <= keyslot(b"%s%d" % (prefix, i)) <= high)


IN_A, IN_B = _name_in(0, 5460), _name_in(5461, 10922)


class FakeSub:
    def __init__(self, name: bytes) -> None:
        self.name, self.members = name, []

    def add(self, listener) -> None:
        self.members.append(listener)

    def remove(self, listener) -> None:
        self.members.remove(listener)

    def __len__(self) -> int:
        return len(self.members)

    def deliver(self, payloads) -> None:
        pass

    def listeners(self):
        return iter(self.members)


class FakeHub:
    def __init__(self, outage_limit: float | None = None) -> None:
        self.reactor = None
        self.clock = task.Clock()
        self.stats: collections.Counter[str] = collections.Counter()
        self.outage_limit = outage_limit
        self.max_message_size = 1 << 20
        self.subscription = FakeSub
        self.back: list[tuple[list[str], float]] = []
        self.expired: list[list[str]] = []
        self.events = self

    def is_implicit_default(self, address) -> bool:
        return False

    def redis_back(self, server, seconds: float) -> None:
        self.back.append((sorted(server.listeners()), seconds))

    def redis_expired(self, server) -> None:
        self.expired.append(sorted(server.listeners()))


class FakeNode:
    """A node connection: records the commands it would write while connected."""

    def __init__(self, hub, address, owner) -> None:
        self.address, self.owner = address, owner
        self.protocol = None
        self.channels: dict = {}
        self.patterns: dict = {}
        self.sharded: dict = {}
        self.written: list[tuple[str, str, bytes]] = []
        self.running = False

    def start(self) -> None:
        self.running = True

    def stop(self):
        self.running = False
        return defer.succeed(None)

    def subscribe(self, channel: bytes, kind: str) -> None:
        if self.protocol is not None:
            self.written.append(("sub", kind, channel))

    def unsubscribe(self, channel: bytes, kind: str) -> None:
        if self.protocol is not None:
            self.written.append(("unsub", kind, channel))

    def connect(self) -> None:
        self.protocol = object()
        for kind, subs in ((CHANNEL, self.channels), (PATTERN, self.patterns),
                           (SHARDED, self.sharded)):
            self.written += [("sub", kind, name) for name in subs]
        self.owner.node_ready(self)

    def lose(self) -> None:
        self.protocol = None
        self.owner.node_lost(self)


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[defer.Deferred]:
    """The map requests the cluster makes, each fired by the test."""
    pending: list[defer.Deferred] = []

    def fake_fetch(reactor, clock, cluster, candidates):
        d: defer.Deferred = defer.Deferred()
        d.candidates = candidates  # type: ignore[attr-defined]
        pending.append(d)
        return d

    monkeypatch.setattr(cluster_probe, "fetch_topology", fake_fetch)
    return pending


def make_cluster(hub: FakeHub) -> ClusterConnection:
    address = parse_address("redis-cluster://10.0.0.1:7000,10.0.0.2:7000")
    cluster = ClusterConnection(hub, address, FakeNode)  # type: ignore[arg-type]
    cluster.choose = lambda keys: keys[0]  # the first master, not one at random
    cluster.start()
    return cluster


def test_channels_go_to_their_slot_master_and_classic_ones_to_one_master(fetches) -> None:
    hub = FakeHub()
    cluster = make_cluster(hub)
    assert fetches[0].candidates == [A, B]  # the seeds
    assert cluster.add(IN_A, "s1", SHARDED) and cluster.add(IN_B, "s2", SHARDED)
    assert cluster.add(b"news", "c1", CHANNEL) and cluster.add(b"n.*", "p1", PATTERN)
    fetches.pop().callback((three_masters(), A))
    assert set(cluster.nodes) == {A, B}  # no connection to C: nothing of ours is there
    assert all(n.running for n in cluster.nodes.values())
    for node in cluster.nodes.values():
        node.connect()
    assert cluster.nodes[A].written == [
        ("sub", CHANNEL, b"news"), ("sub", PATTERN, b"n.*"), ("sub", SHARDED, IN_A)
    ]
    assert cluster.nodes[B].written == [("sub", SHARDED, IN_B)]
    assert hub.back == []  # nothing was missed: no gap notice
    assert cluster.connected and cluster.protocol is not None
    assert hub.clock.getDelayedCalls() == []  # settled: no poll
    cluster.remove(IN_B, "s2", SHARDED)
    assert B not in cluster.nodes  # its only channel left: the connection is closed
    info = cluster.describe()
    assert info["kind"] == "cluster" and info["connected"] and info["channels"] == 2


def test_a_moved_answer_moves_the_slot_channels_to_the_named_node(fetches) -> None:
    hub = FakeHub()
    cluster = make_cluster(hub)
    fetches.pop().callback((three_masters(), A))
    cluster.add(IN_A, "s1", SHARDED)
    node_a = cluster.nodes[A]
    node_a.connect()
    moved = txredisapi.ResponseError(f"MOVED {keyslot(IN_A)} 10.0.0.3:7000")
    node_a.owner.node_error(node_a, moved)
    assert cluster.holder[IN_A] == C and IN_A not in node_a.sharded
    assert ("unsub", SHARDED, IN_A) not in node_a.written  # Redis never subscribed it there
    assert len(fetches) == 1  # the map is asked for again
    cluster.nodes[C].connect()
    assert cluster.nodes[C].written == [("sub", SHARDED, IN_A)]
    assert [listeners for listeners, _ in hub.back] == [["s1"]]  # a gap notice
    assert cluster.topology is not None and cluster.topology.owner(keyslot(IN_A)) == C


def test_a_dropped_channel_waits_and_moves_with_the_new_map(fetches) -> None:
    hub = FakeHub()
    cluster = make_cluster(hub)
    fetches.pop().callback((three_masters(), A))
    cluster.add(IN_A, "s1", SHARDED)
    cluster.nodes[A].connect()
    cluster.nodes[A].owner.node_dropped(cluster.nodes[A], IN_A)  # its slot migrated
    assert (SHARDED, IN_A) in cluster.waiting and not cluster.connected
    moved = three_masters()
    moved.moved(keyslot(IN_A), B)
    fetches.pop().callback((moved, B))
    assert cluster.holder[IN_A] == B
    cluster.nodes[B].connect()
    assert hub.back == [(["s1"], 0.0)]
    assert not cluster.waiting


def test_a_lost_master_keeps_its_streams_until_its_replica_takes_over(fetches) -> None:
    hub = FakeHub()
    cluster = make_cluster(hub)
    cluster.add(IN_A, "s1", SHARDED)
    cluster.add(IN_B, "s2", SHARDED)
    cluster.add(b"news", "c1", CHANNEL)
    fetches.pop().callback((three_masters(), A))
    assert cluster.classic == A
    for node in list(cluster.nodes.values()):
        node.connect()
    node_a = cluster.nodes[A]
    node_a.lose()
    assert len(fetches) == 1 and fetches[0].candidates[-1] == A  # the lost node asked last
    fetches.pop().callback((three_masters(), B))  # no takeover yet
    assert cluster.classic == B  # classic pub/sub works on any node: moved at once
    assert ("sub", CHANNEL, b"news") in cluster.nodes[B].written
    assert hub.back == [(["c1"], 0.0)]
    assert cluster.holder[IN_A] == A  # a sharded channel waits for its shard's new master
    delays = []
    for _ in range(6):  # while it waits the map is polled, at least every POLL_MAX
        (call,) = hub.clock.getDelayedCalls()
        delays.append(call.getTime() - hub.clock.seconds())
        hub.clock.advance(delays[-1])
        fetches.pop().callback((three_masters(), B))
    assert max(delays) == pytest.approx(POLL_MAX)
    hub.clock.advance(0.5)
    (call,) = hub.clock.getDelayedCalls()
    hub.clock.advance(call.getTime() - hub.clock.seconds())
    fetches.pop().callback((three_masters(first=A2), B))  # the replica took over
    assert cluster.holder[IN_A] == A2 and A not in cluster.nodes and not node_a.running
    cluster.nodes[A2].connect()
    (listeners, seconds), = hub.back[1:]
    assert listeners == ["s1"] and seconds > 0
    assert cluster.connected and hub.clock.getDelayedCalls() == []


def test_the_outage_limit_closes_only_the_streams_that_waited_too_long(fetches) -> None:
    hub = FakeHub(outage_limit=10.0)
    cluster = make_cluster(hub)
    cluster.add(IN_A, "s1", SHARDED)
    cluster.add(IN_B, "s2", SHARDED)
    fetches.pop().callback((three_masters(first=A), A))
    for node in list(cluster.nodes.values()):
        node.connect()
    cluster.nodes[A].lose()
    for _ in range(30):  # polls find no takeover
        for d in list(fetches):
            fetches.remove(d)
            d.callback((three_masters(), B))
        hub.clock.advance(0.5)
    assert hub.expired == [["s1"]]  # s2's node never went away
    assert not cluster.add(IN_A, "late", SHARDED)  # a new stream does not wait either
    assert cluster.add(IN_B, "late", SHARDED)
    assert cluster.describe()["expired"]


def test_an_unreachable_cluster_is_asked_again_with_backoff(fetches) -> None:
    hub = FakeHub()
    cluster = make_cluster(hub)
    assert cluster.add(b"news", "c1", CHANNEL)
    delays = []
    for _ in range(4):
        fetches.pop().errback(ClusterUnreachable("connection refused"))
        (call,) = hub.clock.getDelayedCalls()
        delays.append(call.getTime() - hub.clock.seconds())
        hub.clock.advance(delays[-1])
    assert delays == sorted(delays) and delays[-1] > POLL_MAX  # the hub's backoff, uncapped
    info = cluster.describe()
    assert not info["connected"] and info["down_since"] == 0.0
    fetches.pop().errback(NotACluster("not in cluster mode"))  # logged with a hint
    cluster.stop()
    assert hub.clock.getDelayedCalls() == []


def test_a_garbage_error_is_logged_and_the_map_asked_for_again(fetches) -> None:
    hub = FakeHub()
    cluster = make_cluster(hub)
    fetches.pop().callback((three_masters(), A))
    cluster.add(IN_A, "s1", SHARDED)
    node_a = cluster.nodes[A]
    node_a.connect()
    node_a.owner.node_error(node_a, txredisapi.ResponseError("ERR something odd"))
    assert len(fetches) == 1 and cluster.holder[IN_A] == A
