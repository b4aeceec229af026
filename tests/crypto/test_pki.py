"""Certificates and key files (spec section 10.4): real X.509 for every profile, key files
written 0600, and each trust mode accepting what it should and refusing the rest."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem

from velocity.core.entropy import SeededEntropy
from velocity.core.errors import CertificateInvalid, UsageError
from velocity.core.hybrid import BALANCED, LIGHT, PROFILES, Profile
from velocity.core.kem import KemParams
from velocity.crypto.dsa import DSA_BACKENDS, DsaBackend
from velocity.crypto.identity import ServerIdentity, previous_static_key, rotate_identity
from velocity.crypto.kem import kem_backend
from velocity.crypto.pki import (
    X509Verifier,
    certificate_kem_key,
    kem_private_key_pem,
    load_ca_file,
    load_kem_private_key_pem,
)
from velocity.keystore import TofuPins

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def identity(profile: Profile = BALANCED, seed: int = 1,
             names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> ServerIdentity:
    return ServerIdentity.create(profile, entropy=SeededEntropy(seed), names=names, now=NOW)


def verifier(**kwargs: object) -> X509Verifier:
    return X509Verifier(clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


@pytest.mark.spec("VEL-CERT-001", "VEL-CERT-002")
@pytest.mark.parametrize("profile", PROFILES.values(), ids=lambda p: p.name)
@pytest.mark.parametrize("dsa", DSA_BACKENDS.values(), ids=lambda b: b.name)
def test_chain_validates_on_every_profile_and_backend(profile: Profile, dsa: DsaBackend) -> None:
    ident = identity(profile)
    leaf = ident.leaf
    assert certificate_kem_key(leaf) == (profile.kem, ident.encapsulation_key)
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ident.ca_certificate.signature_algorithm_oid.dotted_string.startswith(
        "2.16.840.1.101.3.4.3.")
    check = verifier(anchors=[ident.ca_certificate], dsa=dsa)
    assert check.verify([ident.leaf_der], profile, "localhost") == ident.encapsulation_key
    assert check.verify([ident.leaf_der], profile, "127.0.0.1") == ident.encapsulation_key


@pytest.mark.spec("VEL-CERT-002")
def test_chain_failures_are_certificate_invalid() -> None:
    ident, other = identity(seed=1), identity(seed=2)
    cases = [
        (verifier(anchors=[other.ca_certificate]), [ident.leaf_der], BALANCED, "localhost"),
        (verifier(anchors=[ident.ca_certificate]), [ident.leaf_der], BALANCED, "example.org"),
        (verifier(anchors=[ident.ca_certificate]), [ident.leaf_der], LIGHT, "localhost"),
        (X509Verifier(anchors=[ident.ca_certificate],
                      clock=lambda: NOW + dt.timedelta(days=400)), [ident.leaf_der], BALANCED,
         "localhost"),
        (verifier(anchors=[ident.ca_certificate]), [b"not a certificate"], BALANCED,
         "localhost"),
    ]
    for check, chain, profile, name in cases:
        with pytest.raises(CertificateInvalid) as info:
            check.verify(chain, profile, name)
        assert info.value.code == 0x0105


def test_a_tampered_signature_fails_on_every_backend() -> None:
    ident = identity()
    der = bytearray(ident.leaf_der)
    der[-10] ^= 0x01
    for dsa in DSA_BACKENDS.values():
        with pytest.raises(CertificateInvalid, match="signature"):
            verifier(anchors=[ident.ca_certificate], dsa=dsa).verify([bytes(der)], BALANCED,
                                                                     "localhost")


def test_a_ca_certificate_is_not_accepted_as_a_leaf() -> None:
    ident = identity()
    ca_der = ident.ca_certificate.public_bytes(serialization.Encoding.DER)
    with pytest.raises(CertificateInvalid):
        verifier(anchors=[ident.ca_certificate]).verify([ca_der], BALANCED, None)


@pytest.mark.spec("VEL-CERT-003", "VEL-CERT-006")
def test_pinned_fingerprint_tofu_and_insecure_modes(tmp_path: Path) -> None:
    ident, other = identity(seed=1), identity(seed=2)
    assert verifier(pin=ident.fingerprint).verify([ident.leaf_der], BALANCED, "localhost")
    with pytest.raises(CertificateInvalid, match="pinned"):
        verifier(pin=ident.fingerprint).verify([other.leaf_der], BALANCED, "localhost")
    store = TofuPins(tmp_path, port=4433)
    tofu = verifier(tofu=store)
    assert tofu.verify([ident.leaf_der], BALANCED, "localhost") == ident.encapsulation_key
    assert store.pinned("localhost") == ident.fingerprint
    assert tofu.verify([ident.leaf_der], BALANCED, "localhost") == ident.encapsulation_key
    with pytest.raises(CertificateInvalid, match="first use"):
        tofu.verify([other.leaf_der], BALANCED, "localhost")
    insecure = verifier(insecure=True)
    assert insecure.verify([other.leaf_der], BALANCED, "anything") == other.encapsulation_key
    with pytest.raises(UsageError):
        verifier(pin=ident.fingerprint, insecure=True)


@pytest.mark.spec("VEL-CERT-004")
@pytest.mark.parametrize("profile", PROFILES.values(), ids=lambda p: p.name)
def test_identity_files_are_private_and_reload(tmp_path: Path, profile: Profile) -> None:
    ident = identity(profile)
    ident.save(tmp_path)
    for key_file in tmp_path.glob("*.key"):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, key_file
    again = ServerIdentity.load(profile, tmp_path)
    assert again.kem_seed == ident.kem_seed
    assert again.leaf_der == ident.leaf_der
    assert again.key_id == ident.key_id


def test_an_unreadable_rotation_time_is_a_usage_error(tmp_path: Path) -> None:
    identity().save(tmp_path)
    rotate_identity(BALANCED, tmp_path, entropy=SeededEntropy(2), now=NOW, keep_previous=True)
    (tmp_path / "balanced-rotated-at").write_text("yesterday")
    with pytest.raises(UsageError, match=r"rotation time .* not a Unix time"):
        previous_static_key(BALANCED, tmp_path, kem_backend(), now=NOW,
                            overlap=dt.timedelta(days=7))


def test_kem_key_file_matches_openssl_encoding() -> None:
    """Our seed-form PKCS#8 is byte-for-byte what OpenSSL writes for the same key."""
    seed = bytes(range(64))
    for params, cls in ((KemParams.ML_KEM_768, mlkem.MLKEM768PrivateKey),
                        (KemParams.ML_KEM_1024, mlkem.MLKEM1024PrivateKey)):
        openssl = cls.from_seed_bytes(seed).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        assert kem_private_key_pem(params, seed) == openssl
        assert load_kem_private_key_pem(openssl) == (params, seed)


def test_bad_key_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        load_kem_private_key_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(UsageError):
        ServerIdentity.load(BALANCED, tmp_path)


@pytest.mark.spec("VEL-CERT-003")
def test_ca_file_with_several_anchors(tmp_path: Path) -> None:
    first, second = identity(seed=1), identity(seed=2)
    pem = b"".join(i.ca_certificate.public_bytes(serialization.Encoding.PEM)
                   for i in (first, second))
    (tmp_path / "ca.pem").write_bytes(pem)
    check = verifier(anchors=load_ca_file(tmp_path / "ca.pem"))
    for ident in (first, second):
        assert check.verify([ident.leaf_der], BALANCED, "localhost") == ident.encapsulation_key
    (tmp_path / "leaf.pem").write_bytes(first.leaf.public_bytes(serialization.Encoding.PEM))
    for bad in (tmp_path / "leaf.pem", tmp_path / "missing.pem"):
        with pytest.raises(UsageError):
            load_ca_file(bad)
