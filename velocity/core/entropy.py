"""Randomness as an input. The core asks an ``Entropy`` for every random byte it needs (key
shares, randoms, connection IDs, ticket nonces); ``SeededEntropy`` makes a run reproducible.
The OS-backed source lives outside the core (``velocity.aio.entropy``)."""

from __future__ import annotations

import hashlib
from typing import Protocol


class Entropy(Protocol):
    def random(self, size: int) -> bytes:
        """Return ``size`` bytes."""
        ...


class SeededEntropy:
    """A deterministic stream: SHAKE-256 over (seed, label, counter). Two instances with the
    same seed return the same bytes for the same calls; ``fork`` gives an independent stream
    (for example one per endpoint) that stays reproducible."""

    __slots__ = ("_counter", "_seed")

    def __init__(self, seed: bytes | int | str) -> None:
        if isinstance(seed, int):
            seed = seed.to_bytes(16, "big")
        elif isinstance(seed, str):
            seed = seed.encode()
        self._seed = seed
        self._counter = 0

    def random(self, size: int) -> bytes:
        self._counter += 1
        block = self._seed + b"/" + self._counter.to_bytes(8, "big")
        return hashlib.shake_256(block).digest(size)

    def fork(self, label: str) -> SeededEntropy:
        return SeededEntropy(hashlib.sha256(self._seed + b"/fork/" + label.encode()).digest())
