"""Real transcripts for the transcript tests: one connection of the in-memory pair
(harness/loopback.py, virtual clock) with both sides traced, as the documents each side
would write."""

from __future__ import annotations

from typing import Any

from harness.loopback import Network, Pair, perfect
from harness.pair import PairSpec, make_configs
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.events import ConnectionTerminated, Event, HandshakeCompleted
from velocity.core.handshake.server import FallbackPolicy
from velocity.core.hybrid import BALANCED, Profile
from velocity.core.trace import Transcript


def _ended(events: list[Event]) -> bool:
    return any(isinstance(e, HandshakeCompleted | ConnectionTerminated) for e in events)


def _server_connection(pair: Pair) -> Connection:
    connection = pair.endpoint.finished[0] if pair.endpoint.finished else pair.server
    assert connection is not None
    return connection


def run_documents(*, seed: str = "run", profile: Profile = BALANCED, mode: str = "pdk",
                  fallback_only: bool = False, grease: bool = True, network: Network = perfect,
                  scenario: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Connect once, close with NO_ERROR once both sides are through the handshake, let
    them drain; the client's and the server's transcripts."""
    server: dict[str, Any] = {"grease": grease}
    if fallback_only:
        server["fallback"] = FallbackPolicy(mode="fallback-only")
    client_hs, server_hs = make_configs(PairSpec(profile=profile, mode=mode, server=server,
                                                 client={"grease": grease}))
    pair = Pair(ConnectionConfig(client_hs), ConnectionConfig(server_hs), seed=seed,
                network=network, trace=True)
    pair.connect()
    assert pair.run(lambda: _ended(pair.client_events))
    assert pair.run(lambda: _ended(pair.server_events))  # the server hears the FINISHED
    pair.client.close(0, "done")  # nothing when the connection is already over
    pair.run(lambda: False, max_time=pair.now + 5)
    out = {}
    for side, connection in (("client", pair.client), ("server", _server_connection(pair))):
        assert isinstance(connection.tracer, Transcript)
        peer = connection.peer_address
        out[side] = connection.tracer.document(
            producer={"name": "velocity", "version": "test"}, vantage_point=side,
            target="127.0.0.1:4433", peer=f"{peer[0]}:{peer[1]}" if peer else None,
            scenario=scenario, reference_time=1_700_000_000.0 + len(seed),
            connection={"original_dcid": connection.original_dcid.hex()})
    return out
