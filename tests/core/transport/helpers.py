"""Building in-memory connection pairs for transport tests."""

from __future__ import annotations

from typing import Any

from harness.loopback import Network, Pair, perfect
from harness.pair import PairSpec, make_configs
from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.events import (
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    NewTokenReceived,
    TicketReceived,
)
from velocity.crypto.sealing import RetryTokens

TOKENS = RetryTokens(bytes(16))  # the token sealer of tests that need Retry or NEW_TOKEN


def make(mode: str = "pdk", network: Network = perfect, *, client: dict[str, Any] | None = None,
         server: dict[str, Any] | None = None, spec: PairSpec | None = None,
         **pair: Any) -> Pair:
    client_hs, server_hs = make_configs(spec or PairSpec(mode=mode))
    return Pair(ConnectionConfig(client_hs, **(client or {})),
                ConnectionConfig(server_hs, **(server or {})), network=network, **pair)


def completed(events: list[Event]) -> bool:
    return any(isinstance(e, HandshakeCompleted) for e in events)


def both_completed(pair: Pair) -> bool:
    return completed(pair.client_events) and completed(pair.server_events)


def terminated(events: list[Event]) -> list[ConnectionTerminated]:
    return [e for e in events if isinstance(e, ConnectionTerminated)]


def resumable(*, server: dict[str, Any] | None = None, network: Network = perfect) -> Pair:
    """A second connection that resumes the first one's ticket with 0-RTT and its NEW_TOKEN
    (``server`` changes the second server's handshake configuration); the clock runs on
    between them. Not yet connected."""
    first = make("discovery", tokens=TOKENS)
    first.connect()
    assert first.run(lambda: both_completed(first)
                     and any(isinstance(e, TicketReceived) for e in first.client_events)
                     and any(isinstance(e, NewTokenReceived) for e in first.client_events))
    ticket = next(e for e in first.client_events if isinstance(e, TicketReceived))
    token = next(e.token for e in first.client_events if isinstance(e, NewTokenReceived))
    spec = PairSpec(mode="discovery", client={"ticket": ticket.ticket, "early_data": True},
                    server=server or {})
    second = make(spec=spec, tokens=TOKENS, network=network, client={
        "remembered_transport_parameters": ticket.transport_parameters, "token": token})
    second.now = first.now + 1.0
    return second


def requested(pair: Pair) -> tuple[Connection, int]:
    """Complete the handshake and deliver a request ("get", FIN) on a new client stream: the
    server's connection and the stream, ready for its answer."""
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    server = pair.server
    assert server is not None
    stream = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(stream, b"get", end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", stream))
    return server, stream
