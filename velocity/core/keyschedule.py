"""HKDF and the labelled derivations of Velocity/1 (spec "Key schedule"): pure functions.

``expand_label`` is TLS 1.3's HKDF-Expand-Label (RFC 8446 section 7.1) with the label
prefix ``"velocity1 "`` in place of ``"tls13 "``; the prefix is a parameter so that the same
code reproduces RFC 9001's QUIC v1 vectors.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from velocity.core.errors import UsageError, lookup

LABEL_PREFIX = b"velocity1 "

DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    return lookup(HASHES, name, "hash")()


def extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract = HMAC(salt, IKM); an empty salt means HashLen zero bytes (RFC 5869)."""
    return hmac.digest(salt or bytes(DIGEST_SIZES[hash_name]), ikm, hash_name)


def expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand; one HMAC block covers every derivation the handshake makes."""
    if length <= DIGEST_SIZES[hash_name]:
        return hmac.digest(prk, info + b"\x01", hash_name)[:length]
    return HKDFExpand(hash_algorithm(hash_name), length, info).derive(prk)


@functools.cache
def _label_vector(prefix: bytes, label: bytes) -> bytes:
    full = prefix + label
    if not 7 <= len(full) <= 255:
        raise UsageError(f"label {full!r} has an illegal length")
    return bytes([len(full)]) + full


def hkdf_label(label: bytes, context: bytes, length: int, prefix: bytes = LABEL_PREFIX) -> bytes:
    """The HkdfLabel structure: uint16 length, opaque label<7..255>, opaque context<0..255>."""
    if len(context) > 255:
        raise UsageError("HKDF label context longer than 255 bytes")
    return (length.to_bytes(2, "big") + _label_vector(prefix, label) + bytes([len(context)])
            + context)


def expand_label(hash_name: str, secret: bytes, label: bytes, context: bytes, length: int,
                 prefix: bytes = LABEL_PREFIX) -> bytes:
    """HKDF-Expand-Label(Secret, Label, Context, Length)."""
    return expand(hash_name, secret, hkdf_label(label, context, length, prefix), length)


def transcript_digest(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(hash_name, data).digest()


def finished_mac(hash_name: str, base_key: bytes, transcript_hash: bytes) -> bytes:
    """FINISHED verify_data (and the PSK binder): HMAC(finished_key, transcript hash)."""
    key = expand_label(hash_name, base_key, b"finished", b"", DIGEST_SIZES[hash_name])
    return hmac.digest(key, transcript_hash, hash_name)


def macs_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


class KeySchedule:
    """The Velocity/1 key schedule (spec section 11) for one handshake.

    Each stage is a method that takes the transcript hash it needs; every derived value is
    appended to ``steps`` as (name, value) so vectors and traces can show the whole schedule.
    """

    def __init__(self, hash_name: str, psk: bytes | None = None) -> None:
        self.hash_name = hash_name
        self.hash_length = DIGEST_SIZES[hash_name]
        self._zero = bytes(self.hash_length)
        self._empty_hash = transcript_digest(hash_name, b"")
        self.steps: list[tuple[str, bytes]] = []
        self._secret = self._record("early_secret", extract(hash_name, self._zero,
                                                            psk or self._zero))

    def _record(self, name: str, value: bytes) -> bytes:
        self.steps.append((name, value))
        return value

    def _derive(self, name: str, label: bytes, transcript_hash: bytes) -> bytes:
        return self._record(name, expand_label(self.hash_name, self._secret, label,
                                               transcript_hash, self.hash_length))

    def _next_stage(self, name: str, ikm: bytes) -> None:
        derived = self._derive(f"derived_before_{name}", b"derived", self._empty_hash)
        self._secret = self._record(name, extract(self.hash_name, derived, ikm))

    def binder_key(self) -> bytes:
        return self._derive("binder_key", b"res binder", self._empty_hash)

    def client_early_secret(self, client_hello_hash: bytes) -> bytes:
        return self._derive("client_early_secret", b"c e traffic", client_hello_hash)

    def enter_handshake(self, ikm: bytes) -> None:
        """ikm = ss_eph (discovery, resumption) or ss_eph || ss_static (PDK)."""
        self._next_stage("handshake_secret", ikm)

    def handshake_secrets(self, transcript_hash: bytes) -> tuple[bytes, bytes]:
        return (self._derive("client_hs_secret", b"c hs traffic", transcript_hash),
                self._derive("server_hs_secret", b"s hs traffic", transcript_hash))

    def enter_authenticated(self, ss_static: bytes) -> None:
        """Discovery mode: the KEMTLS authenticated handshake secret."""
        self._next_stage("ahs_secret", ss_static)

    def authenticated_secrets(self, transcript_hash: bytes) -> tuple[bytes, bytes]:
        return (self._derive("client_ahs_secret", b"c ahs traffic", transcript_hash),
                self._derive("server_ahs_secret", b"s ahs traffic", transcript_hash))

    def enter_master(self) -> None:
        self._next_stage("master_secret", self._zero)

    def application_secrets(self, transcript_hash: bytes) -> tuple[bytes, bytes, bytes]:
        """(client_ap_secret, server_ap_secret, exporter_secret)."""
        return (self._derive("client_ap_secret", b"c ap traffic", transcript_hash),
                self._derive("server_ap_secret", b"s ap traffic", transcript_hash),
                self._derive("exporter_secret", b"exp master", transcript_hash))

    def resumption_secret(self, transcript_hash: bytes) -> bytes:
        return self._derive("resumption_secret", b"res master", transcript_hash)


def resumption_psk(hash_name: str, resumption_secret: bytes, ticket_nonce: bytes) -> bytes:
    return expand_label(hash_name, resumption_secret, b"resumption", ticket_nonce,
                        hashlib.new(hash_name).digest_size)


def fallback_mac(hash_name: str, ss_static: bytes, client_hello: bytes,
                 fallback_without_mac: bytes) -> bytes:
    """The MAC that authenticates a FALLBACK directive (spec VEL-FB-003)."""
    length = hashlib.new(hash_name).digest_size
    fb_secret = extract(hash_name, bytes(length), ss_static)
    key = expand_label(hash_name, fb_secret, b"fallback",
                       transcript_digest(hash_name, client_hello), length)
    return hmac.new(key, transcript_digest(hash_name, client_hello + fallback_without_mac),
                    hash_name).digest()
