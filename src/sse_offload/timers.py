"""Timing shared by every owner of a timer or a retry loop: cancelling a delayed call, and
the reconnect backoff of every Redis connection (the hub's, the links', Sentinel's)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Final

# Reconnect backoff: start 0.5 s, x1.5, +-10 % jitter, cap 10 s. The cap matches
# txredisapi's maxDelay; the start is half of its 1 s so a blip costs little, and the jitter
# keeps many gateway processes from reconnecting to a restarted Redis in the same instant.
BACKOFF_INITIAL: Final = 0.5
BACKOFF_FACTOR: Final = 1.5
BACKOFF_JITTER: Final = 0.10
BACKOFF_MAX: Final = 10.0


def cancel(call: Any) -> None:
    """Cancel the delayed call ``call`` unless it is None, has run or is cancelled already."""
    if call is not None and call.active():
        call.cancel()


def backoff_delay(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 for the first retry)."""
    base = min(BACKOFF_MAX, BACKOFF_INITIAL * BACKOFF_FACTOR**min(attempt, 64))
    return base * (1 + BACKOFF_JITTER * (2 * rand() - 1))
