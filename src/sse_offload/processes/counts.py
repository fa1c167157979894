"""The whole gateway's open streams under ``--processes N``: one shared slot per worker.

The master creates a small block of shared memory, one 8-byte slot per worker, and hands it
to every worker as an inherited descriptor. A worker writes only its own slot (its open stream
count) and sums all of them to enforce ``--max-clients``: one writer per slot, so no lock.

The race this tolerates: workers admitting a stream at the same instant each read the total
before the others have written their new count, so the gateway can hold up to N-1 streams
over ``--max-clients`` (one per other worker) until streams close. A lock shared by the
processes would close that gap at the cost of a system call per admitted stream; the cap is
there to protect the machine, and N-1 extra streams do not threaten it.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from typing import Final

#: A slot holds a C ``long long``: an aligned 8-byte store, which a reader never sees torn on
#: the 64-bit platforms we run on (and a count stays far below 2**31, so the high half never
#: changes anyway).
SLOT_FORMAT: Final = "q"
SLOT_SIZE: Final = 8


def create_block(slots: int) -> int:
    """A new block of ``slots`` zeroed slots; returns its descriptor (the caller closes it).

    A memfd where the platform has one, else an unlinked temporary file: either way nothing
    is left behind on disk, whatever happens to the master.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("sse-offload-counts")
    else:
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    os.ftruncate(fd, slots * SLOT_SIZE)
    return fd


class SharedCounts:
    """A view of the block in ``fd``; ``index`` is the slot this process writes.

    The descriptor may be closed once this is built (the mapping keeps the block).
    """

    __slots__ = ("_map", "_slots", "index")

    def __init__(self, fd: int, index: int) -> None:
        self._map = mmap.mmap(fd, os.fstat(fd).st_size)  # MAP_SHARED, read and write
        self._slots = memoryview(self._map).cast(SLOT_FORMAT)
        if not 0 <= index < len(self._slots):
            raise ValueError(f"slot {index} outside a block of {len(self._slots)}")
        self.index = index

    def set(self, count: int) -> None:
        """Publish this process's open stream count."""
        self._slots[self.index] = count

    def clear(self, index: int) -> None:
        """Zero the slot of a worker that has exited (the master's job; its streams are gone)."""
        self._slots[index] = 0

    def total(self) -> int:
        """The open streams of every worker."""
        return sum(self._slots)

    def close(self) -> None:
        self._slots.release()
        self._map.close()
