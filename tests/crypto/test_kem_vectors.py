"""ML-KEM on every backend against the public NIST ACVP, Wycheproof and CCTV files, each run
on the backends whose API can run it (see ../shared/vectors/README.md, section 0)."""

from __future__ import annotations

import gzip
import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from velocity.core.kem import KemBackend, KemParams
from velocity.crypto.kem import BACKENDS

PARAMS = {p.value: p for p in KemParams}


def _load(shared: Path, relative: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((shared / relative).read_text())
    return data


def _backends(params: KemParams, *, deterministic: bool = False) -> list[KemBackend]:
    return [b for b in BACKENDS.values()
            if b.supports(params) and (b.deterministic or not deterministic)]


@pytest.mark.spec("VEL-PROF-007")
def test_acvp_keygen(shared_vectors: Path) -> None:
    """d, z -> ek on every backend (``load`` reproduces a key from its seed), dk on kyber-py."""
    data = _load(shared_vectors, "acvp/ML-KEM-keyGen-FIPS203/internalProjection.json")
    checked = 0
    for group in data["testGroups"]:
        params = PARAMS[group["parameterSet"]]
        for case in group["tests"]:
            seed = bytes.fromhex(case["d"] + case["z"])
            for backend in _backends(params):
                assert backend.load(params, seed).encapsulation_key.hex().upper() == (
                    case["ek"].upper()), (backend.name, case["tcId"])
                checked += 1
    assert checked == 25 * 3 + 25 * 3 + 25 * 2


@pytest.mark.spec("VEL-PROF-007")
def test_acvp_encapsulation_and_decapsulation(shared_vectors: Path) -> None:
    """Fixed-m encapsulation where the backend takes m (kyber-py); every backend that can
    decapsulate with the group's expanded dk does, including the 'modified ciphertext'
    implicit-rejection cases."""
    data = _load(shared_vectors, "acvp/ML-KEM-encapDecap-FIPS203/internalProjection.json")
    for group in data["testGroups"]:
        params = PARAMS[group["parameterSet"]]
        suffix = params.value.rsplit("-", 1)[1]
        raw = {"kyber-py": getattr(importlib.import_module("kyber_py.ml_kem"),
                                   f"ML_KEM_{suffix}").decaps,
               "pqcrypto": lambda dk, c, s=suffix: importlib.import_module(
                   f"pqcrypto.kem.ml_kem_{s}").decaps(dk, c)}
        for case in group["tests"]:
            if group["function"] == "encapsulation":
                for backend in _backends(params, deterministic=True):
                    ciphertext, shared = backend.encapsulate(
                        params, bytes.fromhex(case["ek"]), bytes.fromhex(case["m"]))
                    assert (ciphertext.hex(), shared.hex()) == (case["c"].lower(),
                                                               case["k"].lower())
                dk = bytes.fromhex(case["dk"])
            else:
                dk = bytes.fromhex(group["dk"])
            for name, decaps in raw.items():
                assert decaps(dk, bytes.fromhex(case["c"])).hex() == case["k"].lower(), name


@pytest.mark.spec("VEL-PROF-007")
@pytest.mark.parametrize("size", ["512", "768", "1024"])
def test_wycheproof_decapsulation_from_seed(shared_vectors: Path, size: str) -> None:
    """seed, c -> K through each backend's ``load`` and ``decapsulate``; malformed seeds or
    ciphertexts are refused with ValueError."""
    params = PARAMS[f"ML-KEM-{size}"]
    data = _load(shared_vectors, f"wycheproof/testvectors_v1/mlkem_{size}_test.json")
    for backend in _backends(params):
        for group in data["testGroups"]:
            for case in group["tests"]:
                seed, ciphertext = bytes.fromhex(case["seed"]), bytes.fromhex(case["c"])
                if case["result"] == "valid":
                    key = backend.load(params, seed)
                    assert key.decapsulate(ciphertext).hex() == case["K"], (backend.name,
                                                                            case["tcId"])
                else:
                    with pytest.raises(ValueError):
                        backend.load(params, seed).decapsulate(ciphertext)


@pytest.mark.spec("VEL-PROF-005")
@pytest.mark.parametrize("size", ["512", "768", "1024"])
def test_wycheproof_encapsulation_and_key_checks(shared_vectors: Path, size: str) -> None:
    """Valid keys encapsulate (to the exact answer where m can be fixed); keys that fail the
    FIPS 203 modulus check are refused by every backend."""
    params = PARAMS[f"ML-KEM-{size}"]
    data = _load(shared_vectors, f"wycheproof/testvectors_v1/mlkem_{size}_encaps_test.json")
    refused = 0
    for backend in _backends(params):
        for group in data["testGroups"]:
            for case in group["tests"]:
                ek, m = bytes.fromhex(case["ek"]), bytes.fromhex(case["m"])
                if case["result"] == "valid":
                    ciphertext, shared = backend.encapsulate(params, ek, m)
                    if backend.deterministic:
                        assert (ciphertext.hex(), shared.hex()) == (case["c"], case["K"])
                else:
                    with pytest.raises(ValueError):
                        backend.encapsulate(params, ek, m)
                    refused += 1
    assert refused > 0


@pytest.mark.spec("VEL-PROF-005")
@pytest.mark.parametrize("size", ["512", "768", "1024"])
def test_cctv_modulus_keys_are_refused(shared_vectors: Path, size: str) -> None:
    params = PARAMS[f"ML-KEM-{size}"]
    lines = gzip.decompress((shared_vectors / f"cctv/ML-KEM/modulus/ML-KEM-{size}.txt.gz")
                            .read_bytes()).decode().split()
    sample = lines[:: max(1, len(lines) // 40)]  # an even spread keeps kyber-py affordable
    for backend in _backends(params):
        for line in sample:
            with pytest.raises(ValueError):
                backend.encapsulate(params, bytes.fromhex(line), bytes(32))


@pytest.mark.parametrize("size", ["512", "768", "1024"])
def test_wycheproof_keygen_from_seed(shared_vectors: Path, size: str) -> None:
    params = PARAMS[f"ML-KEM-{size}"]
    data = _load(shared_vectors, f"wycheproof/testvectors_v1/mlkem_{size}_keygen_seed_test.json")
    for backend in _backends(params):
        for group in data["testGroups"]:
            for case in group["tests"][:20]:
                key = backend.load(params, bytes.fromhex(case["seed"]))
                assert key.encapsulation_key.hex() == case["ek"], (backend.name, case["tcId"])


def test_backends_interoperate_on_every_parameter_set() -> None:
    for params in KemParams:
        for owner in _backends(params):
            key = owner.load(params, bytes(range(64)))
            for sender in _backends(params):
                ciphertext, shared = sender.encapsulate(params, key.encapsulation_key, bytes(32))
                assert key.decapsulate(ciphertext) == shared, (owner.name, sender.name)
