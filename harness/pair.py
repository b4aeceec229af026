"""Drive a client and a server handshake against each other in memory, epoch by epoch, with
an optional hook that may rewrite each message in flight (tamper tests) and a record of
every message and event (vectors, transcripts)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from velocity.core.entropy import SeededEntropy
from velocity.core.errors import ProtocolError
from velocity.core.handshake.client import ClientConfig, ClientHandshake, PinnedServerKey
from velocity.core.handshake.common import HandshakeBase, HandshakeEvent, ReplayFilter
from velocity.core.handshake.server import ServerConfig, ServerHandshake
from velocity.core.hybrid import BALANCED, Profile
from velocity.core.packet import Epoch
from velocity.core.protection import Aead
from velocity.crypto.identity import ServerIdentity
from velocity.crypto.kem import kem_backend
from velocity.crypto.pki import X509Verifier
from velocity.crypto.sealing import ticket_sealer

# (sender, epoch, raw message) -> raw message to deliver
Tamper = Callable[[str, Epoch, bytes], bytes]


@dataclass
class Flight:
    sender: str
    epoch: Epoch
    messages: list[bytes]


@dataclass
class HandshakeRun:
    flights: list[Flight] = field(default_factory=list)
    client_events: list[HandshakeEvent] = field(default_factory=list)
    server_events: list[HandshakeEvent] = field(default_factory=list)
    error: ProtocolError | None = None
    error_side: str | None = None


def _split(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 1 : pos + 4], "big")
        out.append(data[pos : pos + 4 + length])
        pos += 4 + length
    return out


def _drain(endpoint: HandshakeBase, events: list[HandshakeEvent]) -> None:
    while (event := endpoint.next_event()) is not None:
        events.append(event)


def run_handshake(client: ClientHandshake, server: ServerHandshake, *, now_ms: int = 0,
                  tamper: Tamper | None = None, max_rounds: int = 8) -> HandshakeRun:
    """Run until neither side has anything to send. A ``ProtocolError`` raised by either
    side ends the run and is recorded with the side that raised it."""
    run = HandshakeRun()
    client.start(now_ms=now_ms)
    sides = (("client", client, server, run.client_events),
             ("server", server, client, run.server_events))
    try:
        for _ in range(max_rounds):
            moved = False
            for name, sender, receiver, events in sides:
                _drain(sender, events)
                for epoch in Epoch:
                    data = sender.data_to_send(epoch)
                    if not data:
                        continue
                    moved = True
                    messages = _split(data)
                    if tamper is not None:
                        messages = [tamper(name, epoch, m) for m in messages]
                    run.flights.append(Flight(name, epoch, messages))
                    peer = "server" if name == "client" else "client"
                    try:
                        receiver.receive(epoch, b"".join(messages), now_ms=now_ms)
                    except ProtocolError as exc:
                        run.error, run.error_side = exc, peer
                        return run
            if not moved:
                break
    finally:
        _drain(client, run.client_events)
        _drain(server, run.server_events)
    return run


NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


@functools.cache
def server_identity(profile: Profile, seed: int = 1) -> ServerIdentity:
    """A deterministic identity (CA, static key, leaf for localhost) per profile and seed."""
    return ServerIdentity.create(profile, entropy=SeededEntropy(f"identity/{seed}"),
                                 names=("localhost", "127.0.0.1"), now=NOW)


@dataclass
class PairSpec:
    """What a client/server pair is made of. ``mode`` is "pdk" or "discovery"."""

    profile: Profile = BALANCED
    mode: str = "pdk"
    client_backend: str = "cryptography"
    server_backend: str = "cryptography"
    aeads: tuple[Aead, ...] | None = None
    seed: int | str = 1
    client: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)


def make_configs(spec: PairSpec) -> tuple[ClientConfig, ServerConfig]:
    """The client and server configurations ``spec`` describes (reusable across pairs)."""
    profile = spec.profile
    ident = server_identity(profile)
    client_kem = kem_backend(spec.client_backend)
    server_kem = kem_backend(spec.server_backend)
    client_config = ClientConfig(
        kem=client_kem, profiles=(profile,), server_name="localhost",
        verifier=X509Verifier(anchors=[ident.ca_certificate], clock=lambda: NOW),
        server_key=(PinnedServerKey(profile, ident.encapsulation_key)
                    if spec.mode == "pdk" else None))
    if spec.aeads is not None:
        client_config = replace(client_config, aeads=spec.aeads)
    server_config = ServerConfig(kem=server_kem, static_keys=(ident.static_key(server_kem),),
                                 ticket_sealer=ticket_sealer(bytes(32)),
                                 replay_filter=ReplayFilter())
    return replace(client_config, **spec.client), replace(server_config, **spec.server)


def make_pair(spec: PairSpec) -> tuple[ClientHandshake, ServerHandshake]:
    client_config, server_config = make_configs(spec)
    entropy = SeededEntropy(f"pair/{spec.seed}")
    client = ClientHandshake(client_config, entropy=entropy.fork("client"),
                             transport_parameters=b"client transport parameters")
    server = ServerHandshake(server_config, entropy=entropy.fork("server"),
                             transport_parameters=b"server transport parameters")
    return client, server
