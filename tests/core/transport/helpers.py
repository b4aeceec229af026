"""Building in-memory connection pairs for transport tests."""

from __future__ import annotations

from typing import Any

from harness.loopback import Network, Pair, perfect
from harness.pair import PairSpec, make_configs
from velocity.core.connection import ConnectionConfig
from velocity.core.events import ConnectionTerminated, Event, HandshakeCompleted
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
