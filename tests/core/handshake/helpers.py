"""Helpers for handshake tests: message rewriting in flight and event lookups."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from harness.pair import HandshakeRun, Tamper
from velocity.core.handshake.common import HandshakeCompleted, HandshakeEvent, KeysReady
from velocity.core.handshake.messages import MessageType, decode_message, encode_message
from velocity.core.packet import Epoch

E = TypeVar("E")


def rewrite(msg_type: MessageType, change: Callable[[Any], Any], *,
            sender: str | None = None, times: int = 1) -> Tamper:
    """Rewrite the first ``times`` messages of ``msg_type`` with ``change(message)``."""
    left = [times]

    def tamper(who: str, epoch: Epoch, raw: bytes) -> bytes:
        if raw[0] != msg_type or (sender and who != sender) or left[0] == 0:
            return raw
        left[0] -= 1
        return encode_message(change(decode_message(raw[0], raw[4:])))

    return tamper


def set_field(msg_type: MessageType, **fields: Any) -> Tamper:
    return rewrite(msg_type, lambda m: replace(m, **fields))


def events_of(events: list[HandshakeEvent], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def completed(run: HandshakeRun) -> tuple[HandshakeCompleted, HandshakeCompleted]:
    assert run.error is None, f"{run.error_side}: {run.error!r}"
    (client,) = events_of(run.client_events, HandshakeCompleted)
    (server,) = events_of(run.server_events, HandshakeCompleted)
    return client, server


def secrets(events: list[HandshakeEvent]) -> dict[tuple[Epoch, bool, bool], bytes]:
    return {(k.epoch, k.send, k.early): k.secret for k in events_of(events, KeysReady)}


def assert_keys_agree(run: HandshakeRun) -> None:
    """Every key the client sends with is the key the server receives with, and back."""
    client, server = secrets(run.client_events), secrets(run.server_events)
    for (epoch, send, early), secret in client.items():
        if (epoch, not send, early) in server:
            assert server[(epoch, not send, early)] == secret, (epoch, send, early)
    assert (Epoch.APPLICATION, True, False) in client
    assert (Epoch.APPLICATION, False, False) in server


def closed_with(run: HandshakeRun, code: int, side: str | None = None) -> None:
    assert run.error is not None, "the handshake completed"
    assert run.error.code == code, f"{run.error_side} raised {run.error!r}"
    if side is not None:
        assert run.error_side == side, f"{run.error_side} raised {run.error!r}"
