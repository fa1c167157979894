"""Test helpers for services run by the reactor: deadlines, child processes, leaked timers.

The reactor is imported inside each helper, never at module level, so importing this module
(from conftest.py too) does not install the default reactor and ``--reactor=asyncio`` still
works. The blocking counterpart of :func:`eventually`, for code off the reactor, is
``redis_helpers.wait_for``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet import task

WAIT = 15.0  # seconds: deadline for every Deferred the tests wait on

# Between two looks at the predicate: short next to the 1 s restart and ready delays the tests
# wait for, long enough that polling does not starve the reactor (same as wait_for's default).
POLL_INTERVAL = 0.02


async def eventually(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``predicate`` on the reactor thread until it returns a truthy value, and return it.

    Between polls the reactor runs (``task.deferLater``), so process and socket events are
    served meanwhile. Raises AssertionError naming ``what`` after ``timeout`` seconds.
    """
    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await task.deferLater(reactor, POLL_INTERVAL, lambda: None)
    return value


def pid_gone(pid: int) -> bool:
    """True once no process ``pid`` exists (a zombie still counts as there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def stop_and_check_gone(service: Any) -> int:
    """Stop ``service`` (a Mule or EmbeddedRedis running a child) and check the child is gone.

    Asserts that the child runs before the stop and is gone once ``stopService``'s Deferred has
    fired (within WAIT), and that the service no longer reports a pid. Returns the child's pid.
    """
    from twisted.internet import reactor

    pid = service.pid
    assert pid is not None and not pid_gone(pid)
    await service.stopService().addTimeout(WAIT, reactor)
    assert pid_gone(pid)
    assert service.pid is None
    return int(pid)


@pytest.fixture
def no_delayed_calls_left_behind() -> Iterator[None]:
    """Fail the test if it leaves an active reactor delayed call it did not find there.

    A module opts in with ``pytestmark = pytest.mark.usefixtures(...)`` after importing it.
    """
    from twisted.internet import reactor

    before = set(reactor.getDelayedCalls())
    yield
    leaked = [c for c in reactor.getDelayedCalls() if c not in before and c.active()]
    assert not leaked, f"delayed calls left behind: {leaked}"


def make_streams(reactor, address, keepalive: float = 0, clock=None, **limits):
    """A hub for ``address`` and the stream layer over it (what build_gateway makes): the
    Broadcaster, which starts and stops its hub. ``limits``: the hub's ``outage_limit`` and
    ``max_message_size``, the broadcaster's ``max_paused`` and ``drain``."""
    from sse_offload.broadcast import Broadcaster
    from sse_offload.pubsub import Hub

    hub_keys = {"outage_limit", "max_message_size"}
    hub = Hub(reactor, address, clock=clock, **{k: v for k, v in limits.items() if k in hub_keys})
    return Broadcaster(
        hub, keepalive, **{k: v for k, v in limits.items() if k not in hub_keys}
    )


def subscribe(streams, address, channel: bytes, listener):
    """``listener`` joins ``channel``; returns the function that removes it."""
    assert streams.join(address, channel, listener)
    server = streams.hub.server(address)
    return lambda: server.remove(channel, listener)
