"""The ML-KEM interface the core uses (spec section 9): parameter sets with their sizes, and
the ``KemBackend`` protocol that ``velocity.crypto.kem`` implements three times
(cryptography/OpenSSL, pqcrypto/PQClean, kyber-py)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class KemSizes:
    encapsulation_key: int
    ciphertext: int
    shared_secret: int = 32
    seed: int = 64


class KemParams(Enum):
    """FIPS 203 parameter sets."""

    ML_KEM_512 = "ML-KEM-512"
    ML_KEM_768 = "ML-KEM-768"
    ML_KEM_1024 = "ML-KEM-1024"

    @property
    def sizes(self) -> KemSizes:
        return _SIZES[self]


_SIZES = {
    KemParams.ML_KEM_512: KemSizes(800, 768),
    KemParams.ML_KEM_768: KemSizes(1184, 1088),
    KemParams.ML_KEM_1024: KemSizes(1568, 1568),
}


class KemKey(Protocol):
    """A decapsulation key. ``seed`` (d || z, 64 bytes) is what key files store."""

    @property
    def params(self) -> KemParams: ...

    @property
    def encapsulation_key(self) -> bytes: ...

    @property
    def seed(self) -> bytes | None: ...

    def decapsulate(self, ciphertext: bytes) -> bytes:
        """Return the shared secret; raise ``ValueError`` for a malformed ciphertext
        (a well-formed wrong one yields the implicit-rejection secret)."""
        ...


class KemBackend(Protocol):
    """One ML-KEM implementation. ``deterministic`` says whether ``generate`` honours its
    seed and ``encapsulate`` its ``m``, which seeded, byte-reproducible runs need."""

    @property
    def name(self) -> str: ...

    @property
    def deterministic(self) -> bool: ...

    def supports(self, params: KemParams) -> bool: ...

    def name_for(self, params: KemParams) -> str:
        """The implementation that runs ``params`` (shown in diagnostics and transcripts)."""
        ...

    def generate(self, params: KemParams, seed: bytes) -> KemKey:
        """An ephemeral key; backends that cannot seed key generation ignore ``seed``."""
        ...

    def load(self, params: KemParams, seed: bytes) -> KemKey:
        """The key that ``seed`` determines (FIPS 203 ML-KEM.KeyGen_internal(d, z))."""
        ...

    def encapsulate(self, params: KemParams, encapsulation_key: bytes,
                    m: bytes) -> tuple[bytes, bytes]:
        """Return (ciphertext, shared secret). Raise ``ValueError`` when the key fails the
        FIPS 203 section 7.2 checks. Backends that cannot fix ``m`` draw their own."""
        ...
