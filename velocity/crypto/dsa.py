"""ML-DSA signature verification (FIPS 204, pure mode, empty context) behind one interface,
on cryptography (OpenSSL), pqcrypto (PQClean) and dilithium-py. Velocity only verifies CA
signatures on certificates; CAs sign with cryptography (``velocity.crypto.pki``)."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

from velocity.core.errors import lookup

PARAMETER_SETS = ("ML-DSA-44", "ML-DSA-65", "ML-DSA-87")
_OPENSSL: dict[str, Any] = {"ML-DSA-44": mldsa.MLDSA44PublicKey,
                            "ML-DSA-65": mldsa.MLDSA65PublicKey,
                            "ML-DSA-87": mldsa.MLDSA87PublicKey}


class DsaBackend(Protocol):
    @property
    def name(self) -> str: ...

    def verify(self, parameter_set: str, public_key: bytes, message: bytes,
               signature: bytes) -> bool:
        """True when ``signature`` is valid; False for any invalid signature or key."""
        ...


class CryptographyDsa:
    name = "cryptography"

    def verify(self, parameter_set: str, public_key: bytes, message: bytes,
               signature: bytes) -> bool:
        try:
            _OPENSSL[parameter_set].from_public_bytes(public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class PqcryptoDsa:
    name = "pqcrypto"

    def verify(self, parameter_set: str, public_key: bytes, message: bytes,
               signature: bytes) -> bool:
        module = importlib.import_module(
            f"pqcrypto.sign.ml_dsa_{parameter_set.rsplit('-', 1)[1]}")
        try:
            module.verify(public_key, message, signature)
        except Exception:  # PQClean reports every rejection as its own error type
            return False
        return True


class DilithiumPyDsa:
    name = "dilithium-py"

    def verify(self, parameter_set: str, public_key: bytes, message: bytes,
               signature: bytes) -> bool:
        scheme = getattr(importlib.import_module("dilithium_py.ml_dsa"),
                         parameter_set.replace("-", "_"))
        try:
            return bool(scheme.verify(public_key, message, signature))
        except ValueError:
            return False


DSA_BACKENDS: dict[str, DsaBackend] = {b.name: b for b in (CryptographyDsa(), PqcryptoDsa(),
                                                           DilithiumPyDsa())}


def dsa_backend(name: str) -> DsaBackend:
    return lookup(DSA_BACKENDS, name, "ML-DSA backend")
