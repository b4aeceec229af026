"""Giving back the memory a burst left behind. CPython keeps what it frees for reuse (glibc's
malloc keeps free pages inside its heap), so after a flood a server's RSS would stay at its
peak long after the flood ended. ``HeapReturn`` watches two things. The connection table's
size: once it has fallen to a quarter of its high-water mark, with at least ``TRIM_AFTER``
connections gone, it lets the owner shrink what it keeps (``before_trim``), runs a garbage
collection and glibc's ``malloc_trim``, which returns the free pages to the OS (elsewhere
only the collection runs); some of what the drained connections held is freed later
(entries made during the flood that expire after it, a connection's last references going
with the next events), so the ``SETTLE_TRIMS`` settle calls after such a trim run one more
each. And the datagrams received in each ``SETTLE_EVERY`` seconds (a flood that opens no
connection, answered with Retry, grows the heap as well): once a period's count fell to a
quarter of the busiest period's, of at least ``BURST``, it trims once, at most once every
``TRAFFIC_GAP`` settle calls (traffic anyone can send cannot make it trim more often).
Either way a trim (a collection on the owner's loop) runs at most once a settle period: a
table that falls again within it trims after the next settle call."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

TRIM_AFTER = 64  # connections gone since the high-water mark before a trim is worth it
SETTLE_EVERY = 10.0  # seconds between the owner's calls to settle
SETTLE_TRIMS = 3  # trims by settle after each trim on a fall
BURST = 1000  # datagrams in a settle period that make the traffic's fall worth a trim
TRAFFIC_GAP = 6  # settle calls at least between two trims on the traffic's fall (a minute)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc
        return None
    return trim


class HeapReturn:
    def __init__(self, trim_after: int = TRIM_AFTER,
                 before_trim: Callable[[], None] | None = None) -> None:
        self.trim_after = trim_after
        self.trims = 0
        self._before_trim = before_trim
        self._high = 0
        self._received = 0  # datagrams received by the last settle call
        self._busiest = 0  # most datagrams in a settle period since the last traffic trim
        self._since_traffic_trim = TRAFFIC_GAP  # settle calls since it
        self._settling = 0  # settle calls that still trim
        self._trimmed = False  # whether this settle period had its trim
        self._trim = _malloc_trim()

    def table(self, size: int) -> None:
        """The connection table now holds ``size`` connections."""
        self._high = max(self._high, size)
        if (self._high - size >= self.trim_after and size <= self._high // 4
                and not self._trimmed):
            self._give_back()
            self._high = size
            self._settling = SETTLE_TRIMS

    def settle(self, received: int) -> None:
        """Called every SETTLE_EVERY seconds with the datagrams received so far: trims when
        a period's traffic fell to a quarter of the busiest's (of at least BURST) and the
        last such trim is TRAFFIC_GAP calls old, or while a table trim is recent."""
        self._trimmed = False
        period, self._received = received - self._received, received
        self._busiest = max(self._busiest, period)
        self._since_traffic_trim += 1
        if (self._busiest >= BURST and period <= self._busiest // 4
                and self._since_traffic_trim >= TRAFFIC_GAP):
            self._busiest = self._since_traffic_trim = 0
            self._give_back()
        elif self._settling:
            self._settling -= 1
            self._give_back()

    def _give_back(self) -> None:
        self._trimmed = True
        if self._before_trim is not None:
            self._before_trim()
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        self.trims += 1
