"""One connection of a read batch fails (a bad ClientHello, a fault of ours): it closes with
the error's code, everyone else in the batch is served (VEL-ERR-005, VEL-ERR-006)."""

from __future__ import annotations

from typing import Any

import pytest

import velocity.core.connection
import velocity.core.sender
from tests.core.transport.helpers import completed, make_client, make_crowd, terminated
from velocity.core import receiver
from velocity.core.connection import Connection
from velocity.core.errors import ErrorCode
from velocity.core.events import InternalErrorRaised, StreamDataReceived
from velocity.core.frames import ResetStream

VICTIM, OTHER = ("10.0.0.1", 1000), ("192.0.2.1", 5000)


@pytest.mark.spec("VEL-TP-002", "VEL-ERR-005", "VEL-ERR-006")
@pytest.mark.parametrize("extra", [b"\x0f\x01c", b"\x02\x10" + bytes(16)],
                         ids=["duplicate-id", "server-only-parameter"])
def test_bad_transport_parameters_close_only_their_connection(extra: bytes) -> None:
    room = make_crowd()
    bad = make_client("bad")
    bad.handshake._transport_parameters += extra
    room.join(VICTIM, bad)
    room.join(OTHER, make_client("good"))  # its ClientHello arrives in the same read batch
    assert room.run(lambda: completed(room.client_events[OTHER])
                    and bool(terminated(room.client_events[VICTIM])))
    (end,) = terminated(room.client_events[VICTIM])
    assert end.by_peer and end.error_code == ErrorCode.TRANSPORT_PARAMETER_ERROR
    assert not any(isinstance(e, InternalErrorRaised) for _, e in room.server_events)


def _fault_in_a_frame_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(conn: Connection, frame: ResetStream, *args: Any) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setitem(receiver._HANDLERS, ResetStream, broken)


def _fault_in_the_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    original = velocity.core.sender.build_datagrams
    armed = [True]

    def broken(conn: Connection, now: float) -> list[bytes]:
        if armed and not conn.is_client and conn.streams:  # the server, once asked
            armed.clear()
            raise RuntimeError("injected fault")
        return original(conn, now)

    monkeypatch.setattr(velocity.core.connection, "build_datagrams", broken)


@pytest.mark.spec("VEL-ERR-005", "VEL-ERR-006")
@pytest.mark.parametrize("inject", [_fault_in_a_frame_handler, _fault_in_the_sender],
                         ids=["receiving", "sending"])
def test_an_internal_fault_closes_only_its_connection(
        inject: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    room = make_crowd()
    for index, address in enumerate((VICTIM, OTHER)):
        room.join(address, make_client(f"client-{index}"))
    assert room.run(lambda: all(completed(room.client_events[a]) for a in (VICTIM, OTHER)))
    inject(monkeypatch)
    victim = room.clients[VICTIM]
    stream = victim.get_next_available_stream_id()
    victim.send_stream_data(stream, b"request")
    victim.reset_stream(stream, 7)
    assert room.run(lambda: bool(terminated(room.client_events[VICTIM])))
    (end,) = terminated(room.client_events[VICTIM])
    assert end.by_peer and end.error_code == ErrorCode.INTERNAL_ERROR
    reports = [(c.peer_address, str(e.exception)) for c, e in room.server_events
               if isinstance(e, InternalErrorRaised)]
    assert reports == [(VICTIM, "injected fault")]  # once
    other = room.clients[OTHER]
    stream = other.get_next_available_stream_id()
    other.send_stream_data(stream, b"still served", end_stream=True)
    assert room.run(lambda: any(isinstance(e, StreamDataReceived) and e.data == b"still served"
                                for _, e in room.server_events))
    assert not terminated(room.client_events[OTHER])
