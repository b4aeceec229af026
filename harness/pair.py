"""Drive a client and a server handshake against each other in memory, epoch by epoch, with
an optional hook that may rewrite each message in flight (tamper tests) and a record of
every message and event (vectors, transcripts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from velocity.core.errors import ProtocolError
from velocity.core.handshake.client import ClientHandshake
from velocity.core.handshake.common import HandshakeBase, HandshakeEvent
from velocity.core.handshake.server import ServerHandshake
from velocity.core.packet import Epoch

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
