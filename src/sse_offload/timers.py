"""Twisted's delayed calls: the one idiom every timer owner here needs."""

from __future__ import annotations

from typing import Any


def cancel(call: Any) -> None:
    """Cancel the delayed call ``call`` unless it is None, has run or is cancelled already."""
    if call is not None and call.active():
        call.cancel()
