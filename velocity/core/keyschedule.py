"""HKDF and the labelled derivations of Velocity/1 (spec "Key schedule"): pure functions.

``expand_label`` is TLS 1.3's HKDF-Expand-Label (RFC 8446 section 7.1) with the label
prefix ``"velocity1 "`` in place of ``"tls13 "``; the prefix is a parameter so that the same
code reproduces RFC 9001's QUIC v1 vectors.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

from velocity.core.errors import UsageError

LABEL_PREFIX = b"velocity1 "

DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
_BLOCK_SIZES = {"sha256": 64, "sha384": 128, "sha512": 128}
_EMPTY = {name: hashlib.new(name) for name in DIGEST_SIZES}
_INNER_PAD = bytes(value ^ 0x36 for value in range(256))
_OUTER_PAD = bytes(value ^ 0x5C for value in range(256))


class HmacKey:
    """HMAC (RFC 2104) under one key with its padded inner and outer hash states computed
    once, so each MAC costs two hash copies and two digests. ``hmac.digest`` sets up an
    OpenSSL HMAC context on every call, which costs several times more for the short
    inputs of a key schedule, and every secret here is used for more than one label."""

    __slots__ = ("_inner", "_outer", "digest_size", "hash_name")

    def __init__(self, hash_name: str, key: bytes) -> None:
        self.hash_name = hash_name
        try:
            empty, block = _EMPTY[hash_name], _BLOCK_SIZES[hash_name]
            self.digest_size = DIGEST_SIZES[hash_name]
        except KeyError:
            raise UsageError(f"unknown hash {hash_name!r}") from None
        if len(key) > block:
            key = hashlib.new(hash_name, key).digest()
        key = key.ljust(block, b"\x00")
        self._inner = empty.copy()
        self._inner.update(key.translate(_INNER_PAD))
        self._outer = empty.copy()
        self._outer.update(key.translate(_OUTER_PAD))

    def mac(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def expand(self, info: bytes, length: int) -> bytes:
        """HKDF-Expand (RFC 5869) with this key as the PRK."""
        if length <= self.digest_size:  # one block: every derivation of the key schedule
            return self.mac(info + b"\x01")[:length]
        out, block, counter = b"", b"", 1
        while len(out) < length:
            block = self.mac(block + info + bytes([counter]))
            out += block
            counter += 1
        return out[:length]

    def expand_label(self, label: bytes, context: bytes, length: int,
                     prefix: bytes = LABEL_PREFIX) -> bytes:
        """HKDF-Expand-Label(this secret, Label, Context, Length)."""
        if not context:
            return self.expand(_empty_context_label(label, length, prefix), length)
        return self.expand(hkdf_label(label, context, length, prefix), length)


def extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract = HMAC(salt, IKM); an empty salt means HashLen zero bytes (RFC 5869)."""
    return HmacKey(hash_name, salt or bytes(DIGEST_SIZES[hash_name])).mac(ikm)


def expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand."""
    return HmacKey(hash_name, prk).expand(info, length)


@functools.cache
def _label_vector(prefix: bytes, label: bytes) -> bytes:
    full = prefix + label
    if not 7 <= len(full) <= 255:
        raise UsageError(f"label {full!r} has an illegal length")
    return bytes([len(full)]) + full


@functools.cache
def _empty_context_label(label: bytes, length: int, prefix: bytes) -> bytes:
    """The HkdfLabel of a packet-key derivation (key, iv, hp, ku, ...): always the same."""
    return hkdf_label(label, b"", length, prefix)


def hkdf_label(label: bytes, context: bytes, length: int, prefix: bytes = LABEL_PREFIX) -> bytes:
    """The HkdfLabel structure: uint16 length, opaque label<7..255>, opaque context<0..255>."""
    if len(context) > 255:
        raise UsageError("HKDF label context longer than 255 bytes")
    return (length.to_bytes(2, "big") + _label_vector(prefix, label) + bytes([len(context)])
            + context)


def expand_label(hash_name: str, secret: bytes, label: bytes, context: bytes, length: int,
                 prefix: bytes = LABEL_PREFIX) -> bytes:
    """HKDF-Expand-Label(Secret, Label, Context, Length)."""
    return HmacKey(hash_name, secret).expand_label(label, context, length, prefix)


def transcript_digest(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(hash_name, data).digest()


def finished_mac(hash_name: str, base_key: bytes, transcript_hash: bytes) -> bytes:
    """FINISHED verify_data (and the PSK binder): HMAC(finished_key, transcript hash)."""
    key = expand_label(hash_name, base_key, b"finished", b"", DIGEST_SIZES[hash_name])
    return HmacKey(hash_name, key).mac(transcript_hash)


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
        self._secret = HmacKey(hash_name, self._record(
            "early_secret", extract(hash_name, self._zero, psk or self._zero)))

    def erase(self) -> None:
        """Drop the current stage's secret and the recorded steps (VEL-KS-006): nothing can
        be derived afterwards."""
        self._secret = HmacKey(self.hash_name, self._zero)
        self.steps.clear()

    def _record(self, name: str, value: bytes) -> bytes:
        self.steps.append((name, value))
        return value

    def _derive(self, name: str, label: bytes, transcript_hash: bytes) -> bytes:
        return self._record(name, self._secret.expand_label(label, transcript_hash,
                                                            self.hash_length))

    def _next_stage(self, name: str, ikm: bytes) -> None:
        derived = self._derive(f"derived_before_{name}", b"derived", self._empty_hash)
        self._secret = HmacKey(self.hash_name,
                               self._record(name, extract(self.hash_name, derived, ikm)))

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


FALLBACK_LABELS = {"static": b"fallback", "resumption": b"res fallback"}


def fallback_mac(hash_name: str, ikm: bytes, client_hello: bytes,
                 fallback_without_mac: bytes, *, keyed_by: str = "static") -> bytes:
    """The MAC that authenticates a FALLBACK directive: keyed from the static-KEM secret
    (``keyed_by="static"``, VEL-FB-003) or from the resumption PSK a resuming client offered
    (``keyed_by="resumption"``, VEL-FB-010)."""
    length = hashlib.new(hash_name).digest_size
    fb_secret = extract(hash_name, bytes(length), ikm)
    key = expand_label(hash_name, fb_secret, FALLBACK_LABELS[keyed_by],
                       transcript_digest(hash_name, client_hello), length)
    return HmacKey(hash_name, key).mac(
        transcript_digest(hash_name, client_hello + fallback_without_mac))
