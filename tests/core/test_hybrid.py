"""The hybrid key exchange: exact share and secret layouts per profile, interoperability with
qh3's X25519MLKEM768 in both directions, and refusal of bad shares."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from qh3._hazmat import X25519ML768KeyExchange

from velocity.core.entropy import SeededEntropy
from velocity.core.errors import IllegalParameter
from velocity.core.hybrid import (
    BALANCED,
    LIGHT,
    PROFILES,
    SECURE,
    ClientKeyShare,
    Profile,
    server_key_share,
)
from velocity.crypto.kem import BACKENDS, kem_backend

SIZES = {LIGHT: (832, 800, 64), BALANCED: (1216, 1120, 64), SECURE: (1665, 1665, 80)}


@pytest.mark.spec("VEL-PROF-001", "VEL-PROF-002", "VEL-PROF-003", "VEL-PROF-004", "VEL-KS-005")
@pytest.mark.parametrize("profile", PROFILES.values(), ids=lambda p: p.name)
@pytest.mark.parametrize("backend", BACKENDS)
def test_share_and_secret_layouts(profile: Profile, backend: str) -> None:
    kem = kem_backend(backend)
    client = ClientKeyShare(profile, kem, SeededEntropy(1))
    server_share, secret = server_key_share(profile, kem, client.share, SeededEntropy(2))
    assert (len(client.share), len(server_share), len(secret.shared_secret)) == SIZES[profile]
    assert client.finish(server_share) == secret
    kem_part, ecdh_part = secret.kem_secret, secret.ecdh_secret
    expected = kem_part + ecdh_part if profile.kem_first else ecdh_part + kem_part
    assert secret.shared_secret == expected
    if profile is SECURE:
        assert client.share[0] == 0x04 and server_share[0] == 0x04  # uncompressed P-384 first
    else:
        assert client.share[-32:] == client._ecdh.public  # X25519 last


@pytest.mark.spec("VEL-PROF-002")
@pytest.mark.parametrize("backend", ["cryptography", "pqcrypto", "kyber-py"])
def test_qh3_client_to_velocity_server(backend: str) -> None:
    qh3 = X25519ML768KeyExchange()
    share, secret = server_key_share(BALANCED, kem_backend(backend), qh3.public_key(),
                                     SeededEntropy(3))
    assert qh3.exchange(share) == secret.shared_secret


@pytest.mark.spec("VEL-PROF-002")
@pytest.mark.parametrize("backend", ["cryptography", "pqcrypto", "kyber-py"])
def test_velocity_client_to_qh3_server(backend: str) -> None:
    client = ClientKeyShare(BALANCED, kem_backend(backend), SeededEntropy(4))
    qh3 = X25519ML768KeyExchange()
    shared = qh3.exchange(client.share)
    assert client.finish(qh3.shared_ciphertext()).shared_secret == shared


@pytest.mark.spec("VEL-PROF-006")
def test_all_zero_x25519_result_is_illegal() -> None:
    client = ClientKeyShare(BALANCED, kem_backend(), SeededEntropy(5))
    low_order = client.share[:-32] + bytes(32)
    with pytest.raises(IllegalParameter) as info:
        server_key_share(BALANCED, kem_backend(), low_order, SeededEntropy(6))
    assert info.value.field == "key_share"
    share, _ = server_key_share(BALANCED, kem_backend(), client.share, SeededEntropy(6))
    with pytest.raises(IllegalParameter):
        client.finish(share[:-32] + bytes(32))


@pytest.mark.spec("VEL-PROF-005")
@pytest.mark.parametrize("backend", BACKENDS)
def test_encapsulation_key_failing_the_modulus_check_is_illegal(backend: str) -> None:
    client = ClientKeyShare(BALANCED, kem_backend(backend), SeededEntropy(7))
    broken = b"\xff\xff" + client.share[2:]  # first coefficient 0xfff > q
    with pytest.raises(IllegalParameter) as info:
        server_key_share(BALANCED, kem_backend(backend), broken, SeededEntropy(8))
    assert info.value.field == "CLIENT_HELLO.key_share"


@pytest.mark.spec("VEL-PROF-005")
def test_p384_point_off_the_curve_and_bad_lengths_are_illegal() -> None:
    client = ClientKeyShare(SECURE, kem_backend(), SeededEntropy(9))
    off_curve = b"\x04" + bytes(96) + client.share[97:]
    with pytest.raises(IllegalParameter):
        server_key_share(SECURE, kem_backend(), off_curve, SeededEntropy(10))
    with pytest.raises(IllegalParameter):
        server_key_share(SECURE, kem_backend(), client.share[:-1], SeededEntropy(10))
    with pytest.raises(IllegalParameter):
        client.finish(b"\x00" * 10)


def test_seeded_shares_are_reproducible_on_the_deterministic_backend() -> None:
    kem = kem_backend("kyber-py")
    first = ClientKeyShare(BALANCED, kem, SeededEntropy(11)).share
    assert ClientKeyShare(BALANCED, kem, SeededEntropy(11)).share == first
    assert x25519.X25519PublicKey.from_public_bytes(first[-32:])
