"""Giving back the memory a connection table left behind. CPython keeps what it frees for
reuse (glibc's malloc keeps free pages inside its heap), so after a flood of connections a
server's RSS would stay at its peak long after the table drained. ``HeapReturn`` watches
the table's size: once it has fallen to a quarter of its high-water mark, with at least
``TRIM_AFTER`` connections gone, it runs a garbage collection and glibc's ``malloc_trim``,
which returns the free pages to the OS (elsewhere only the collection runs)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

TRIM_AFTER = 64  # connections gone since the high-water mark before a trim is worth it


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc
        return None
    return trim


class HeapReturn:
    def __init__(self, trim_after: int = TRIM_AFTER) -> None:
        self.trim_after = trim_after
        self.trims = 0
        self._high = 0
        self._trim = _malloc_trim()

    def table(self, size: int) -> None:
        """The connection table now holds ``size`` connections."""
        self._high = max(self._high, size)
        if self._high - size >= self.trim_after and size <= self._high // 4:
            gc.collect()
            if self._trim is not None:
                self._trim(0)
            self._high = size
            self.trims += 1
