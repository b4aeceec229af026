"""Tickets and Retry tokens: sealed, rotated, bound and short-lived as the spec says."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.crypto.test_pki import NOW
from velocity.core.entropy import SeededEntropy
from velocity.core.errors import InvalidToken
from velocity.core.hybrid import BALANCED, LIGHT
from velocity.crypto.identity import ServerIdentity
from velocity.crypto.kem import KyberPyKem
from velocity.crypto.keyring import KeyRing
from velocity.crypto.sealing import RetryTokens, ticket_sealer


@pytest.mark.spec("VEL-RES-002")
def test_ticket_keys_rotate_keeping_one_previous_key() -> None:
    sealer = ticket_sealer(bytes(32))
    first = sealer.seal(b"state one", bytes(12))
    sealer.rotate(b"\x01" * 32)
    second = sealer.seal(b"state two", bytes(12))
    assert (sealer.open(first), sealer.open(second)) == (b"state one", b"state two")
    sealer.rotate(b"\x02" * 32)
    assert sealer.open(first) is None
    assert sealer.open(second) == b"state two"
    tampered = bytearray(second)
    tampered[-1] ^= 1
    assert sealer.open(bytes(tampered)) is None
    assert sealer.open(b"short") is None


@pytest.mark.spec("VEL-RTY-005")
def test_retry_tokens_bind_address_port_dcid_and_lifetime() -> None:
    tokens = RetryTokens(bytes(16), lifetime_ms=10_000)
    token = tokens.issue("127.0.0.1", 5000, b"odcid", now_ms=1_000, nonce=bytes(12))
    assert tokens.validate(token, "127.0.0.1", 5000, now_ms=5_000) == b"odcid"
    for address, port, now in (("127.0.0.2", 5000, 5_000), ("127.0.0.1", 5001, 5_000),
                               ("127.0.0.1", 5000, 11_001), ("127.0.0.1", 5000, 999)):
        with pytest.raises(InvalidToken):
            tokens.validate(token, address, port, now_ms=now)
    tokens.rotate(b"\x01" * 16)
    assert tokens.validate(token, "127.0.0.1", 5000, now_ms=2_000) == b"odcid"
    assert tokens.validate(b"\x07" + token[1:], "127.0.0.1", 5000, now_ms=2_000) is None


@pytest.mark.spec("VEL-RTY-006")
def test_a_retry_token_is_laid_out_as_the_spec_says() -> None:
    """Read and written with AES-128-GCM directly: key id, nonce, then the sealed
    issue time, ODCID, address text and port."""
    key, nonce = bytes(range(16)), bytes(range(100, 112))
    token = RetryTokens(key).issue("192.0.2.7", 4433, b"\xaa" * 8, now_ms=123_456, nonce=nonce)
    assert token[0] == 0 and token[1:13] == nonce
    plain = AESGCM(key).decrypt(nonce, token[13:], b"velocity1 retry")
    assert plain == (struct.pack(">Q", 123_456) + b"\x08" + b"\xaa" * 8 + b"\x09192.0.2.7"
                     + struct.pack(">H", 4433))
    made = AESGCM(key).encrypt(nonce, struct.pack(">Q", 1_000) + b"\x02od\x09192.0.2.7"
                               + struct.pack(">H", 9), b"velocity1 retry")
    assert RetryTokens(key).validate(b"\x00" + nonce + made, "192.0.2.7", 9,
                                     now_ms=2_000) == b"od"


@pytest.mark.spec("VEL-RTY-008")
def test_new_tokens_bind_the_address_not_the_port_and_failures_are_ignored() -> None:
    tokens = RetryTokens(bytes(16), lifetime_ms=10_000)
    token = tokens.issue("127.0.0.1", 5000, b"", now_ms=1_000, nonce=bytes(12))
    day = 24 * 3600 * 1000
    assert tokens.validate(token, "127.0.0.1", 6000, now_ms=50_000, lifetime_ms=day) == b""
    assert tokens.validate(token, "127.0.0.2", 5000, now_ms=50_000, lifetime_ms=day) is None
    assert tokens.validate(token, "127.0.0.1", 5000, now_ms=2 * day, lifetime_ms=day) is None


@pytest.mark.spec("VEL-CERT-005")
def test_key_ring_keeps_the_previous_key_through_the_overlap() -> None:
    kem = KyberPyKem()
    old = ServerIdentity.create(BALANCED, entropy=SeededEntropy(1), names=("a",), now=NOW)
    new = ServerIdentity.create(BALANCED, entropy=SeededEntropy(2), names=("a",), now=NOW)
    light = ServerIdentity.create(LIGHT, entropy=SeededEntropy(3), names=("a",), now=NOW)
    ring = KeyRing(overlap_ms=1_000)
    ring.add(old.static_key(kem))
    ring.add(light.static_key(kem))
    ring.rotate(new.static_key(kem), now_ms=10_000)
    ids = [k.key_id for k in ring.active(now_ms=10_500)]
    assert ids == [new.key_id, light.key_id, old.key_id]
    assert [k.key_id for k in ring.active(now_ms=11_000)] == [new.key_id, light.key_id]
