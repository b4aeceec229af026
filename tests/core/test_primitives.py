"""The primitives under packet protection and the key schedule, checked against the public
Wycheproof and RFC files in ../shared/vectors: HKDF through ``velocity.core.keyschedule``,
and the AEAD and X25519 classes of ``cryptography`` exactly as the core uses them (12-byte
nonces, 16-byte tags). Without the folder these tests skip and say why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from velocity.core.keyschedule import expand, extract


def wycheproof(shared: Path, name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    data = json.loads((shared / "wycheproof" / "testvectors_v1" / name).read_text())
    return [(group, test) for group in data["testGroups"] for test in group["tests"]]


@pytest.mark.parametrize(("file", "hash_name"), [("hkdf_sha256_test.json", "sha256"),
                                                 ("hkdf_sha384_test.json", "sha384")])
def test_hkdf_wycheproof(shared_vectors: Path, file: str, hash_name: str) -> None:
    cases = wycheproof(shared_vectors, file)
    checked = 0
    for _, case in cases:
        if case["result"] != "valid":
            continue  # invalid cases ask for more output than HKDF allows; expand refuses
        prk = extract(hash_name, bytes.fromhex(case["salt"]), bytes.fromhex(case["ikm"]))
        okm = expand(hash_name, prk, bytes.fromhex(case["info"]), case["size"])
        assert okm.hex() == case["okm"], f"tcId {case['tcId']}"
        checked += 1
    assert checked > 50


def test_hkdf_rfc5869(shared_vectors: Path) -> None:
    cases = json.loads((shared_vectors / "rfc" / "rfc_kdf_x25519_quic.json").read_text())[
        "rfc5869_hkdf_sha256"]
    for case in cases:
        prk = extract("sha256", bytes.fromhex(case["salt"]), bytes.fromhex(case["ikm"]))
        assert prk.hex() == case["prk"]
        assert expand("sha256", prk, bytes.fromhex(case["info"]), case["L"]).hex() == case["okm"]


@pytest.mark.parametrize(("file", "cls"), [("aes_gcm_test.json", AESGCM),
                                           ("chacha20_poly1305_test.json", ChaCha20Poly1305)])
def test_aead_wycheproof(shared_vectors: Path, file: str, cls: type) -> None:
    checked = 0
    for group, case in wycheproof(shared_vectors, file):
        if group["ivSize"] != 96 or group["tagSize"] != 128 or (
                cls is AESGCM and group["keySize"] not in (128, 256)):
            continue  # the only shapes Velocity/1 uses
        aead = cls(bytes.fromhex(case["key"]))
        iv, aad = bytes.fromhex(case["iv"]), bytes.fromhex(case["aad"])
        sealed = bytes.fromhex(case["ct"] + case["tag"])
        if case["result"] == "valid":
            assert aead.encrypt(iv, bytes.fromhex(case["msg"]), aad) == sealed
            assert aead.decrypt(iv, sealed, aad).hex() == case["msg"]
        else:
            with pytest.raises(InvalidTag):
                aead.decrypt(iv, sealed, aad)
        checked += 1
    assert checked > 100


def test_x25519_wycheproof(shared_vectors: Path) -> None:
    """Valid cases agree; every low-order case that yields the all-zero secret is refused
    by the library, which is what VEL-PROF-006 relies on."""
    refused = 0
    for _, case in wycheproof(shared_vectors, "x25519_test.json"):
        private = X25519PrivateKey.from_private_bytes(bytes.fromhex(case["private"]))
        public = X25519PublicKey.from_public_bytes(bytes.fromhex(case["public"]))
        if case["shared"] == "00" * 32:
            with pytest.raises(ValueError):
                private.exchange(public)
            refused += 1
            continue
        assert private.exchange(public).hex() == case["shared"], f"tcId {case['tcId']}"
    assert refused > 0


def test_x25519_rfc7748(shared_vectors: Path) -> None:
    rfc = json.loads((shared_vectors / "rfc" / "rfc_kdf_x25519_quic.json").read_text())[
        "rfc7748_x25519"]
    for case in rfc["section_5_2_vectors"]:
        private = X25519PrivateKey.from_private_bytes(bytes.fromhex(case["scalar"]))
        public = X25519PublicKey.from_public_bytes(bytes.fromhex(case["u"]))
        assert private.exchange(public).hex() == case["output"]
    dh = rfc["section_6_1_dh"]
    alice = X25519PrivateKey.from_private_bytes(bytes.fromhex(dh["alice_private"]))
    bob = X25519PrivateKey.from_private_bytes(bytes.fromhex(dh["bob_private"]))
    assert alice.public_key().public_bytes_raw().hex() == dh["alice_public"]
    assert alice.exchange(bob.public_key()).hex() == dh["shared"]
