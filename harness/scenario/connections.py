"""The ``connect`` step of a role: client scenario: the client configuration its options ask
for (ALPNs, profiles, AEADs, the key mode, a ticket from an earlier connection, transport
parameter overrides), hooks on the core's seams, the scripted peer started towards the
target (through the impairment relay when the scenario has a ``network``), and the wait
for it to be ready. A handshake that fails is not an error here: later steps judge it."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace
from typing import Any

from harness.netsim import Impairment, UdpRelay, changed
from harness.peer import ClientPeer, View
from harness.scenario.build import install_hooks
from harness.scenario.context import Conn, Run, StepFailed, StepUnsupported
from harness.scenario.model import Network, Step
from velocity.aio.client import FallbackError, HandshakeError
from velocity.core.connection import Address, ConnectionConfig
from velocity.core.events import TicketReceived
from velocity.core.handshake.client import ClientConfig, PinnedServerKey
from velocity.core.handshake.common import SessionTicket
from velocity.core.hybrid import PROFILES, PROFILES_BY_NAME, Profile
from velocity.core.protection import Aead
from velocity.crypto.kem import kem_backend
from velocity.crypto.pki import X509Verifier, load_ca_file

TRANSPORT_PARAMETERS = ("max_data", "max_stream_data", "max_streams_bidi", "max_streams_uni",
                        "idle_timeout", "max_ack_delay", "ack_delay_exponent",
                        "max_datagram_size", "cid_length")
"""The ConnectionConfig fields ``transport_parameters`` may override."""
READY_WAIT = 5.0  # seconds connect waits (wait: ready) within the budget


def known_keys(run: Run) -> list[PinnedServerKey]:
    """The target's keys the run knows: given (--kem-*, the in-process target's), then the
    ones earlier connections of this run learned by discovery."""
    learned = [PinnedServerKey(PROFILES[k.profile], k.encapsulation_key)
               for c in run.connections.values()
               if c.peer is not None and (k := c.peer.learned_key) is not None]
    return [*run.target.keys, *learned]


def server_key(run: Run, mode: str, profiles: tuple[Profile, ...]) -> PinnedServerKey | None:
    """The key for PDK (``key: pdk``, or ``auto`` when one is known), None for discovery;
    ``stale``: a key of the first profile generated from the run's seed, which no server
    holds (VEL-AUTH-011)."""
    if mode == "discovery":
        return None
    if mode == "previous":
        return _previous_key(run, profiles)
    if mode == "stale":
        generated = kem_backend().generate(profiles[0].kem, run.entropy("stale-key").random(64))
        return PinnedServerKey(profiles[0], generated.encapsulation_key)
    for profile in profiles:
        for key in known_keys(run):
            if key.profile == profile:
                return key
    if mode == "pdk":
        raise StepUnsupported(f"no ML-KEM key of the target for {profiles[0].name} is known: "
                              "give --kem-b64 or --kem-file, or discover it in an earlier "
                              "connection of the scenario")
    return None


def _previous_key(run: Run, profiles: tuple[Profile, ...]) -> PinnedServerKey:
    """The key the target replaced in its last rotation, for the first offered profile the
    run knows one of (VEL-CERT-005)."""
    for profile in profiles:
        for key in run.target.previous_keys:
            if key.profile == profile:
                return key
    raise StepUnsupported(f"no previous ML-KEM key of the target for {profiles[0].name} is "
                          "known: give --kem-previous-file")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def client_config(run: Run, options: dict[str, Any]) -> tuple[ClientConfig, ConnectionConfig]:
    """The handshake and connection configuration a connect step's options describe."""
    profiles = tuple(PROFILES_BY_NAME[p] for p in options.get("profiles", ["balanced"]))
    ca_file = run.target.ca_file
    handshake = ClientConfig(
        kem=kem_backend(), alpn=tuple(a.encode() for a in options.get("alpn", ["velocity/1"])),
        profiles=profiles, aeads=tuple(Aead[a] for a in options.get("aeads", list(
            Aead.__members__))), server_name=options.get("server_name") or run.target.server_name,
        server_key=server_key(run, options.get("key", "auto"), profiles),
        verifier=X509Verifier(anchors=load_ca_file(ca_file), clock=_now) if ca_file
        else X509Verifier(insecure=True, clock=_now),
        early_data=options.get("early_data", False), grease=options.get("grease", True))
    remembered, token = None, b""
    if options.get("ticket", "none") == "last":
        received, token = last_ticket(run)
        handshake = replace(handshake, ticket=edited_ticket(received.ticket, options))
        remembered = received.transport_parameters
    if options.get("token") == "from_retry":
        token = retry_token(run)
    config = ConnectionConfig(handshake, remembered_transport_parameters=remembered,
                              token=token)
    return handshake, replace(config, **options.get("transport_parameters", {}))


def edited_ticket(ticket: SessionTicket, options: dict[str, Any]) -> SessionTicket:
    """The ticket as the connect step says to use it: ``ticket_age`` seconds added to the
    age the client reports (its obfuscated_ticket_age), ``binder: wrong`` a PSK that is not
    the ticket's, so the binder cannot verify."""
    shift = round(float(options.get("ticket_age", 0)) * 1000)
    psk = ticket.psk
    if options.get("binder", "valid") == "wrong":
        psk = bytes(b ^ 0xFF for b in psk)
    return replace(ticket, issued_ms=ticket.issued_ms - shift, psk=psk)


def retry_token(run: Run) -> bytes:
    """The token of the last Retry an earlier connection of the run followed."""
    tokens = [c.peer.connection.token for c in run.connections.values()
              if c.peer is not None and c.peer.connection.token]
    if not tokens:
        raise StepFailed("token: from_retry, but no earlier connection of this run followed "
                         "a Retry", expected="a Retry on an earlier connection", actual="none")
    return tokens[-1]


def last_ticket(run: Run) -> tuple[TicketReceived, bytes]:
    """The last session ticket (and NEW_TOKEN) an earlier connection of the run received."""
    peers = [c.peer for c in run.connections.values() if c.peer is not None and c.peer.tickets]
    if not peers:
        raise StepFailed("ticket: last, but no earlier connection of this run received a "
                         "session ticket", expected="a NEW_SESSION_TICKET on an earlier "
                         "connection", actual="none")
    return peers[-1].tickets[-1], peers[-1].new_token or b""


async def connect(run: Run, step: Step, address: Address) -> Conn:
    """Open the connection ``step`` describes towards ``address``; wait as it says."""
    options = step.options or {}
    name = options.get("name", "main")
    handshake, config = client_config(run, options)
    view = View(run.loop)
    view.transcript.start = run.harness.start  # one time origin for the run's transcripts
    connection = ClientPeer.make_connection(config, entropy=run.entropy(name), view=view,
                                            payloads=run.keeps_payloads)
    try:
        install_hooks(connection, options.get("hooks", {}))
    except ValueError as exc:
        raise StepUnsupported(str(exc)) from None
    relay = None
    if run.scenario.network is not None:
        relay, address = await _relay(run, name, address, run.scenario.network)
    peer = await ClientPeer.start(connection, address, view=view,
                                  hold=options.get("wait") == "held")
    conn = run.connections[name] = Conn(name, view, address, peer, relay)
    run.note("connect", {"conn": name, "to": f"{address[0]}:{address[1]}",
                         "mode": "pdk" if handshake.server_key else "discovery",
                         "resumption": handshake.ticket is not None})
    if options.get("wait", "ready") == "ready":
        await settle(run, peer, READY_WAIT)
    return conn


async def _relay(run: Run, name: str, target: Address,
                 network: Network) -> tuple[UdpRelay, Address]:
    """A seeded impairment relay on 127.0.0.1 in front of ``target``, one per connection
    (a relay answers one client); (the relay, the address to connect to)."""
    if not target[0].startswith("127."):
        raise StepUnsupported("network impairment relays through 127.0.0.1: the target "
                              "must listen on this machine's loopback")
    both = Impairment(**dict(network.both))
    c2s, s2c = (changed(both, dict(d)) if d else None for d in (network.c2s, network.s2c))
    relay = UdpRelay(target, both, seed=f"{run.seed}/{name}", c2s=c2s, s2c=s2c)
    return relay, await relay.start()


async def settle(run: Run, peer: ClientPeer, seconds: float) -> str | None:
    """Wait (within the budget) until ``peer`` may send 1-RTT data or has ended; None when
    it is ready, else why not."""
    allowed, _ = run.budget.wait(seconds, run.now())
    try:
        async with asyncio.timeout(allowed):  # no task in between: the next step acts at once
            await peer.wait_ready()
    except (FallbackError, HandshakeError, ConnectionError) as exc:
        return str(exc)
    except TimeoutError:
        return f"not ready within {allowed:g} s"
    return None
