"""The production entropy source: the operating system's CSPRNG."""

from __future__ import annotations

import os


class OsEntropy:
    """``Entropy`` backed by ``os.urandom``."""

    __slots__ = ()

    def random(self, size: int) -> bytes:
        return os.urandom(size)
