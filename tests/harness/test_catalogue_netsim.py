"""The scenarios that need the impairment relay, measured as the transport catalogue's
are (tests/harness/test_catalogue_transport_weakened.py): each PASSes against the
in-process reference server and FAILs against it weakened to break its requirement."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from harness.targets import Target
from tests.harness.test_catalogue_transport_weakened import (
    Weakening,
    _serve,
    fails_only_weakened,
    server_connections,
)
from velocity.core.connection import Address, Connection, ConnectionConfig
from velocity.core.transport_params import TransportParameters

reference = pytest.fixture(_serve, scope="module", name="reference")
weakened = pytest.fixture(_serve, scope="module", name="weakened")


def migrates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server follows its client to a new address once the handshake is done: connection
    migration, which Velocity/1 does not have (VEL-CONN-014)."""
    def receive_datagram(self: Connection, data: bytes, address: Address, *,
                         now: float) -> None:
        if self.peer_address is not None and self.handshake_complete:
            self.peer_address = address
        Connection.receive_datagram(self, data, address, now=now)

    server_connections(monkeypatch, receive_datagram=receive_datagram)


def sends_large_datagrams(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the handshake is done the server sends datagrams of up to 1600 bytes, whatever
    the client's max_udp_payload_size (VEL-PKT-013)."""
    def init(self: Connection, config: ConnectionConfig, **kwargs: Any) -> None:
        Connection.__init__(self, replace(config, max_datagram_size=1600), **kwargs)

    def get(self: Connection) -> TransportParameters | None:
        return self.__dict__.get("_weakened_peer_params")

    def put(self: Connection, params: TransportParameters | None) -> None:
        self.__dict__["_weakened_peer_params"] = (
            None if params is None else replace(params, max_udp_payload_size=65527))

    server_connections(monkeypatch, __init__=init, peer_params=property(get, put))


CASES = [  # (file, scenario, weakening, requirement, what the FAIL says)
    ("connection/rebinding.yaml", "connection/rebinding-is-not-migration", migrates,
     "VEL-CONN-014", "during the 2.5 s of expected silence"),
    ("connection/rebinding.yaml", "connection/a-1452-byte-path-is-enough",
     sends_large_datagrams, "VEL-PKT-013", "no response"),
]


@pytest.mark.parametrize(("file", "name", "weaken", "says"), [
    pytest.param(file, name, weaken, says, marks=pytest.mark.spec(spec), id=weaken.__name__)
    for file, name, weaken, spec, says in CASES])
async def test_the_scenario_fails_the_weakened_server_and_passes_the_reference(
        file: str, name: str, weaken: Weakening, says: str, reference: Target,
        weakened: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    await fails_only_weakened(file, name, weaken, says, reference, weakened, monkeypatch)
