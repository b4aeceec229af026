"""The production entropy source: the operating system's CSPRNG, read in blocks.

A handshake asks for a dozen small values (connection IDs, randoms, key seeds, nonces), and
in a virtual machine each ``getrandom`` call costs more than the bytes it returns; the
process therefore reads 4 KiB at a time into one pool that every ``OsEntropy`` draws from.
No byte is handed out twice, and a forked child starts with an empty pool, so it never
repeats what its parent hands out."""

from __future__ import annotations

import os
import threading

POOL_SIZE = 4096


class _Pool:
    __slots__ = ("_data", "_lock", "_position")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data = b""
        self._position = 0

    def take(self, size: int) -> bytes:
        with self._lock:
            start = self._position
            if start + size > len(self._data):
                self._data, start = os.urandom(max(POOL_SIZE, size)), 0
            self._position = start + size
            return self._data[start : start + size]

    def forget(self) -> None:
        """In a forked child: drop what the parent read (and a lock it may have held)."""
        self._lock = threading.Lock()
        self._data, self._position = b"", 0


_POOL = _Pool()
os.register_at_fork(after_in_child=_POOL.forget)


class OsEntropy:
    """``Entropy`` backed by ``os.urandom`` through the process's pool."""

    __slots__ = ()

    def random(self, size: int) -> bytes:
        return _POOL.take(size)
