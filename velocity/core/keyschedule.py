"""HKDF and the labelled derivations of Velocity/1 (spec "Key schedule"): pure functions.

``expand_label`` is TLS 1.3's HKDF-Expand-Label (RFC 8446 section 7.1) with the label
prefix ``"velocity1 "`` in place of ``"tls13 "``; the prefix is a parameter so that the same
code reproduces RFC 9001's QUIC v1 vectors.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from velocity.core.errors import UsageError

LABEL_PREFIX = b"velocity1 "

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    try:
        return HASHES[name]()
    except KeyError:
        raise UsageError(f"unknown hash {name!r}; expected one of {sorted(HASHES)}") from None


def extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract; an empty salt means HashLen zero bytes (RFC 5869)."""
    return HKDF.extract(hash_algorithm(hash_name), salt or None, ikm)


def expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(hash_algorithm(hash_name), length, info).derive(prk)


def hkdf_label(label: bytes, context: bytes, length: int, prefix: bytes = LABEL_PREFIX) -> bytes:
    """The HkdfLabel structure: uint16 length, opaque label<7..255>, opaque context<0..255>."""
    full = prefix + label
    if not 7 <= len(full) <= 255 or len(context) > 255:
        raise UsageError(f"label {full!r} or its context has an illegal length")
    return length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context


def expand_label(hash_name: str, secret: bytes, label: bytes, context: bytes, length: int,
                 prefix: bytes = LABEL_PREFIX) -> bytes:
    """HKDF-Expand-Label(Secret, Label, Context, Length)."""
    return expand(hash_name, secret, hkdf_label(label, context, length, prefix), length)
