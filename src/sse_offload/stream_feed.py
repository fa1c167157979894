"""The stream layer's side of Redis Streams: fan-out per key, and resuming a client.

- :class:`StreamFeed` is what the hub's stream reader (redis_streams.py) holds for one key.
  Its listeners that are caught up share one framing per (mode, envelope, wire) group, as
  pub/sub listeners do (broadcast.ChannelFanout): each entry is framed once, with the entry
  id as its ``id:``, and the same bytes go to every listener of the group.
- :class:`StreamCursor` is one client that is not caught up with the feed, or reads several
  keys (its ``id:`` is its own position in each, so its bytes are its own). It replays what
  the client missed (the ``Last-Event-ID`` it sent) with XRANGE while it holds back the
  live entries that arrive meanwhile, then sends those of them it has not sent: no
  duplicate, no gap at the seam. Once at the feed's position it joins the feed's shared
  group (single-key clients only). Nothing of this is kept between connections: any
  gateway process can resume any client, because the position is the id.

When the position cannot be resumed (an id trimmed away, an id Redis never gave), the client
gets an explicit event (``event: reset`` by default, ``reset=NAME``) naming the first entry
still there, then live entries: never a silent gap.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from typing import Any, Final

from twisted.logger import Logger

from .events import (
    ORIGIN,
    Event,
    Position,
    compound_id,
    entry_event,
    frame_event,
    parse_last_event_id,
    parse_position,
    position_id,
)
from .listener_groups import ListenerGroups
from .redis_streams import READ_COUNT, Entry, StreamServer
from .routing import SseTarget
from .sse import Mode, http_chunk

_log = Logger(namespace="sse_offload.stream_feed")
#: An entry as the feed passes it on: its position, id and fields.
Parsed = tuple[Position, bytes, list[bytes]]
MAX_HISTORY: Final = 10_000


def frame_entries(entries: list[Parsed], mode: Mode, envelope: bool) -> bytes:
    """Entries on the wire: SSE events with their ids, or (``sseraw``) the bare data."""
    if mode is Mode.RAW:
        return b"".join(entry_event(i, f, envelope).data for _, i, f in entries)
    return b"".join(frame_event(entry_event(i, f, envelope)) for _, i, f in entries)


class StreamFeed:
    """The listeners of one stream key on one server (module docstring)."""

    __slots__ = ("cursors", "groups", "key", "last", "max_size", "server", "stats")

    def __init__(self, server: StreamServer, key: bytes, stats: collections.Counter[str],
                 max_size: int) -> None:
        self.server = server
        self.key = key
        self.stats = stats
        self.max_size = max_size
        self.groups = ListenerGroups()
        self.cursors: dict[StreamCursor, None] = {}
        self.last: Position | None = None  # the reader's position, once known

    def add(self, listener: Any) -> None:
        if isinstance(listener, StreamCursor):
            self.cursors[listener] = None
        else:
            self.groups.join(listener)

    def remove(self, listener: Any) -> None:
        if isinstance(listener, StreamCursor):
            self.cursors.pop(listener, None)
            return
        self.groups.leave(listener)

    def __len__(self) -> int:
        return len(self.cursors) + self.groups.count()

    def listeners(self) -> Iterator[Any]:
        yield from self.groups.members()
        for cursor in self.cursors:
            yield cursor.stream

    def positioned(self, position: Position) -> None:
        self.last = position
        for cursor in list(self.cursors):
            cursor.feed_positioned(self)

    def deliver_entries(self, entries: list[Entry]) -> None:
        parsed: list[Parsed] = []
        for entry_id, fields in entries:
            p = parse_position(entry_id)
            if p is None:
                continue
            self.last = p
            if sum(len(f) for f in fields) > self.max_size:
                self.stats["messages_dropped_too_large"] += 1
                continue
            parsed.append((p, entry_id, fields))
        self.stats["messages_received"] += len(parsed)
        if not parsed:
            return
        framed: dict[tuple[Mode, bool], bytes] = {}
        writes = 0
        for (mode, envelope, chunked), group in tuple(self.groups.items()):
            body = framed.get((mode, envelope))
            if body is None:
                body = framed[(mode, envelope)] = frame_entries(parsed, mode, envelope)
            data = http_chunk(body) if chunked else body
            listeners = tuple(group)
            for listener in listeners:
                listener.send(data)
            writes += len(listeners)
        self.stats["messages_delivered"] += writes * len(parsed)
        self.stats["stream_writes"] += writes
        for cursor in list(self.cursors):
            cursor.live(self, parsed)


class StreamCursor:
    """One client of Redis Streams with its own position in each key (module docstring)."""

    def __init__(self, server: StreamServer, stream: Any, keys: list[bytes],
                 target: SseTarget, last_event_id: str | None) -> None:
        self.server = server
        self.stream = stream
        self.keys = keys
        self.target = target
        self.feeds: list[StreamFeed] = []
        self.pos: list[Position | None] = [None] * len(keys)
        #: Keys being replayed (or waiting for their feed's position), live entries held.
        self.held: dict[int, list[Parsed]] = {}
        self.promoted = False
        self._resume = parse_last_event_id(last_event_id or "", len(keys))

    def start(self) -> None:
        for i, key in enumerate(self.keys):
            feed = self.server.add(key, self)
            assert isinstance(feed, StreamFeed)
            self.feeds.append(feed)
            self.held[i] = []
            if self._resume is not None:
                self._check(i, self._resume[i])
            elif self.target.history:
                self._history(i)
            elif feed.last is not None:
                self._caught_up(i, feed.last)
            # else: feed_positioned() gives the start

    def release(self) -> None:
        """The client is gone: leave every key."""
        for key in self.keys:
            self.server.remove(key, self)
            self.server.remove(key, self.stream)

    # --- live entries -------------------------------------------------------------------
    def feed_positioned(self, feed: StreamFeed) -> None:
        i = self.feeds.index(feed)
        if self.pos[i] is None and self._resume is None and not self.target.history:
            assert feed.last is not None
            self._caught_up(i, feed.last)

    def live(self, feed: StreamFeed, entries: list[Parsed]) -> None:
        i = self.feeds.index(feed)
        held = self.held.get(i)
        if held is not None:
            held.extend(entries)
        else:
            self._send(i, entries)
            self._maybe_promote()

    def _send(self, i: int, entries: list[Parsed]) -> None:
        """Entries of key ``i`` after this client's position, framed with its ids."""
        if self.stream.closed:
            return
        pos = self.pos[i] or ORIGIN
        fresh = [e for e in entries if e[0] > pos]
        if not fresh:
            return
        mode, envelope = self.stream.mode, self.target.envelope
        if len(self.keys) == 1:
            body = frame_entries(fresh, mode, envelope)
            self.pos[i] = fresh[-1][0]
        else:
            parts = []
            for p, entry_id, fields in fresh:
                self.pos[i] = p
                e = entry_event(entry_id, fields, envelope)
                parts.append(e.data if mode is Mode.RAW else frame_event(
                    e._replace(id=compound_id([q or ORIGIN for q in self.pos]))
                ))
            body = b"".join(parts)
        self.stream.send(http_chunk(body) if self.stream.chunked else body)

    def _caught_up(self, i: int, position: Position | None) -> None:
        """Key ``i`` is sent up to ``position``: the held live entries after it follow."""
        current = self.pos[i]
        if position is not None and (current is None or position > current):
            self.pos[i] = position
        held = self.held.pop(i, [])
        if held:
            self._send(i, held)
        self._maybe_promote()

    def _maybe_promote(self) -> None:
        """A single-key client at its feed's position joins the feed's shared group."""
        if self.promoted or self.held or len(self.keys) != 1 or self.stream.closed:
            return
        feed = self.feeds[0]
        if feed.last is not None and self.pos[0] == feed.last:
            self.promoted = True
            feed.remove(self)
            feed.add(self.stream)

    # --- replay -------------------------------------------------------------------------
    def _check(self, i: int, asked: Position | None) -> None:
        """Can key ``i`` resume after ``asked``? Replay if so, else the reset event."""
        key = self.keys[i]

        def decide(info: dict[bytes, Any] | None) -> None:
            last = parse_position(info[b"last-generated-id"]) if info else ORIGIN
            first_entry = info.get(b"first-entry") if info else None
            first = parse_position(first_entry[0]) if first_entry else None
            deleted = info.get(b"max-deleted-entry-id") if info else None
            max_deleted = parse_position(deleted) if deleted is not None else None
            # Trimming (MAXLEN) removes the oldest entries without moving
            # max-deleted-entry-id (XDEL moves it); entries-added - length says whether
            # anything was ever removed (a Redis before 7.0 says neither: assume so).
            added, length = (info.get(b"entries-added"), info.get(b"length")) if info else (0, 0)
            removed = added is None or int(added) > int(length or 0)
            if asked is None or last is None or asked > last:
                why = "unknown id"
            elif max_deleted is not None and max_deleted > asked:
                why = "trimmed"
            elif removed and first is not None and first > asked:
                why = "trimmed"
            else:
                self.pos[i] = asked
                self._replay(i)
                return
            self._reset(i, why, first, last or ORIGIN)

        self.server.when_up(self.server.info(key), decide, self._failed)

    def _replay(self, i: int) -> None:
        after = self.pos[i] or ORIGIN

        def page(reply: list[Entry]) -> None:
            if self.stream.closed:
                return
            entries = [(p, e, f) for e, f in reply if (p := parse_position(e)) is not None]
            if entries:
                self._send(i, entries)
            if len(reply) < READ_COUNT:
                self._caught_up(i, None)
            else:
                self._replay(i)

        self.server.when_up(self.server.range_after(self.keys[i], after), page, self._failed)

    def _history(self, i: int) -> None:
        count = min(self.target.history, MAX_HISTORY)

        def got(reply: list[Entry]) -> None:
            entries = [(p, e, f) for e, f in reversed(reply) if (p := parse_position(e))]
            self.pos[i] = ORIGIN
            if entries:
                self._send(i, entries)
            feed_last = self.feeds[i].last
            self._caught_up(i, feed_last if entries == [] else None)

        self.server.when_up(self.server.tail(self.keys[i], count), got, self._failed)

    def _reset(self, i: int, why: str, first: Position | None, last: Position) -> None:
        """Tell the client its position is gone; it goes on live from ``last``."""
        self.pos[i] = last
        self.server_stats()["streams_reset"] += 1
        detail = {
            "stream": self.keys[i].decode("utf-8", "backslashreplace"), "reason": why,
            "first": position_id(first).decode() if first else None,
            "last": position_id(last).decode(),
        }
        _log.info("{line}", line=f"stream {detail['stream']} of {self.stream.owner.peer()}: "
                  f"cannot resume ({why}); sent {self.target.reset}")
        if self.stream.mode is Mode.SSE:
            ident = position_id(last) if len(self.keys) == 1 else compound_id(
                [p or ORIGIN for p in self.pos]
            )
            event = Event(json.dumps(detail).encode(), self.target.reset.encode(), ident)
            body = frame_event(event)
            self.stream.send(http_chunk(body) if self.stream.chunked else body)
        self._caught_up(i, last)

    def server_stats(self) -> collections.Counter[str]:
        return self.feeds[0].stats if self.feeds else collections.Counter()

    def _failed(self, failure: Any) -> None:
        """A Redis error reply to a replay command (a key that is not a stream, ...)."""
        _log.error("{line}", line=f"cannot replay for {self.stream.owner.peer()}: "
                   f"{failure.getErrorMessage()}")
        self.stream.close("redis_error")
