"""Independent builders for vectors/hybrid.json and vectors/keyschedule.json.

The hybrid answers come from kyber-py (the FIPS 203 oracle) and ``cryptography``'s X25519 and
P-384 used directly, laid out as draft-ietf-tls-ecdhe-mlkem says; the key schedule is
recomputed from the spec's formulas with the standard library's ``hmac``. Nothing here
imports ``velocity.core``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from kyber_py.ml_kem import ML_KEM_512, ML_KEM_768, ML_KEM_1024

from harness.vectors import provenance, stream_bytes

P384_ORDER = int("ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
                 "581a0db248b0a77aecec196accc52973", 16)

# name, code, kem, ecdh, hash; the order of the table in spec section 9
PROFILES = [("light", 0xFE70, ML_KEM_512, "x25519", "sha256"),
            ("balanced", 0x11EC, ML_KEM_768, "x25519", "sha384"),
            ("secure", 0x11ED, ML_KEM_1024, "p384", "sha512")]


def ecdh_key(kind: str, entropy: bytes) -> tuple[Any, bytes]:
    """The reference derivation of an ephemeral ECDH key from entropy bytes: X25519 takes
    32 bytes as the private key; P-384 takes 56 bytes as int mod (n - 1) + 1."""
    if kind == "x25519":
        private = x25519.X25519PrivateKey.from_private_bytes(entropy)
        return private, private.public_key().public_bytes_raw()
    scalar = int.from_bytes(entropy, "big") % (P384_ORDER - 1) + 1
    key = ec.derive_private_key(scalar, ec.SECP384R1())
    return key, key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def ecdh_exchange(private: Any, peer: bytes) -> bytes:
    if isinstance(private, x25519.X25519PrivateKey):
        return private.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), peer)
    secret: bytes = private.exchange(ec.ECDH(), point)
    return secret


def hybrid() -> dict[str, Any]:
    entries = []
    for name, code, kem, kind, _ in PROFILES:
        ecdh_size = 32 if kind == "x25519" else 56
        kem_seed = stream_bytes(f"hybrid/{name}/kem", 64)
        client_ecdh = stream_bytes(f"hybrid/{name}/client ecdh", ecdh_size)
        m = stream_bytes(f"hybrid/{name}/m", 32)
        server_ecdh = stream_bytes(f"hybrid/{name}/server ecdh", ecdh_size)
        ek, _ = kem.key_derive(kem_seed)
        client_private, client_public = ecdh_key(kind, client_ecdh)
        kem_secret, ciphertext = kem._encaps_internal(ek, m)
        server_private, server_public = ecdh_key(kind, server_ecdh)
        ecdh_secret = ecdh_exchange(server_private, client_public)
        assert ecdh_secret == ecdh_exchange(client_private, server_public)
        kem_first = kind == "x25519"

        def join(kem_part: bytes, ecdh_part: bytes, first: bool = kem_first) -> bytes:
            return kem_part + ecdh_part if first else ecdh_part + kem_part
        entries.append({
            "profile": name, "code": code,
            "client_entropy": [kem_seed.hex(), client_ecdh.hex()],
            "server_entropy": [m.hex(), server_ecdh.hex()],
            "client_share": join(ek, client_public).hex(),
            "server_share": join(ciphertext, server_public).hex(),
            "kem_secret": kem_secret.hex(), "ecdh_secret": ecdh_secret.hex(),
            "shared_secret": join(kem_secret, ecdh_secret).hex()})
    return {"topic": "hybrid",
            "spec": ["VEL-PROF-001", "VEL-PROF-002", "VEL-PROF-003", "VEL-PROF-004",
                     "VEL-KS-005"],
            "provenance": provenance(
                ["draft-ietf-tls-ecdhe-mlkem (share and secret layouts)",
                 "FIPS 203 via kyber-py ML_KEM.key_derive and _encaps_internal",
                 "RFC 7748 X25519 and SEC 1 P-384 via cryptography"],
                "entropy chunks in the order the reference draws them: client (ML-KEM seed "
                "d||z, ECDH key), server (ML-KEM m, ECDH key)"),
            "vectors": entries}


# --- key schedule ------------------------------------------------------------------------

def extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(hashlib.new(hash_name).digest_size), ikm, hash_name).digest()


def expand_label(hash_name: str, secret: bytes, label: bytes, context: bytes,
                  length: int) -> bytes:
    full = b"velocity1 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([counter]), hash_name).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def schedule_steps(hash_name: str, mode: str, inputs: dict[str, bytes]
                   ) -> list[tuple[str, bytes]]:
    """Spec section 11, step by step, in the order the reference records its steps.
    ``client_early_secret`` is derived only when ``th_client_hello`` is given (early data)."""
    size = hashlib.new(hash_name).digest_size
    zero, empty = bytes(size), hashlib.new(hash_name, b"").digest()
    steps: list[tuple[str, bytes]] = []

    def derive(name: str, secret: bytes, label: bytes, context: bytes) -> bytes:
        steps.append((name, expand_label(hash_name, secret, label, context, size)))
        return steps[-1][1]

    def stage(name: str, previous: bytes, ikm: bytes) -> bytes:
        derived = derive(f"derived_before_{name}", previous, b"derived", empty)
        steps.append((name, extract(hash_name, derived, ikm)))
        return steps[-1][1]

    early = extract(hash_name, zero, inputs.get("psk", zero))
    steps.append(("early_secret", early))
    if mode == "resumption":
        derive("binder_key", early, b"res binder", empty)
        if "th_client_hello" in inputs:
            derive("client_early_secret", early, b"c e traffic", inputs["th_client_hello"])
    ikm = inputs["ss_eph"] + (inputs["ss_static"] if mode == "pdk" else b"")
    secret = stage("handshake_secret", early, ikm)
    derive("client_hs_secret", secret, b"c hs traffic", inputs["th_server_hello"])
    derive("server_hs_secret", secret, b"s hs traffic", inputs["th_server_hello"])
    if mode == "discovery":
        secret = stage("ahs_secret", secret, inputs["ss_static"])
        derive("client_ahs_secret", secret, b"c ahs traffic", inputs["th_kem_ciphertext"])
        derive("server_ahs_secret", secret, b"s ahs traffic", inputs["th_kem_ciphertext"])
    secret = stage("master_secret", secret, zero)
    for name, label in (("client_ap_secret", b"c ap traffic"),
                        ("server_ap_secret", b"s ap traffic"), ("exporter_secret", b"exp master")):
        derive(name, secret, label, inputs["th_application"])
    derive("resumption_secret", secret, b"res master", inputs["th_client_finished"])
    return steps


def keyschedule() -> dict[str, Any]:
    entries = []
    for name, code, _, kind, hash_name in PROFILES:
        for mode in ("pdk", "discovery", "resumption"):
            def h(label: str, prefix: str = f"{name}/{mode}", algo: str = hash_name) -> bytes:
                return hashlib.new(algo, f"{prefix}/{label}".encode()).digest()
            size = hashlib.new(hash_name).digest_size
            inputs = {"ss_eph": stream_bytes(f"ks/{name}/ss_eph", 64 if kind == "x25519" else 80),
                      "ss_static": stream_bytes(f"ks/{name}/ss_static", 32),
                      "th_client_hello": h("client_hello"), "th_server_hello": h("server_hello"),
                      "th_kem_ciphertext": h("kem_ciphertext"),
                      "th_application": h("application"),
                      "th_client_finished": h("client_finished")}
            if mode == "resumption":
                inputs["psk"] = stream_bytes(f"ks/{name}/psk", size)
            steps = schedule_steps(hash_name, mode, inputs)
            values = dict(steps)
            finished_key = expand_label(hash_name, values["server_hs_secret"], b"finished", b"",
                                         size)
            nonce = bytes(8)
            entries.append({
                "profile": name, "code": code, "hash": hash_name, "mode": mode,
                "inputs": {k: v.hex() for k, v in inputs.items()},
                "steps": [[n, v.hex()] for n, v in steps],
                "server_finished_over_th_server_hello": hmac.new(
                    finished_key, inputs["th_server_hello"], hash_name).hexdigest(),
                "resumption_psk_nonce_zero": expand_label(
                    hash_name, values["resumption_secret"], b"resumption", nonce, size).hex()})
    return {"topic": "keyschedule", "spec": ["VEL-KS-001", "VEL-PROT-001", "VEL-RES-001",
                                             "VEL-HS-070"],
            "provenance": provenance(["docs/spec/velocity-1.md section 11",
                                      "RFC 8446 section 7.1 (HKDF-Expand-Label shape)",
                                      "RFC 5869 (HKDF) via the standard library's hmac"],
                                     "formulas recomputed step by step"),
            "vectors": entries}


def finished(hash_name: str, base_key: bytes, transcript: bytes) -> bytes:
    """FINISHED verify_data over the messages ``transcript`` (spec VEL-HS-070)."""
    size = hashlib.new(hash_name).digest_size
    key = expand_label(hash_name, base_key, b"finished", b"", size)
    return hmac.new(key, hashlib.new(hash_name, transcript).digest(), hash_name).digest()


def fallback_mac(hash_name: str, ikm: bytes, client_hello: bytes, fallback_without_mac: bytes,
                 *, label: bytes = b"fallback") -> bytes:
    """The FALLBACK MAC of spec VEL-FB-003 (``ikm`` = ss_static). With ``label`` b"res
    fallback" and ``ikm`` = the PSK it is the MAC of a FALLBACK to a resuming client."""
    size = hashlib.new(hash_name).digest_size
    secret = extract(hash_name, bytes(size), ikm)
    key = expand_label(hash_name, secret, label, hashlib.new(hash_name, client_hello).digest(),
                       size)
    return hmac.new(key, hashlib.new(hash_name, client_hello + fallback_without_mac).digest(),
                    hash_name).digest()
