"""Shared fixtures: private redis-server instances.

Nothing here imports the reactor or txredisapi at module level: pytest-twisted installs the
reactor a run asks for (``--reactor=asyncio``) in its pytest_configure, after this file is
imported, and importing txredisapi installs the default reactor first, so such a run would
fail with WrongReactorAlreadyInstalledError. Gateway fixtures live in gateway_helpers.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster_helpers import RedisCluster, redis7_binaries
from redis_helpers import RedisServer


def _short_tmp(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    # unix socket paths must stay under 108 bytes (sun_path)
    path = tmp_path_factory.mktemp(name)
    assert len(str(path)) < 80, path
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A redis-server shared by the session: TCP on a free port and a unix socket."""
    server = RedisServer(_short_tmp(tmp_path_factory, "redis")).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_redis(tmp_path_factory: pytest.TempPathFactory):
    """A redis-server of the test's own, for tests that kill or restart it."""
    server = RedisServer(_short_tmp(tmp_path_factory, "redisf")).start()
    yield server
    server.stop()


def _cluster(tmp_path_factory: pytest.TempPathFactory, name: str):
    if redis7_binaries() is None:
        pytest.skip("Redis Cluster tests need redis-server 7 or later (sharded pub/sub)")
    cluster = RedisCluster(_short_tmp(tmp_path_factory, name)).start()
    return cluster


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A 3-master Redis Cluster (a replica each) shared by a test module: its tests may move
    slots, never kill nodes (cluster_helpers.py)."""
    cluster = _cluster(tmp_path_factory, "cluster")
    yield cluster
    cluster.stop()


@pytest.fixture
def fresh_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A Redis Cluster of the test's own, for tests that kill its nodes."""
    cluster = _cluster(tmp_path_factory, "clusterf")
    yield cluster
    cluster.stop()


@pytest.fixture
def redis(redis_server: RedisServer):
    """A blocking client of the session's redis-server."""
    client = redis_server.client()
    yield client
    client.close()


def pytest_configure(config: pytest.Config) -> None:
    # Guard: a test that falls back to the default Redis address (the machine's shared
    # 127.0.0.1:6379) must fail, not silently use it.
    os.environ["SSE_OFFLOAD_REDIS"] = "127.0.0.1:1"


@pytest.fixture
def gateway_factory(tmp_path: Path):
    """Start gateway subprocesses; all are stopped at the end of the test."""
    from gateway_helpers import GatewayProcess

    started: list[GatewayProcess] = []

    def make(rules, *, redis, name: str = "gw", **kwargs) -> GatewayProcess:
        gw = GatewayProcess(tmp_path / f"{name}{len(started)}", rules, redis=redis, **kwargs)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
