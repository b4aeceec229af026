"""The semantic difference between two transcripts: their summaries, taken after
normalisation, compared fact by fact. Each difference names its dotted path in the summary
(``profile``, ``key_shares.client.length``, ``bytes_per_flight.1.bytes``), both values and
one line saying what changed; ``ignore`` patterns drop some. Byte counts are compared within
what GREASE makes vary (each GREASE extension is 2 to 19 random bytes)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from harness.transcript.normalise import normalise
from harness.transcript.summary import summary

# numbers that differ by this much or less are the same: one GREASE extension's range (17
# bytes) per flight, twice (a CLIENT_HELLO split over two datagrams rounds each half up),
# and a byte of DER; a ratio of ~2.5 moves by less than 0.05 over that
TOLERANCES = {"bytes_per_flight.*.bytes": 40, "amplification.server_bytes": 40,
              "amplification.client_bytes": 40, "amplification.ratio": 0.05}
LABELS = {
    "vantage_point": "vantage point", "version": "wire version", "outcome": "outcome",
    "alpn": "negotiated ALPN", "offered_alpn": "offered ALPN list", "profile": "profile",
    "aead": "AEAD", "auth_mode": "server authentication mode", "kem_backend": "KEM backend",
    "kem_operations": "KEM operations", "key_shares": "key shares", "fallback": "fallback",
    "messages": "handshake messages", "close": "close code", "packets_per_space":
    "ack-eliciting packets", "bytes_per_flight": "bytes per flight",
    "amplification": "amplification before address validation",
    "handshake_ms": "handshake latency (ms)",
}


@dataclass(frozen=True)
class Difference:
    path: str
    before: Any
    after: Any
    description: str

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "before": self.before, "after": self.after,
                "description": self.description}


def _show(value: Any) -> str:
    return "absent" if value is None else json.dumps(value, separators=(",", ":"))


def _matches(pattern: str, path: str) -> bool:
    """``pattern`` names ``path`` or a part above it; ``*`` stands for any one part."""
    wanted, parts = pattern.split("."), path.split(".")
    return len(wanted) <= len(parts) and all(
        fnmatchcase(part, want) for want, part in zip(wanted, parts, strict=False))


def _same(path: str, before: Any, after: Any) -> bool:
    if before == after:
        return True
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool)
                  for v in (before, after))
    return numbers and any(_matches(p, path) and len(p.split(".")) == len(path.split("."))
                           and abs(before - after) <= tolerance
                           for p, tolerance in TOLERANCES.items())


def _walk(path: str, before: Any, after: Any, out: list[Difference]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *(k for k in after if k not in before)]:
            _walk(f"{path}.{key}" if path else str(key), before.get(key), after.get(key), out)
    elif (isinstance(before, list) and isinstance(after, list) and len(before) == len(after)
          and any(isinstance(v, dict) for v in before + after)):
        for index, (b, a) in enumerate(zip(before, after, strict=True)):
            _walk(f"{path}.{index}", b, a, out)
    elif not _same(path, before, after):
        top, _, where = path.partition(".")
        label = LABELS.get(top, top)
        out.append(Difference(path, before, after, f"{label}{f' ({where})' if where else ''}"
                                                  f": {_show(before)} -> {_show(after)}"))


def compare(before: dict[str, Any], after: dict[str, Any],
            ignore: list[str] | tuple[str, ...] = ()) -> list[Difference]:
    """How summary ``after`` differs from summary ``before``, less what ``ignore`` names."""
    out: list[Difference] = []
    _walk("", before, after, out)
    return [d for d in out if not any(_matches(p, d.path) for p in ignore)]


def diff(a: dict[str, Any], b: dict[str, Any],
         ignore: list[str] | tuple[str, ...] = ()) -> list[Difference]:
    """The semantic differences from valid transcript ``a`` to valid transcript ``b``."""
    return compare(summary(normalise(a)), summary(normalise(b)), ignore)
