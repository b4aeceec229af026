"""Recorded, seeded handshakes (vectors/handshakes/*.json): every message's bytes and every
secret of both sides, for PDK, discovery, HELLO_RETRY, resumption with 0-RTT, fallback and a
stale key, with the private inputs of both endpoints ("inputs": ephemeral ML-KEM seeds, ECDH
keys, encapsulation randomness, the pinned key's seed, the ticket key) caught where they
enter the reference. They run on kyber-py, the deterministic backend; the server identity
(static-key seed, CA and leaf certificates) is an input stored in the file, because ML-DSA
signatures from OpenSSL are hedged.

This module owns the recording and the second check (the reference regenerates each file
byte for byte); the first, independent check is ``harness.vectors.handshake_kat``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harness.pair import NOW, HandshakeRun, run_handshake
from harness.vectors import stream_bytes
from velocity.core.entropy import Entropy, SeededEntropy
from velocity.core.handshake.client import ClientConfig, ClientHandshake, PinnedServerKey
from velocity.core.handshake.common import (
    HandshakeEvent,
    ReplayFilter,
    StaticKey,
    TicketIssued,
    key_id_for,
)
from velocity.core.handshake.server import FallbackPolicy, ServerConfig, ServerHandshake
from velocity.core.hybrid import BALANCED, LIGHT
from velocity.core.kem import KemBackend, KemKey, KemParams
from velocity.crypto.identity import ServerIdentity
from velocity.crypto.kem import kem_backend
from velocity.crypto.pki import X509Verifier
from velocity.crypto.sealing import ticket_sealer

BACKEND = "kyber-py"


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    mode: str  # "pdk" or "discovery" for the recorded handshake
    client: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    stale_key: bool = False


CASES = [
    Case("pdk", "balanced, PDK: the client holds the server's static key", "pdk"),
    Case("discovery", "balanced, discovery: CERTIFICATE, KEM_CIPHERTEXT, KEMTLS", "discovery"),
    Case("hrr", "client shares for light, server takes balanced only: HELLO_RETRY", "discovery",
         client={"profiles": (LIGHT, BALANCED)}, server={"profiles": (BALANCED,)}),
    Case("resumption-0rtt", "PSK resumption of a discovery handshake, early data accepted",
         "discovery", client={"early_data": True}, resume=True),
    Case("fallback", "fallback-only server answers a PDK client with an authenticated "
         "FALLBACK", "pdk", server={"fallback": FallbackPolicy(host="h3.example", port=443,
                                                                mode="fallback-only")}),
    Case("stale-key", "the client's pinned key was rotated away: STALE_KEM_KEY", "pdk",
         stale_key=True),
    Case("fallback-resumption", "fallback-only server answers a resuming client with a "
         "FALLBACK MACed under the resumption PSK", "discovery", resume=True,
         server={"fallback": FallbackPolicy(mode="fallback-only")}),
]
CASES_BY_NAME = {case.name: case for case in CASES}


@dataclass(frozen=True)
class IdentityInputs:
    kem_seed: bytes
    ca_der: bytes
    leaf_der: bytes

    @classmethod
    def create(cls, seed: str) -> IdentityInputs:
        ident = ServerIdentity.create(BALANCED, entropy=SeededEntropy(f"{seed}/identity"),
                                      names=("localhost",), now=NOW)
        return cls(ident.kem_seed, ident.ca_certificate.public_bytes(
            serialization.Encoding.DER), ident.leaf_der)

    def to_json(self) -> dict[str, str]:
        return {"kem_seed": self.kem_seed.hex(), "ca_der": self.ca_der.hex(),
                "leaf_der": self.leaf_der.hex()}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> IdentityInputs:
        return cls(*(bytes.fromhex(data[k]) for k in ("kem_seed", "ca_der", "leaf_der")))


class Recorder:
    """What one endpoint takes from outside, caught at the boundaries it is handed: its
    ``KemBackend`` (the key-generation seed d || z of each ephemeral key, the randomness m of
    each encapsulation) and its ``Entropy`` (the ECDH private key of each hybrid share: the
    hybrid share code draws it right after the ML-KEM seed it passes to ``generate``, the
    order vectors/hybrid.json records; the checker catches a wrong label, as the public key
    it derives must be the one on the wire)."""

    def __init__(self, kem: KemBackend, entropy: Entropy) -> None:
        self.kem, self.entropy = _RecordingKem(kem, self), _RecordingEntropy(entropy, self)
        self.kem_keygen: list[bytes] = []
        self.ecdh: list[bytes] = []
        self.encapsulations: list[bytes] = []
        self._ecdh_next = False

    def drew(self, data: bytes) -> None:
        if self._ecdh_next:
            self.ecdh.append(data)
            self._ecdh_next = False

    def generated(self, seed: bytes) -> None:
        self.kem_keygen.append(seed)
        self._ecdh_next = True

    def to_json(self) -> dict[str, list[str]]:
        return {name: [v.hex() for v in getattr(self, name)]
                for name in ("kem_keygen", "ecdh", "encapsulations")}


class _RecordingEntropy:
    def __init__(self, inner: Entropy, recorder: Recorder) -> None:
        self._inner, self._recorder = inner, recorder

    def random(self, size: int) -> bytes:
        data = self._inner.random(size)
        self._recorder.drew(data)
        return data


class _RecordingKem:
    def __init__(self, inner: KemBackend, recorder: Recorder) -> None:
        self._inner, self._recorder = inner, recorder
        self.name, self.deterministic = inner.name, inner.deterministic

    def supports(self, params: KemParams) -> bool:
        return self._inner.supports(params)

    def name_for(self, params: KemParams) -> str:
        return self._inner.name_for(params)

    def generate(self, params: KemParams, seed: bytes) -> KemKey:
        self._recorder.generated(seed)
        return self._inner.generate(params, seed)

    def load(self, params: KemParams, seed: bytes) -> KemKey:
        return self._inner.load(params, seed)

    def encapsulate(self, params: KemParams, encapsulation_key: bytes,
                    m: bytes) -> tuple[bytes, bytes]:
        self._recorder.encapsulations.append(m)
        return self._inner.encapsulate(params, encapsulation_key, m)


@dataclass
class Stage:
    """One handshake of a case, with the recorders of its two endpoints."""

    run: HandshakeRun
    client: ClientHandshake
    server: ServerHandshake
    recorders: dict[str, Recorder]
    server_key_seed: bytes | None

    def inputs(self, seed: str) -> dict[str, Any]:
        return {"ticket_key": _ticket_key(seed).hex(),
                "server_key_seed": self.server_key_seed.hex() if self.server_key_seed else None,
                **{side: r.to_json() for side, r in self.recorders.items()}}

    def flights(self) -> list[dict[str, Any]]:
        return [{"sender": f.sender, "epoch": f.epoch.name,
                 "messages": [m.hex() for m in f.messages]} for f in self.run.flights]


def _ticket_key(seed: str) -> bytes:
    return stream_bytes(f"{seed}/ticket", 32)


def _stage(case: Case, ident: IdentityInputs, seed: str, *, stage: str, now_ms: int,
           ticket: Any = None) -> Stage:
    kem = kem_backend(BACKEND)
    key = kem.load(BALANCED.kem, ident.kem_seed)
    static = StaticKey(BALANCED, key, key_id_for(BALANCED.code, key.encapsulation_key),
                       (ident.leaf_der,))
    pinned_seed = (stream_bytes(f"{seed}/rotated", 64) if case.stale_key else ident.kem_seed)
    pinned = PinnedServerKey(BALANCED, kem.load(BALANCED.kem, pinned_seed).encapsulation_key)
    entropy = SeededEntropy(f"{seed}/{stage}")
    recorders = {side: Recorder(kem, entropy.fork(side)) for side in ("client", "server")}
    client_config = ClientConfig(
        kem=recorders["client"].kem, server_name="localhost",
        verifier=X509Verifier(anchors=[x509.load_der_x509_certificate(ident.ca_der)],
                              clock=lambda: NOW + dt.timedelta(hours=1)),
        server_key=pinned if case.mode == "pdk" else None,
        ticket=ticket, **(case.client if stage == "record" else {}))
    server_config = ServerConfig(kem=recorders["server"].kem, static_keys=(static,),
                                 ticket_sealer=ticket_sealer(_ticket_key(seed)),
                                 replay_filter=ReplayFilter(),
                                 **(case.server if stage == "record" else {}))
    client = ClientHandshake(client_config, entropy=recorders["client"].entropy,
                             transport_parameters=b"client transport parameters")
    server = ServerHandshake(server_config, entropy=recorders["server"].entropy,
                             transport_parameters=b"server transport parameters")
    client.keep_secrets = server.keep_secrets = True  # the vector records them
    run = run_handshake(client, server, now_ms=now_ms)
    return Stage(run, client, server, recorders, pinned_seed if case.mode == "pdk" else None)


def _event(event: HandshakeEvent) -> dict[str, Any]:
    """An event without its secrets and bulky values; bytes as hex, enums by name."""
    data: dict[str, Any] = {"type": type(event).__name__}
    for item in dataclasses.fields(event):
        if item.name in ("secret", "ticket", "certificate_chain", "encapsulation_key"):
            continue
        value = getattr(event, item.name)
        data[item.name] = value.hex() if isinstance(value, bytes) else (
            value.name if isinstance(value, Enum) else value)
    return data


def execute(case: Case, ident: IdentityInputs, seed: str) -> tuple[Stage | None, Stage]:
    """Run the case: for resumption, a first discovery handshake at t=1 s issues the ticket."""
    first = None
    ticket = None
    if case.resume:
        first = _stage(replace(case, mode="discovery"), ident, seed, stage="ticket",
                       now_ms=1_000)
        ticket = next(e.ticket for e in first.run.client_events if isinstance(e, TicketIssued))
    return first, _stage(case, ident, seed, stage="record", now_ms=5_000, ticket=ticket)


def _steps(handshake: ClientHandshake | ServerHandshake) -> list[list[str]]:
    return [[n, v.hex()] for n, v in handshake.schedule.steps] if handshake.schedule else []


PROVENANCE = {
    "generator": "harness/vectors/handshakes.py",
    "independent_of": "velocity.core for the first check: flights, events and secrets are "
                      "recorded from the reference; harness/vectors/handshake_kat.py reads "
                      "the flights with the scapy layers and recomputes the key shares, "
                      "KEM ciphertexts and secrets from 'inputs' with kyber-py and "
                      "cryptography, then the key schedule with hmac, and checks both "
                      "FINISHED MACs, PSK binders, the FALLBACK MAC and the sealed tickets "
                      "against the wire; the second check regenerates the file byte for "
                      "byte from the reference",
    "sources": ["docs/spec/velocity-1.md sections 7-14"],
    "generated": "2026-11-25"}


def record(case: Case, ident: IdentityInputs, seed: str) -> dict[str, Any]:
    first, stage = execute(case, ident, seed)
    run, client, server = stage.run, stage.client, stage.server
    return {
        "schema": "velocity-vectors/1", "topic": "handshake", "name": case.name,
        "description": case.description,
        "spec": ["VEL-GEN-003", "VEL-KS-001", "VEL-HS-104"],
        "provenance": {**PROVENANCE,
                       "method": f"seeded entropy '{seed}', KEM backend {BACKEND}; 'inputs' "
                                 "caught at each endpoint's KEM backend and entropy source"},
        "seed": seed, "profile": BALANCED.name, "identity": ident.to_json(),
        "inputs": stage.inputs(seed),
        "ticket_handshake": first and {"flights": first.flights(),
                                       "inputs": first.inputs(seed)},
        "flights": stage.flights(),
        "error": None if run.error is None else {"side": run.error_side,
                                                 "code": run.error.code.name},
        "client_events": [_event(e) for e in run.client_events],
        "server_events": [_event(e) for e in run.server_events],
        "secrets": {
            "hybrid_shared_secret": (client.hybrid.shared_secret.hex() if client.hybrid
                                     else None),
            "static_secret": client.static_secret.hex() if client.static_secret else None,
            "psk": client.config.ticket.psk.hex() if client.config.ticket else None,
            "client_schedule": _steps(client), "server_schedule": _steps(server)},
    }


# --- the second check: byte-for-byte regeneration -------------------------------------


RECORDED = ("inputs", "ticket_handshake", "flights", "error", "client_events", "server_events",
            "secrets")


def check(document: dict[str, Any]) -> list[tuple[str, object, object]]:
    """(what, regenerated, recorded): the reference rerun from the case's seed and stored
    identity reproduces every recorded section byte for byte."""
    case = CASES_BY_NAME[document["name"]]
    regenerated = record(case, IdentityInputs.from_json(document["identity"]),
                         document["seed"])
    return [(f"regenerated {key}", regenerated[key], document[key]) for key in RECORDED]


def regenerate(directory: Path, identities: Path) -> list[Path]:
    """Write ``directory``/<case>.json for every case, keeping the server identity stored
    in ``identities``/<case>.json when there is one (its certificates carry hedged
    signatures); return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for case in CASES:
        seed, stored = f"velocity/{case.name}", identities / f"{case.name}.json"
        ident = (IdentityInputs.from_json(json.loads(stored.read_text())["identity"])
                 if stored.is_file() else IdentityInputs.create(seed))
        path = directory / f"{case.name}.json"
        path.write_text(json.dumps(record(case, ident, seed), indent=1) + "\n")
        written.append(path)
    return written
