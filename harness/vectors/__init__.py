"""Known-answer vectors of Velocity/1: ``generate`` builds them from the spec without
``velocity.core`` (scapy layers and ``cryptography`` primitives), ``handshakes`` records the
seeded handshakes from the reference, ``handshake_kat`` checks those without ``velocity``,
``check`` runs the reference implementation against all of them, ``python -m
harness.vectors`` is the command line."""

import hashlib
from pathlib import Path
from typing import Any

VECTORS_DIR = Path(__file__).resolve().parents[2] / "vectors"


GENERATED = "2026-11-25"


def provenance(sources: list[str], method: str) -> dict[str, Any]:
    return {"generator": "harness/vectors/generate.py", "independent_of": "velocity.core",
            "method": method, "sources": sources, "generated": GENERATED}


def stream_bytes(label: str, size: int) -> bytes:
    """Deterministic filler bytes: SHA-256 in counter mode over ``label``."""
    out = b"".join(hashlib.sha256(f"{label}/{i}".encode()).digest()
                   for i in range(size // 32 + 1))
    return out[:size]
