"""The scenarios that need the impairment relay, measured as the transport catalogue's
are (tests/harness/test_catalogue_transport_weakened.py): each PASSes against the
in-process reference server and FAILs against it weakened to break its requirement."""

from __future__ import annotations

import pytest

from harness.scenario.verdict import Verdict
from harness.targets import Target
from tests.harness.test_catalogue_transport_weakened import (
    SCENARIOS,
    _serve,
    outcome,
    server_connections,
)
from velocity.core.connection import Address, Connection

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


@pytest.mark.spec("VEL-CONN-014")
async def test_rebinding_fails_a_server_that_migrates(
        reference: Target, weakened: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    file, name = "connection/rebinding.yaml", "connection/rebinding-is-not-migration"
    assert (SCENARIOS / file).exists()
    passed = await outcome(file, name, reference)
    assert passed.verdict is Verdict.PASS, passed
    migrates(monkeypatch)
    failed = await outcome(file, name, weakened)
    assert failed.verdict is Verdict.FAIL, failed
    assert "during the 2.5 s of expected silence" in failed.reason, failed

