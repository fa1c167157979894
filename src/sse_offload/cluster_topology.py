"""A Redis Cluster's slot map, read from its own replies: pure functions, no I/O.

- :func:`keyslot`: the slot of a key or sharded channel, as Redis computes it (CRC16 of the
  name, or of its ``{hash tag}``, modulo 16384);
- :func:`parse_shards` / :func:`parse_slots`: a :class:`Topology` from a ``CLUSTER SHARDS``
  reply (Redis 7) or a ``CLUSTER SLOTS`` one (older, and the fallback);
- :func:`parse_redirect`: a ``MOVED``/``ASK`` error, which names a slot's new owner.

Every reply is checked: anything not shaped as Redis documents it raises
:class:`TopologyError`, whose text says what was wrong, never another exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

#: Slots of a Redis Cluster: the CRC16 of a key modulo this.
SLOTS: Final = 16384

#: A node as the hub keys its connections: (host, port).
NodeKey = tuple[str, int]


class TopologyError(ValueError):
    """A cluster reply that cannot be read as a slot map; the text says why."""


def _crc16_table() -> tuple[int, ...]:
    # CRC16/XMODEM (polynomial 0x1021, initial value 0): the CRC Redis Cluster hashes keys
    # with. A table of the 256 byte values makes it one lookup per byte.
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16: Final = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16/XMODEM of ``data``."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def keyslot(name: bytes) -> int:
    """The slot of ``name``: only the part between the first ``{`` and the next ``}`` is
    hashed when that part is not empty (a hash tag puts related names in one slot)."""
    start = name.find(b"{")
    if start != -1:
        end = name.find(b"}", start + 1)
        if end > start + 1:
            name = name[start + 1 : end]
    return crc16(name) % SLOTS


@dataclass(frozen=True)
class NodeInfo:
    """One node of the map: where it is, its role and (CLUSTER SHARDS only) its health."""

    host: str
    port: int
    role: str = "master"  # "master" or "replica"
    health: str = "online"  # "online", "fail(ed)", "loading" ("online" when SLOTS said it)
    node_id: str = ""

    @property
    def key(self) -> NodeKey:
        return (self.host, self.port)

    @property
    def failed(self) -> bool:
        """Has the cluster marked it failed? (Redis 7.0 says ``fail``, the docs ``failed``.)"""
        return self.health in ("fail", "failed")

    def __str__(self) -> str:
        return node_text(self.key)


def node_text(key: NodeKey) -> str:
    """``host:port`` (``[v6]:port``) for log lines."""
    host, port = key
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Shard:
    """A master, its replicas and the slot ranges it serves (inclusive bounds)."""

    slots: tuple[tuple[int, int], ...]
    master: NodeInfo | None
    replicas: tuple[NodeInfo, ...] = ()


@dataclass
class Topology:
    """The slot map: each slot's master, and every node the reply named."""

    shards: tuple[Shard, ...]
    owners: list[NodeKey | None] = field(default_factory=lambda: [None] * SLOTS, repr=False)

    def __post_init__(self) -> None:
        for shard in self.shards:
            if shard.master is None:
                continue
            for start, end in shard.slots:
                self.owners[start : end + 1] = [shard.master.key] * (end + 1 - start)

    def owner(self, slot: int) -> NodeKey | None:
        """The master serving ``slot``, or None when no node does."""
        return self.owners[slot]

    def moved(self, slot: int, key: NodeKey) -> None:
        """A ``MOVED`` said ``key`` serves ``slot`` now."""
        self.owners[slot] = key

    def nodes(self) -> list[NodeInfo]:
        """Every node, masters of slots first, each once."""
        found: dict[NodeKey, NodeInfo] = {}
        for shard in sorted(self.shards, key=lambda s: not s.slots):
            for node in (shard.master, *shard.replicas):
                if node is not None:
                    found.setdefault(node.key, node)
        return list(found.values())

    def masters(self) -> list[NodeInfo]:
        """Masters that serve slots, healthy ones first."""
        masters = [s.master for s in self.shards if s.master is not None and s.slots]
        return sorted(masters, key=lambda n: n.health != "online")

    def role(self, key: NodeKey) -> str:
        """``master``, ``replica``, or ``?`` for a node the map does not name."""
        for node in self.nodes():
            if node.key == key:
                return node.role
        return "?"

    def covered(self) -> int:
        """How many slots have a master."""
        return sum(owner is not None for owner in self.owners)

    def summary(self) -> str:
        """One line for the log: each master and how many slots it serves."""
        counts: dict[NodeKey, int] = {}
        for owner in self.owners:
            if owner is not None:
                counts[owner] = counts.get(owner, 0) + 1
        return ", ".join(f"{node_text(k)} ({n} slots)" for k, n in sorted(counts.items()))


def _text(value: object, what: str) -> str:
    if not isinstance(value, bytes):
        raise TopologyError(f"{what}: expected a string, got {value!r:.80}")
    return value.decode("utf-8", "replace")


def _int(value: object, what: str) -> int:
    if isinstance(value, bytes) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TopologyError(f"{what}: expected a number, got {value!r:.80}")
    return value


def _pairs(value: object, what: str) -> dict[str, object]:
    """A RESP2 flat list of field, value, ... as a dict."""
    if not isinstance(value, list) or len(value) % 2:
        raise TopologyError(f"{what}: expected a list of field-value pairs, got {value!r:.80}")
    return {_text(k, what): v for k, v in zip(value[::2], value[1::2], strict=True)}


def _ranges(bounds: list[object], what: str) -> tuple[tuple[int, int], ...]:
    out = []
    for i in range(0, len(bounds) - 1, 2):
        start, end = _int(bounds[i], what), _int(bounds[i + 1], what)
        if not start <= end < SLOTS:
            raise TopologyError(f"{what}: bad slot range {start}-{end}")
        out.append((start, end))
    return tuple(out)


def _host(endpoint: str | None, ip: str | None, asked: str) -> str | None:
    """Where to reach a node: its preferred endpoint, else its ip; an empty endpoint means
    the address the reply came from, ``?`` an endpoint Redis does not know."""
    for candidate in (endpoint, ip):
        if candidate == "":
            return asked
        if candidate is not None and candidate != "?":
            return candidate
    return None


def parse_shards(reply: object, asked: str) -> Topology:
    """The map in a ``CLUSTER SHARDS`` reply (RESP2) from a node at host ``asked``."""
    if not isinstance(reply, list):
        raise TopologyError(f"CLUSTER SHARDS: expected a list, got {reply!r:.80}")
    shards = []
    for entry in reply:
        fields = _pairs(entry, "CLUSTER SHARDS shard")
        bounds = fields.get("slots", [])
        nodes = fields.get("nodes", [])
        if not isinstance(bounds, list) or not isinstance(nodes, list):
            raise TopologyError(f"CLUSTER SHARDS: bad shard {entry!r:.80}")
        master, replicas = None, []
        for raw in nodes:
            info = _pairs(raw, "CLUSTER SHARDS node")
            text = {k: _text(v, f"CLUSTER SHARDS node {k}") for k, v in info.items()
                    if isinstance(v, bytes)}
            host = _host(text.get("endpoint"), text.get("ip"), asked)
            if host is None or "port" not in info:
                continue  # no plain-TCP address we can use (a TLS-only node, say)
            node = NodeInfo(host, _int(info["port"], "CLUSTER SHARDS port"),
                            "master" if text.get("role") == "master" else "replica",
                            text.get("health", "online"), text.get("id", ""))
            if node.role == "master" and master is None:
                master = node
            else:
                replicas.append(node)
        shards.append(Shard(_ranges(bounds, "CLUSTER SHARDS slots"), master, tuple(replicas)))
    return Topology(tuple(shards))


def parse_slots(reply: object, asked: str) -> Topology:
    """The map in a ``CLUSTER SLOTS`` reply from a node at host ``asked``."""
    if not isinstance(reply, list):
        raise TopologyError(f"CLUSTER SLOTS: expected a list, got {reply!r:.80}")
    by_master: dict[NodeKey, tuple[list[tuple[int, int]], NodeInfo, list[NodeInfo]]] = {}
    for entry in reply:
        if not isinstance(entry, list) or len(entry) < 3:
            raise TopologyError(f"CLUSTER SLOTS: bad entry {entry!r:.80}")
        [(start, end)] = _ranges(entry[:2], "CLUSTER SLOTS")
        nodes = []
        for i, raw in enumerate(entry[2:]):
            if not isinstance(raw, list) or len(raw) < 2:
                raise TopologyError(f"CLUSTER SLOTS: bad node {raw!r:.80}")
            endpoint = None if raw[0] is None else _text(raw[0], "CLUSTER SLOTS endpoint")
            host = _host(endpoint, None, asked)
            node_id = _text(raw[2], "CLUSTER SLOTS id") if len(raw) > 2 else ""
            if host is not None:
                port = _int(raw[1], "CLUSTER SLOTS port")
                nodes.append(NodeInfo(host, port, "master" if i == 0 else "replica",
                                      node_id=node_id))
        if not nodes or nodes[0].role != "master":
            continue  # the master has no address we can use: the slots stay unserved
        ranges, _, replicas = by_master.setdefault(nodes[0].key, ([], nodes[0], []))
        ranges.append((start, end))
        replicas.extend(n for n in nodes[1:] if n not in replicas)
    return Topology(tuple(
        Shard(tuple(ranges), master, tuple(replicas))
        for ranges, master, replicas in by_master.values()
    ))


@dataclass(frozen=True)
class Redirect:
    """A ``MOVED`` (the slot has a new owner) or ``ASK`` (it is being migrated) error."""

    kind: str  # "MOVED" or "ASK"
    slot: int
    node: NodeKey


def parse_redirect(message: str, asked: str) -> Redirect | None:
    """The redirect in an error text (``MOVED 3999 127.0.0.1:6381``), or None for any other
    error. An empty host (``MOVED 3999 :6380``, an endpoint Redis does not know) is the host
    the error came from, ``asked``."""
    parts = message.split()
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK") or not parts[1].isdigit():
        return None
    host, sep, port = parts[2].rpartition(":")
    slot = int(parts[1])
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or slot >= SLOTS:
        return None
    host = host.strip("[]") or asked
    return Redirect(parts[0], slot, (host, int(port)))
