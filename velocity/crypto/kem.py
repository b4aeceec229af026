"""The three ML-KEM backends behind ``velocity.core.kem.KemBackend``.

| backend | parameter sets | seeded keygen | fixed-m encaps |
|---|---|---|---|
| ``cryptography`` (OpenSSL) | 768, 1024 | yes | no |
| ``pqcrypto`` (PQClean) | 512, 768, 1024 | ``load`` only (via kyber-py) | no |
| ``kyber-py`` (pure Python) | 512, 768, 1024 | yes | yes |

Only kyber-py is fully deterministic, so byte-reproducible handshakes run on it; the others
draw encapsulation randomness inside their libraries.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import mlkem

from velocity.core.errors import UsageError, lookup
from velocity.core.kem import KemBackend, KemKey, KemParams

_OPENSSL = {
    KemParams.ML_KEM_768: (mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey),
    KemParams.ML_KEM_1024: (mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey),
}
_SUFFIX = {KemParams.ML_KEM_512: "512", KemParams.ML_KEM_768: "768",
           KemParams.ML_KEM_1024: "1024"}


@dataclass(frozen=True)
class _Key:
    """A key held by a backend as ``private`` (a library object or expanded bytes)."""

    params: KemParams
    encapsulation_key: bytes
    seed: bytes | None
    private: Any = field(repr=False)
    backend: str = ""

    def decapsulate(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) != self.params.sizes.ciphertext:
            raise ValueError(f"{self.params.value} ciphertext must be "
                             f"{self.params.sizes.ciphertext} bytes, not {len(ciphertext)}")
        return _DECAPS[self.backend](self, ciphertext)


def _kyber(params: KemParams) -> Any:
    return getattr(importlib.import_module("kyber_py.ml_kem"), f"ML_KEM_{_SUFFIX[params]}")


def _pqclean(params: KemParams) -> Any:
    return importlib.import_module(f"pqcrypto.kem.ml_kem_{_SUFFIX[params]}")


class CryptographyKem:
    name = "cryptography"
    deterministic = False

    def supports(self, params: KemParams) -> bool:
        return params in _OPENSSL

    def name_for(self, params: KemParams) -> str:
        return self.name

    def _classes(self, params: KemParams) -> tuple[Any, Any]:
        try:
            return _OPENSSL[params]
        except KeyError:
            raise UsageError(f"the cryptography backend has no {params.value}") from None

    def generate(self, params: KemParams, seed: bytes) -> KemKey:
        return self.load(params, seed)

    def load(self, params: KemParams, seed: bytes) -> KemKey:
        private = self._classes(params)[0].from_seed_bytes(seed)
        return _Key(params, private.public_key().public_bytes_raw(), seed, private, self.name)

    def encapsulate(self, params: KemParams, encapsulation_key: bytes,
                    m: bytes) -> tuple[bytes, bytes]:
        public_class = self._classes(params)[1]
        shared, ciphertext = _openssl_public_key(public_class, encapsulation_key).encapsulate()
        return ciphertext, shared


@functools.lru_cache(maxsize=4)
def _openssl_public_key(public_class: Any, encapsulation_key: bytes) -> Any:
    """A checked (FIPS 203 section 7.2) OpenSSL public key. Loading costs as much as an
    encapsulation, and a client encapsulates to the same few pinned server keys on every
    connection; a key that fails the check raises and is not kept. A server encapsulates
    to each client's fresh key once: those pass through, and the few kept pin little of the
    heap (entries made during a flood would hold freed memory in place long after it)."""
    return public_class.from_public_bytes(encapsulation_key)


class PqcryptoKem:
    name = "pqcrypto"
    deterministic = False

    def supports(self, params: KemParams) -> bool:
        return True

    def name_for(self, params: KemParams) -> str:
        return self.name

    def generate(self, params: KemParams, seed: bytes) -> KemKey:
        public, secret = _pqclean(params).keygen()
        return _Key(params, public, None, secret, self.name)

    def load(self, params: KemParams, seed: bytes) -> KemKey:
        public, expanded = _kyber(params).key_derive(seed)
        return _Key(params, public, seed, expanded, self.name)

    def encapsulate(self, params: KemParams, encapsulation_key: bytes,
                    m: bytes) -> tuple[bytes, bytes]:
        if len(encapsulation_key) != params.sizes.encapsulation_key:
            raise ValueError(f"{params.value} key must be {params.sizes.encapsulation_key} bytes")
        try:
            ciphertext, shared = _pqclean(params).encaps(encapsulation_key)
        except Exception as exc:  # PQClean reports the modulus check as a generic error
            raise ValueError(f"{params.value} encapsulation key rejected: {exc}") from None
        return ciphertext, shared


class KyberPyKem:
    name = "kyber-py"
    deterministic = True

    def supports(self, params: KemParams) -> bool:
        return True

    def name_for(self, params: KemParams) -> str:
        return self.name

    def generate(self, params: KemParams, seed: bytes) -> KemKey:
        return self.load(params, seed)

    def load(self, params: KemParams, seed: bytes) -> KemKey:
        public, expanded = _kyber(params).key_derive(seed)
        return _Key(params, public, seed, expanded, self.name)

    def encapsulate(self, params: KemParams, encapsulation_key: bytes,
                    m: bytes) -> tuple[bytes, bytes]:
        shared, ciphertext = _kyber(params)._encaps_internal(encapsulation_key, m)
        return ciphertext, shared


def _decaps_openssl(key: _Key, ciphertext: bytes) -> bytes:
    shared: bytes = key.private.decapsulate(ciphertext)
    return shared


def _decaps_pqclean(key: _Key, ciphertext: bytes) -> bytes:
    shared: bytes = _pqclean(key.params).decaps(key.private, ciphertext)
    return shared


def _decaps_kyber(key: _Key, ciphertext: bytes) -> bytes:
    shared: bytes = _kyber(key.params).decaps(key.private, ciphertext)
    return shared


_DECAPS = {"cryptography": _decaps_openssl, "pqcrypto": _decaps_pqclean,
           "kyber-py": _decaps_kyber}

BACKENDS: dict[str, KemBackend] = {b.name: b for b in (CryptographyKem(), PqcryptoKem(),
                                                       KyberPyKem())}
DEFAULT_BACKEND = "cryptography"


class PreferredKem:
    """A configured backend preference: every operation runs on ``preferred`` when it has
    the parameter set, otherwise on the first backend that does (cryptography has no
    ML-KEM-512). ``name_for`` tells which one a parameter set uses."""

    def __init__(self, preferred: str) -> None:
        self.name = preferred
        self.deterministic = lookup(BACKENDS, preferred, "KEM backend").deterministic

    def _for(self, params: KemParams) -> KemBackend:
        chosen = BACKENDS[self.name]
        if chosen.supports(params):
            return chosen
        return next(b for b in BACKENDS.values() if b.supports(params))

    def name_for(self, params: KemParams) -> str:
        return self._for(params).name

    def supports(self, params: KemParams) -> bool:
        return True

    def generate(self, params: KemParams, seed: bytes) -> KemKey:
        return self._for(params).generate(params, seed)

    def load(self, params: KemParams, seed: bytes) -> KemKey:
        return self._for(params).load(params, seed)

    def encapsulate(self, params: KemParams, encapsulation_key: bytes,
                    m: bytes) -> tuple[bytes, bytes]:
        return self._for(params).encapsulate(params, encapsulation_key, m)


def kem_backend(name: str = DEFAULT_BACKEND) -> PreferredKem:
    return PreferredKem(name)
