"""A Redis Cluster's state as a status page shows it: a plain dict, read when asked."""

from __future__ import annotations

from typing import Any

from .cluster_topology import node_text


def describe(cluster: Any) -> dict[str, Any]:
    """``cluster`` (a cluster.ClusterConnection) as a dict: its address, whether every
    channel is subscribed at a connected node, since when not (``down_since``, clock
    seconds), whether the outage limit passed, its channels, and every node of the map or
    held: role, health, connection and what it holds."""
    topology = cluster.topology
    down = cluster.waiting.oldest()
    topology_nodes = topology.nodes() if topology is not None else []
    keys = dict.fromkeys([n.key for n in topology_nodes] + list(cluster.nodes))
    known = {n.key: n for n in topology_nodes}
    held = cluster.nodes
    return {
        "address": str(cluster.address),
        "kind": "cluster",
        "connected": cluster.connected,
        "down_since": cluster.unreachable_since if down is None else down,
        "expired": cluster.waiting.expired,
        "channels": len(cluster.channels) + len(cluster.sharded),
        "sharded_channels": len(cluster.sharded),
        "patterns": len(cluster.patterns),
        "waiting": len(cluster.waiting),
        "connections_made": cluster.connections_made,
        "slots_served": topology.covered() if topology is not None else 0,
        "nodes": [
            {
                "address": node_text(key),
                "role": known[key].role if key in known else "?",
                "health": known[key].health if key in known else "?",
                "held": key in held,
                "connected": key in held and held[key].protocol is not None,
                "sharded_channels": len(held[key].sharded) if key in held else 0,
                "classic": key == cluster.classic,
            }
            for key in keys
        ],
    }
