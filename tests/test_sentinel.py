"""Redis Sentinel support (sentinel.py, sentinel_watch.py): discovery, the ROLE check and the
``+switch-master`` watcher, with time on a fake clock and every sentinel and master an
in-process stand-in (sentinel_helpers.FakeRedis) that says exactly what a test needs, lies
included. Real sentinels and a real failover: test_sentinel_failover.py."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, task

from redis_helpers import free_port
from sentinel_helpers import NIL, OK, FakeRedis, array
from sse_offload import sentinel
from sse_offload.redis_address import parse_address
from sse_offload.redis_protocol import client_endpoint
from sse_offload.sentinel import SentinelEndpoint, SentinelError, SentinelGroup
from sse_offload.sentinel_watch import SENTINEL_TIMEOUT
from twisted_helpers import eventually

MASTER_ROLE = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"
REPLICA_ROLE = b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:1\r\n$9\r\nconnected\r\n:0\r\n"


def names(master: FakeRedis | int) -> bytes:
    """A sentinel's get-master-addr-by-name answer naming ``master`` (a fake or a port)."""
    port = master if isinstance(master, int) else master.port
    return array("127.0.0.1", port)


def record(master: FakeRedis, epoch: int) -> bytes:
    """A sentinel's SENTINEL MASTER answer (some of its fields): ``master`` as of ``epoch``."""
    return array(
        "name", "mymaster", "ip", "127.0.0.1", "port", master.port, "flags", "master",
        "config-epoch", epoch,
    )


def knows(master: FakeRedis, epoch: int) -> dict[str, bytes]:
    """A sentinel's answers naming ``master`` as of configuration ``epoch``."""
    return {"SENTINEL": names(master), "SENTINEL MASTER": record(master, epoch)}


def lookups(fake: FakeRedis) -> int:
    """How many times ``fake`` was asked get-master-addr-by-name."""
    return sum(1 for c in fake.asked("SENTINEL") if c[1] == b"get-master-addr-by-name")


class Owner(protocol.Protocol):
    """The protocol a connection's owner (the hub, a link) would put on it."""

    def __init__(self) -> None:
        self.made = False
        self.lost = False
        self.received = b""

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        self.lost = True


class Fakes:
    """Fakes started by a test, and the group under test, all stopped at its end."""

    def __init__(self) -> None:
        self.started: list[FakeRedis] = []
        self.journal: list[tuple[int, list[bytes]]] = []
        self.groups: list[SentinelGroup] = []
        self.clock = task.Clock()

    def __call__(self, **answers: bytes | None) -> FakeRedis:
        fake = FakeRedis(answers, self.journal).listen()
        self.started.append(fake)
        return fake

    def group(self, *ports: int, auth: str = "", query: str = "") -> SentinelGroup:
        from twisted.internet import reactor

        hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
        address = parse_address(f"redis-sentinel://{auth}{hosts}/mymaster{query}")
        group = SentinelGroup(reactor, address, client_endpoint, clock=self.clock)
        self.groups.append(group)
        return group

    def asked(self, fake: FakeRedis, name: str = "SENTINEL") -> bool:
        return any(c[0] == name.encode() for p, c in self.journal if p == fake.port)


@pytest.fixture
def fakes():
    made = Fakes()
    yield made
    for group in made.groups:
        for conn in list(group.connections):
            conn.transport.abortConnection()
        pytest_twisted.blockon(group.stop())
    for fake in made.started:
        pytest_twisted.blockon(defer.ensureDeferred(fake.stop()))


def connect(group: SentinelGroup) -> tuple[Owner, defer.Deferred]:
    owner = Owner()
    d = SentinelEndpoint(group).connect(protocol.Factory.forProtocol(lambda: owner))
    return owner, d


@pytest_twisted.ensureDeferred
async def test_sentinels_down_silent_ignorant_or_talking_nonsense_are_skipped(fakes) -> None:
    master = fakes(ROLE=MASTER_ROLE)
    down = free_port()  # nothing listens there
    silent = fakes(SENTINEL=None)
    ignorant = fakes(SENTINEL=NIL)  # does not know the master's name
    nonsense = fakes(SENTINEL=array("127.0.0.1", "not-a-port"))
    good = fakes(SENTINEL=names(master))
    group = fakes.group(down, silent.port, ignorant.port, nonsense.port, good.port)
    d = defer.ensureDeferred(group.resolve())
    await eventually(lambda: fakes.asked(silent), "the silent sentinel asked")
    assert not fakes.asked(ignorant), "the sentinels are asked in turn, not all at once"
    fakes.clock.advance(SENTINEL_TIMEOUT)
    target, named_by = await d
    assert target == ("127.0.0.1", master.port)
    assert named_by == ("127.0.0.1", good.port)
    asked = [port for port, command in fakes.journal if command[0] == b"SENTINEL"]
    assert asked == [silent.port, ignorant.port, nonsense.port, good.port]
    assert group.sentinels[0] == ("127.0.0.1", good.port), "the one that answered goes first"
    fakes.journal.clear()
    await group.resolve()
    assert [port for port, _ in fakes.journal] == [good.port]


@pytest_twisted.ensureDeferred
async def test_no_sentinel_naming_a_master_fails_the_connect_saying_why_for_each(fakes) -> None:
    down = free_port()
    ignorant = fakes(SENTINEL=NIL)
    group = fakes.group(down, ignorant.port)
    owner, d = connect(group)
    with pytest.raises(SentinelError) as caught:
        await d
    message = str(caught.value)
    assert "no sentinel names master 'mymaster'" in message
    assert f"sentinel 127.0.0.1:{down}: Connection was refused" in message
    assert f"sentinel 127.0.0.1:{ignorant.port} does not know it" in message
    assert not owner.made


@pytest_twisted.ensureDeferred
async def test_a_replica_named_as_master_is_refused_and_the_next_sentinel_asked(fakes) -> None:
    replica = fakes(ROLE=REPLICA_ROLE)
    master = fakes(ROLE=MASTER_ROLE, PING=b"+PONG\r\n")
    behind = fakes(SENTINEL=names(replica))  # a sentinel whose view is behind a failover
    honest = fakes(SENTINEL=names(master))
    group = fakes.group(behind.port, honest.port)
    owner, d = connect(group)
    connected = await d
    assert connected is owner and owner.made
    assert group.master == ("127.0.0.1", master.port)
    assert replica.asked("ROLE") and not replica.open(), "the replica's connection is closed"
    assert group.sentinels == [("127.0.0.1", honest.port), ("127.0.0.1", behind.port)]
    # the owner's protocol has the connection: bytes flow both ways
    owner.transport.write(b"*1\r\n$4\r\nPING\r\n")
    await eventually(lambda: owner.received == b"+PONG\r\n", "PONG")


@pytest_twisted.ensureDeferred
async def test_a_master_that_says_it_is_a_replica_fails_the_connect_after_the_wait(fakes) -> None:
    replica = fakes(ROLE=REPLICA_ROLE)
    s1 = fakes(SENTINEL=names(replica))
    s2 = fakes(SENTINEL=names(replica))
    group = fakes.group(s1.port, s2.port)
    owner, d = connect(group)
    await eventually(lambda: group._switch_waiters, "the connect to wait for a switch")
    fakes.clock.advance(sentinel.SWITCH_WAIT)
    with pytest.raises(SentinelError) as caught:
        await d
    assert f"master 127.0.0.1:{replica.port}" in str(caught.value)
    assert "is a slave, not a master" in str(caught.value)
    assert not owner.made


@pytest_twisted.ensureDeferred
async def test_sentinels_naming_dead_masters_by_turns_do_not_make_a_loop(fakes) -> None:
    dead_a, dead_b = free_port(), free_port()
    s1 = fakes(SENTINEL=names(dead_a))
    s2 = fakes(SENTINEL=names(dead_b))
    group = fakes.group(s1.port, s2.port)
    owner, d = connect(group)
    await eventually(lambda: group._switch_waiters, "the connect to wait for a switch")
    assert lookups(s1) == 2 and lookups(s2) == 1, "A, B, then A again: time to wait"
    fakes.clock.advance(sentinel.SWITCH_WAIT)
    with pytest.raises(SentinelError, match=f"master 127.0.0.1:{dead_a} .*refused"):
        await d
    assert not owner.made


@pytest_twisted.ensureDeferred
async def test_a_connect_cancelled_while_it_waits_leaves_nothing_behind(fakes) -> None:
    """What the hub does when it stops while a connect waits for a switch."""
    watched = fakes(SENTINEL=names(free_port()))
    group = fakes.group(watched.port)
    owner, d = connect(group)
    await eventually(lambda: group._switch_waiters, "the connect to wait for a switch")
    d.cancel()
    with pytest.raises(defer.CancelledError):
        await d
    assert group._switch_waiters == [] and not owner.made
    fakes.clock.advance(sentinel.WATCH_LINGER)
    await eventually(lambda: not watched.open(), "the watcher's connection closed")
    assert fakes.clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_a_connect_to_a_dead_master_takes_the_one_the_switch_names(fakes) -> None:
    dead = free_port()
    new = fakes(ROLE=MASTER_ROLE)
    watched = fakes(SENTINEL=names(dead))
    group = fakes.group(watched.port)
    owner, d = connect(group)
    await eventually(lambda: group._switch_waiters, "the connect to wait for a switch")
    assert watched.push("+switch-master", f"mymaster 127.0.0.1 {dead} 127.0.0.1 {new.port}")
    assert await d is owner
    assert group.master == ("127.0.0.1", new.port)
    assert group.describe()["switches"] == 1


@pytest_twisted.ensureDeferred
async def test_a_switch_drops_every_connection_not_to_the_new_master(fakes) -> None:
    old = fakes(ROLE=MASTER_ROLE)
    new = fakes(ROLE=MASTER_ROLE)
    watched = fakes(SENTINEL=names(old))
    group = fakes.group(watched.port)
    owners = []
    for _ in range(3):
        owner, d = connect(group)
        owners.append(await d)
    await eventually(lambda: group.watcher.sentinel, "the watcher to subscribe")
    # three connects and the watcher's look once subscribed (a switch it may have missed)
    await eventually(lambda: len(watched.asked("SENTINEL")) == 4, "the watcher's look")
    for payload in (
        f"othermaster 127.0.0.1 {old.port} 127.0.0.1 {new.port}",  # another master's switch
        f"mymaster 127.0.0.1 {old.port} 127.0.0.1 notaport",  # nonsense
        "mymaster",
    ):
        watched.push("+switch-master", payload)
    watched.push("+switch-master", f"mymaster 127.0.0.1 {old.port} 127.0.0.1 {new.port}")
    await eventually(lambda: all(o.lost for o in owners), "every old connection dropped")
    assert group.master == ("127.0.0.1", new.port)
    assert group.describe() == {
        "master": f"127.0.0.1:{new.port}",
        "sentinels": [f"127.0.0.1:{watched.port}"],
        "watching": f"127.0.0.1:{watched.port}",
        "switches": 1,
        "connections": 0,
    }
    watched.answers["SENTINEL"] = names(new)
    owner, d = connect(group)
    await d
    watched.push("+switch-master", f"mymaster 127.0.0.1 {old.port} 127.0.0.1 {new.port}")
    await eventually(lambda: group.describe()["switches"] == 2, "the second switch")
    assert not owner.lost, "a connection to the new master stays"


@pytest_twisted.ensureDeferred
async def test_after_a_switch_the_sentinel_that_told_of_it_is_asked_first(fakes) -> None:
    """Another sentinel may not know of the switch yet, and name the old master, which
    still says it is a master (until the sentinels reconfigure it)."""
    old = fakes(ROLE=MASTER_ROLE)
    new = fakes(ROLE=MASTER_ROLE)
    lagging = fakes(SENTINEL=names(old), SUBSCRIBE=b"-ERR not for the watcher\r\n")
    fresh = fakes(SENTINEL=names(old))
    group = fakes.group(lagging.port, fresh.port)
    owner, d = connect(group)
    await d
    await eventually(lambda: group.watcher._retry, "the watcher to give up on the first")
    fakes.clock.advance(1)
    await eventually(lambda: group.watcher.sentinel == ("127.0.0.1", fresh.port), "watching")
    fresh.answers["SENTINEL"] = names(new)
    fresh.push("+switch-master", f"mymaster 127.0.0.1 {old.port} 127.0.0.1 {new.port}")
    await eventually(lambda: owner.lost, "the connection to the old master dropped")
    again, d = connect(group)
    assert await d is again
    assert list(group.connections.values()) == [("127.0.0.1", new.port)]
    assert lookups(lagging) == 1, "only before the switch"


@pytest_twisted.ensureDeferred
async def test_the_watcher_moves_to_the_next_sentinel_and_catches_a_missed_switch(fakes) -> None:
    old = fakes(ROLE=MASTER_ROLE)
    new = fakes(ROLE=MASTER_ROLE)
    s1 = fakes(**knows(old, 1))
    s2 = fakes(**knows(old, 1))
    s3 = fakes(**knows(old, 1))
    group = fakes.group(s1.port, s2.port, s3.port)
    owner, d = connect(group)
    await d
    await eventually(lambda: group.watcher.sentinel == ("127.0.0.1", s1.port), "watching s1")
    # s1 goes away, and the failover happens while nobody watches; s3 lags behind it
    await s1.stop()
    s2.answers.update(knows(new, 2))
    await eventually(lambda: group.watcher.sentinel is None, "the watcher to notice")
    fakes.clock.advance(1)  # the first backoff
    await eventually(lambda: group.watcher.sentinel == ("127.0.0.1", s2.port), "watching s2")
    await eventually(lambda: owner.lost, "the connection to the old master dropped")
    assert group.master == ("127.0.0.1", new.port)


@pytest_twisted.ensureDeferred
async def test_the_newest_configuration_wins_over_a_sentinel_lagging_behind(fakes) -> None:
    old = fakes(ROLE=MASTER_ROLE)
    new = fakes(ROLE=MASTER_ROLE)
    lagging = fakes(**knows(old, 4))
    current = fakes(**knows(new, 5))
    ignorant = fakes(SENTINEL=NIL, **{"SENTINEL MASTER": b"-ERR No such master\r\n"})
    group = fakes.group(lagging.port, ignorant.port, free_port(), current.port)
    assert await group.newest_master() == (("127.0.0.1", new.port), ("127.0.0.1", current.port))
    lagging.answers.update(knows(old, 6))  # (a later failover back)
    assert await group.newest_master() == (("127.0.0.1", old.port), ("127.0.0.1", lagging.port))
    for fake in (current, lagging):
        fake.answers["SENTINEL MASTER"] = None  # silent
    d = defer.ensureDeferred(group.newest_master())
    await eventually(lambda: len(current.asked("SENTINEL")) == 3, "the silent ones asked")
    fakes.clock.advance(SENTINEL_TIMEOUT)
    assert await d is None


@pytest_twisted.ensureDeferred
async def test_credentials_go_to_the_master_and_the_sentinels_their_own(fakes) -> None:
    master = fakes(ROLE=MASTER_ROLE, AUTH=OK)
    guarded = fakes(SENTINEL=names(master), AUTH=OK)
    group = fakes.group(guarded.port, auth="app:secret@", query="?sentinel_password=s3")
    owner, d = connect(group)
    assert await d is owner
    assert guarded.asked("AUTH")[0] == [b"AUTH", b"s3"]
    assert master.commands[:2] == [[b"AUTH", b"app", b"secret"], [b"ROLE"]]
    master.answers["AUTH"] = b"-WRONGPASS invalid username-password pair\r\n"
    _, d = connect(group)
    with pytest.raises(SentinelError, match="refused AUTH: WRONGPASS"):
        await d


@pytest_twisted.ensureDeferred
async def test_the_watcher_stops_after_the_last_connection_and_a_linger(fakes) -> None:
    master = fakes(ROLE=MASTER_ROLE)
    watched = fakes(SENTINEL=names(master))
    group = fakes.group(watched.port)
    owner, d = connect(group)
    await d
    await eventually(lambda: group.watcher.sentinel, "the watcher to subscribe")
    owner.transport.loseConnection()
    await eventually(lambda: not group.connections, "the connection gone")
    fakes.clock.advance(sentinel.WATCH_LINGER - 0.1)
    assert group.watcher.running
    fakes.clock.advance(0.1)
    await eventually(lambda: not watched.open(), "the watcher's connection closed")
    assert not group.watcher.running
    assert fakes.clock.getDelayedCalls() == []


def test_one_group_per_address_and_reactor_whatever_the_sentinels_order() -> None:
    clock = task.Clock()
    a = parse_address("redis-sentinel://h1:1,h2:2/m")
    b = parse_address("redis-sentinel://h2:2,h1:1/m/3")
    first = client_endpoint(clock, a)
    second = client_endpoint(clock, b)
    assert isinstance(first, SentinelEndpoint) and isinstance(second, SentinelEndpoint)
    assert first.group is second.group
    assert sentinel.describe(b) == first.group.describe()
    assert client_endpoint(clock, parse_address("redis-sentinel://h1:1/other")).group is not (
        first.group
    )


def test_mules_get_the_sentinel_url_and_its_parts() -> None:
    from sse_offload.redis_address import parse_address
    from sse_offload.service import GatewayService

    root = GatewayService(None)
    url = "redis-sentinel://:pw@10.0.0.1:26379,[::1]:5000/mymaster/2?sentinel_password=sp"
    root.redis_address = parse_address(url)
    env = root.mule_environment()
    assert parse_address(env["REDIS_URL"]) == root.redis_address
    assert env["REDIS_SENTINELS"] == "10.0.0.1:26379,[::1]:5000"
    assert env["REDIS_SENTINEL_MASTER"] == "mymaster"
    assert "REDIS_SERVER" not in env
