"""Datagrams for a connection from an address that is not its peer's (a spoofer who learned
its connection IDs): they never raise the peer's anti-amplification budget, never move the
peer address before validation, and never draw CONNECTION_CLOSEs to the peer
(VEL-CONN-001, VEL-CONN-011)."""

from __future__ import annotations

import pytest

from harness.pair import PairSpec, make_configs
from tests.core.transport.helpers import Crowd, Route, make_client, make_crowd
from velocity.core.connection import Address, Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig, ServerEndpoint
from velocity.core.entropy import SeededEntropy
from velocity.core.state import State

VICTIM, SPOOFER = ("192.0.2.1", 5000), ("203.0.113.7", 6666)


def silent_victim(first_flight: list[bytes]) -> Route:
    """The victim's address sends one flight (kept in ``first_flight``), then nothing, and
    hears nothing."""

    def route(direction: str, address: Address, datagram: bytes, now: float) -> bool:
        if direction == "s2c" or (address == VICTIM and now > 0):
            return False
        if address == VICTIM:
            first_flight.append(datagram)
        return True

    return route


def spoof(room: Crowd, datagrams: list[bytes], seconds: float) -> None:
    """The spoofer replays ``datagrams`` from its own address, ten a second."""
    start = room.now
    for tick in range(1, int(seconds * 10)):
        room.inject(datagrams[tick % len(datagrams)], SPOOFER)
        room.run(lambda t=tick: room.now >= start + t * 0.1)


@pytest.mark.spec("VEL-CONN-001", "VEL-CONN-011")
@pytest.mark.parametrize("mode", ["pdk", "discovery"])
def test_a_spoofer_does_not_raise_the_victims_amplification_budget(mode: str) -> None:
    first_flight: list[bytes] = []
    client_hs, server_hs = make_configs(PairSpec(mode=mode))
    endpoint = ServerEndpoint(EndpointConfig(ConnectionConfig(server_hs)),
                              entropy=SeededEntropy("server"))
    room = Crowd(endpoint, silent_victim(first_flight))
    room.join(VICTIM, Connection(ConnectionConfig(client_hs), entropy=SeededEntropy("v")))
    assert room.run(lambda: bool(room.sent))
    spoof(room, first_flight, seconds=9)  # within the handshake timeout
    (server,) = endpoint.connections
    assert server.peer_address == VICTIM and not server.address_validated
    received = sum(map(len, first_flight))
    sent = sum(len(d) for _, d in room.sent[VICTIM])
    assert 0 < sent <= 3 * received, sent / received
    assert server.bytes_received == received and SPOOFER not in room.sent


@pytest.mark.spec("VEL-ERR-004", "VEL-CONN-011")
def test_a_spoofer_draws_no_closes_to_the_peer() -> None:
    """The victim's ClientHello is refused with TRANSPORT_PARAMETER_ERROR; while the server is
    closing, a spoofer's datagrams for the connection are not answered with the close."""
    first_flight: list[bytes] = []
    room = make_crowd(silent_victim(first_flight))
    bad = make_client("bad")
    bad.handshake._transport_parameters += b"\x0f\x01c"  # a duplicate parameter
    room.join(VICTIM, bad)
    assert room.run(lambda: bool(room.sent))
    (server,) = room.endpoint.connections
    assert server.state == State.CLOSING
    closes = len(room.sent[VICTIM])
    spoof(room, first_flight, seconds=0.5)
    assert server.state == State.CLOSING and len(room.sent[VICTIM]) == closes
