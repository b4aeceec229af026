"""Recorded, seeded handshakes (vectors/handshakes/*.json): every message's bytes and every
secret of both sides, for PDK, discovery, HELLO_RETRY, resumption with 0-RTT, fallback and a
stale key. They run on kyber-py, the deterministic backend; the server identity (static-key
seed, CA and leaf certificates) is an input stored in the file, because ML-DSA signatures
from OpenSSL are hedged."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harness.pair import NOW, HandshakeRun, run_handshake
from harness.vectors import stream_bytes
from harness.vectors.generate_crypto import fallback_mac, schedule_steps
from harness.vectors.generate_crypto import finished as finished_mac_independent
from velocity.core.entropy import SeededEntropy
from velocity.core.handshake.client import ClientConfig, ClientHandshake, PinnedServerKey
from velocity.core.handshake.common import (
    HandshakeEvent,
    ReplayFilter,
    StaticKey,
    TicketIssued,
    key_id_for,
)
from velocity.core.handshake.server import FallbackPolicy, ServerConfig, ServerHandshake
from velocity.core.hybrid import BALANCED, LIGHT, PROFILES_BY_NAME
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


def _pair(case: Case, ident: IdentityInputs, seed: str, *, stage: str,
          ticket: Any = None) -> tuple[ClientHandshake, ServerHandshake]:
    kem = kem_backend(BACKEND)
    key = kem.load(BALANCED.kem, ident.kem_seed)
    static = StaticKey(BALANCED, key, key_id_for(BALANCED.code, key.encapsulation_key),
                       (ident.leaf_der,))
    pinned_key = key.encapsulation_key
    if case.stale_key:
        pinned_key = kem.load(BALANCED.kem, stream_bytes(f"{seed}/rotated", 64)).encapsulation_key
    ca = x509.load_der_x509_certificate(ident.ca_der)
    entropy = SeededEntropy(f"{seed}/{stage}")
    client_config = ClientConfig(
        kem=kem, server_name="localhost",
        verifier=X509Verifier(anchors=[ca], clock=lambda: NOW + dt.timedelta(hours=1)),
        server_key=PinnedServerKey(BALANCED, pinned_key) if case.mode == "pdk" else None,
        ticket=ticket, **(case.client if stage == "record" else {}))
    server_config = ServerConfig(kem=kem, static_keys=(static,),
                                 ticket_sealer=ticket_sealer(stream_bytes(f"{seed}/ticket", 32)),
                                 replay_filter=ReplayFilter(), **case.server)
    client = ClientHandshake(client_config, entropy=entropy.fork("client"),
                             transport_parameters=b"client transport parameters")
    server = ServerHandshake(server_config, entropy=entropy.fork("server"),
                             transport_parameters=b"server transport parameters")
    client.keep_secrets = server.keep_secrets = True  # the vector records them
    return client, server


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


def execute(case: Case, ident: IdentityInputs, seed: str) -> tuple[HandshakeRun,
                                                                   ClientHandshake,
                                                                   ServerHandshake]:
    """Run the case: for resumption, a first discovery handshake at t=1 s issues the ticket."""
    ticket = None
    if case.resume:
        client, server = _pair(replace(case, mode="discovery"), ident, seed, stage="ticket")
        first = run_handshake(client, server, now_ms=1_000)
        ticket = next(e.ticket for e in first.client_events if isinstance(e, TicketIssued))
    client, server = _pair(case, ident, seed, stage="record", ticket=ticket)
    return run_handshake(client, server, now_ms=5_000), client, server


def _steps(handshake: ClientHandshake | ServerHandshake) -> list[list[str]]:
    return [[n, v.hex()] for n, v in handshake.schedule.steps] if handshake.schedule else []


def record(case: Case, ident: IdentityInputs, seed: str) -> dict[str, Any]:
    run, client, server = execute(case, ident, seed)
    return {
        "schema": "velocity-vectors/1", "topic": "handshake", "name": case.name,
        "description": case.description,
        "spec": ["VEL-GEN-003", "VEL-KS-001", "VEL-HS-104"],
        "provenance": {"generator": "harness/vectors/handshakes.py",
                       "independent_of": "none: recorded from the reference; its key schedule "
                                         "is recomputed independently by the checker",
                       "method": f"seeded entropy '{seed}', KEM backend {BACKEND}",
                       "sources": ["docs/spec/velocity-1.md sections 7-14"],
                       "generated": "2026-11-25"},
        "seed": seed, "profile": BALANCED.name, "identity": ident.to_json(),
        "flights": [{"sender": f.sender, "epoch": f.epoch.name,
                     "messages": [m.hex() for m in f.messages]} for f in run.flights],
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


# --- checking ---------------------------------------------------------------------------


def _transcript(document: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(sender, message) in transcript order, with the HELLO_RETRY substitution."""
    hash_name = PROFILES_BY_NAME[document["profile"]].hash_name
    messages = [(f["sender"], bytes.fromhex(m)) for f in document["flights"]
                if f["epoch"] != "APPLICATION" for m in f["messages"]
                if not m.startswith("30")]
    if any(m[0] == 0x06 for _, m in messages):
        digest = hashlib.new(hash_name, messages[0][1]).digest()
        messages[0] = ("client", b"\xfe" + len(digest).to_bytes(3, "big") + digest)
    return messages


def independent_check(document: dict[str, Any]) -> list[tuple[str, object, object]]:
    """(what, recomputed, recorded) for the key schedule and every FINISHED / FALLBACK MAC,
    recomputed from the recorded messages with harness.vectors.generate_crypto."""
    profile = PROFILES_BY_NAME[document["profile"]]
    hash_name, secrets = profile.hash_name, document["secrets"]
    messages = _transcript(document)
    results: list[tuple[str, object, object]] = []
    fallback = [bytes.fromhex(m) for f in document["flights"] for m in f["messages"]
                if m.startswith("30")]
    if fallback:
        raw, size = fallback[0], profile.hash_length
        body = raw[4 : -(1 + size)] + b"\x00"  # the directive with an empty mac
        without_mac = raw[:1] + len(body).to_bytes(3, "big") + body
        expected = fallback_mac(hash_name, bytes.fromhex(secrets["static_secret"]),
                                messages[0][1], without_mac)
        results.append(("FALLBACK mac", (raw[-(1 + size)], expected), (size, raw[-size:])))
    if not document["secrets"]["client_schedule"] or document["error"]:
        return results
    mode = next(e["mode"] for e in document["client_events"]
                if e["type"] == "HandshakeCompleted").lower()
    types = [m[0] for _, m in messages]

    def through(index: int) -> bytes:
        return hashlib.new(hash_name, b"".join(m for _, m in messages[: index + 1])).digest()

    finished = [i for i, t in enumerate(types) if t == 0x14]
    client_finished = next(i for i in finished if messages[i][0] == "client")
    server_finished = next(i for i in finished if messages[i][0] == "server")
    inputs = {"ss_eph": bytes.fromhex(secrets["hybrid_shared_secret"]),
              "th_client_hello": through(max(i for i, t in enumerate(types) if t == 0x01)),
              "th_server_hello": through(types.index(0x02)),
              "th_application": through(client_finished if mode == "discovery"
                                        else server_finished),
              "th_client_finished": through(client_finished)}
    if secrets["static_secret"]:
        inputs["ss_static"] = bytes.fromhex(secrets["static_secret"])
    if 0x1E in types:
        inputs["th_kem_ciphertext"] = through(types.index(0x1E))
    if secrets["psk"]:
        inputs["psk"] = bytes.fromhex(secrets["psk"])
    steps = [[n, v.hex()] for n, v in schedule_steps(hash_name, mode, inputs)]
    results.append(("client key schedule", steps, secrets["client_schedule"]))
    server_steps = dict(map(tuple, secrets["server_schedule"]))
    results.append(("server key schedule", {n: v for n, v in steps if n in server_steps},
                    server_steps))
    values = {n: bytes.fromhex(v) for n, v in steps}
    prefix = "ahs" if mode == "discovery" else "hs"
    for index in finished:
        sender = messages[index][0]
        base = values[f"{sender}_{prefix}_secret"]
        expected = finished_mac_independent(hash_name, base,
                                            b"".join(m for _, m in messages[:index]))
        results.append((f"{sender} FINISHED", expected, messages[index][1][4:]))
    return results


def check(document: dict[str, Any]) -> list[tuple[str, object, object]]:
    """Regenerate the case from its seed and identity (byte for byte), then recompute its
    secrets and MACs independently."""
    case = CASES_BY_NAME[document["name"]]
    regenerated = record(case, IdentityInputs.from_json(document["identity"]),
                         document["seed"])
    results: list[tuple[str, object, object]] = [
        (f"regenerated {key}", regenerated[key], document[key])
        for key in ("flights", "error", "client_events", "server_events", "secrets")]
    return results + independent_check(document)
