"""ML-DSA verification on every backend against Wycheproof (pure mode, empty context) and
the NIST ACVP keyGen and sigVer files where a backend's API can run them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa
from dilithium_py import ml_dsa

from velocity.crypto.dsa import DSA_BACKENDS, PARAMETER_SETS, DsaBackend


@pytest.mark.spec("VEL-PROF-007")
@pytest.mark.parametrize("backend", DSA_BACKENDS.values(), ids=lambda b: b.name)
@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_wycheproof_verify(shared_vectors: Path, backend: DsaBackend, parameter_set: str) -> None:
    size = parameter_set.rsplit("-", 1)[1]
    data = json.loads((shared_vectors / f"wycheproof/testvectors_v1/mldsa_{size}_verify_test.json")
                      .read_text())
    checked = 0
    for group in data["testGroups"]:
        public = bytes.fromhex(group["publicKey"])
        for case in group["tests"]:
            if case.get("ctx"):
                continue  # Velocity verifies with the empty context only
            ok = backend.verify(parameter_set, public, bytes.fromhex(case["msg"]),
                                bytes.fromhex(case["sig"]))
            assert ok is (case["result"] == "valid"), (backend.name, case["tcId"])
            checked += 1
    assert checked > 20


@pytest.mark.spec("VEL-PROF-007")
def test_acvp_keygen_on_cryptography_and_dilithium_py(shared_vectors: Path) -> None:
    classes = {"ML-DSA-44": mldsa.MLDSA44PrivateKey, "ML-DSA-65": mldsa.MLDSA65PrivateKey,
               "ML-DSA-87": mldsa.MLDSA87PrivateKey}
    data = json.loads((shared_vectors / "acvp/ML-DSA-keyGen-FIPS204/internalProjection.json")
                      .read_text())
    for group in data["testGroups"]:
        scheme = getattr(ml_dsa, group["parameterSet"].replace("-", "_"))
        for case in group["tests"][:5]:
            seed = bytes.fromhex(case["seed"])
            public = classes[group["parameterSet"]].from_seed_bytes(seed).public_key()
            assert public.public_bytes_raw().hex().upper() == case["pk"].upper()
            assert scheme._keygen_internal(seed)[0].hex().upper() == case["pk"].upper()


@pytest.mark.spec("VEL-PROF-007")
def test_acvp_sigver_internal_on_dilithium_py(shared_vectors: Path) -> None:
    """ACVP sigVer feeds M' to Verify_internal, which only dilithium-py exposes."""
    data = json.loads((shared_vectors / "acvp/ML-DSA-sigVer-FIPS204/internalProjection.json")
                      .read_text())
    for group in data["testGroups"]:
        scheme = getattr(ml_dsa, group["parameterSet"].replace("-", "_"))
        public = bytes.fromhex(group["pk"])
        for case in group["tests"]:
            ok = scheme._verify_internal(public, bytes.fromhex(case["message"]),
                                         bytes.fromhex(case["signature"]))
            assert ok is case["testPassed"], case["tcId"]
