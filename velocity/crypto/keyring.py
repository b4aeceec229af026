"""Static-key rotation with an overlap window (VEL-CERT-005): after a rotation the previous
key of a profile keeps decapsulating PDK ciphertexts until the window ends, while
CERTIFICATE publishes the new one."""

from __future__ import annotations

from dataclasses import dataclass, field

from velocity.core.handshake.common import StaticKey

DEFAULT_OVERLAP_MS = 7 * 24 * 3600 * 1000


@dataclass
class _Entry:
    key: StaticKey
    retired_ms: int | None = None


@dataclass
class KeyRing:
    overlap_ms: int = DEFAULT_OVERLAP_MS
    _entries: list[_Entry] = field(default_factory=list)

    def add(self, key: StaticKey) -> None:
        self._entries.append(_Entry(key))

    def rotate(self, new_key: StaticKey, *, now_ms: int) -> None:
        """Make ``new_key`` current for its profile; the previous one enters the overlap."""
        for entry in self._entries:
            if entry.key.profile == new_key.profile and entry.retired_ms is None:
                entry.retired_ms = now_ms
        self._entries.insert(0, _Entry(new_key))

    def active(self, *, now_ms: int) -> tuple[StaticKey, ...]:
        """Current keys first (one per profile), then retired keys still in their overlap."""
        self._entries = [e for e in self._entries
                         if e.retired_ms is None or now_ms - e.retired_ms < self.overlap_ms]
        current = [e.key for e in self._entries if e.retired_ms is None]
        previous = [e.key for e in self._entries if e.retired_ms is not None]
        return (*current, *previous)
