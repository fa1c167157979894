"""Listeners grouped by what their bytes look like, so each group's bytes are framed once.

A listener's wire bytes depend on its SSE mode, whether its payloads are JSON envelopes and
whether its connection is HTTP/1.1 chunked; everything else about a listener is the same to
a fan-out. Both fan-outs (pub/sub channels and Redis Stream keys) keep their plain
listeners in one of these.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .sse import Mode

GroupKey = tuple[Mode, bool, bool]  # mode, envelope, chunked


class ListenerGroups(dict[GroupKey, dict[Any, None]]):
    """``{(mode, envelope, chunked): {listener: None}}``; empty groups are removed."""

    __slots__ = ()

    def join(self, listener: Any) -> None:
        self.setdefault((listener.mode, listener.envelope, listener.chunked), {})[listener] = None

    def leave(self, listener: Any) -> None:
        key = (listener.mode, listener.envelope, listener.chunked)
        group = self.get(key)
        if group is not None:
            group.pop(listener, None)
            if not group:
                del self[key]

    def count(self) -> int:
        return sum(len(g) for g in self.values())

    def members(self) -> Iterator[Any]:
        for group in self.values():
            yield from group
