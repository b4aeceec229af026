"""The harness measured on its packet templates and replays: each scenario below PASSes
against the in-process reference server and FAILs against the same server weakened, for
that one run, to break the requirement the scenario names (velocity.core patched on the
server's side only: the scripted peer's client shares the process). Waits are the
scenarios' own, bounded by their budgets; nothing counts datagrams exactly."""

from __future__ import annotations

from typing import Any

import pytest

from harness.targets import Target
from tests.harness.test_catalogue_transport_weakened import (
    Weakening,
    _serve,
    fails_only_weakened,
)
from velocity.core import receiver
from velocity.core.connection import Connection
from velocity.core.errors import FrameEncodingError
from velocity.core.frames import Frame, Ping
from velocity.core.handshake.common import ReplayFilter
from velocity.core.packet import PacketType
from velocity.core.state import SpaceState

# Two servers: both runs take seed 0, so the same connection IDs, which a server remembers
# while it drains.
reference = pytest.fixture(_serve, scope="module", name="reference")
weakened = pytest.fixture(_serve, scope="module", name="weakened")


def _lenient_is_new(monkeypatch: pytest.MonkeyPatch, *, reserved: bool,
                    duplicates: bool) -> None:
    is_new = receiver._is_new

    def lenient(conn: Connection, space: SpaceState, packet_type: PacketType, plain: bytes,
                packet_number: int, length: int) -> bool:
        if conn.is_client:
            return is_new(conn, space, packet_type, plain, packet_number, length)
        if reserved:
            plain = bytes([plain[0] & ~(0x0C if plain[0] & 0x80 else 0x18)]) + plain[1:]
        if duplicates and packet_number in space.received:
            return True
        return is_new(conn, space, packet_type, plain, packet_number, length)

    monkeypatch.setattr(receiver, "_is_new", lenient)


def ignores_reserved_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reserved bits are not checked (VEL-PKT-004)."""
    _lenient_is_new(monkeypatch, reserved=True, duplicates=False)


def processes_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A packet number received before is processed again (VEL-PKT-008)."""
    _lenient_is_new(monkeypatch, reserved=False, duplicates=True)


def _lenient_frames(monkeypatch: pytest.MonkeyPatch, *, empty: bool, cut: bool) -> None:
    decode = receiver.decode_frames

    def lenient(payload: bytes, packet_type: PacketType, *args: Any,
                **kwargs: Any) -> list[Frame]:
        if empty and not payload[args[0] if args else 0:]:
            return [Ping()]
        try:
            return decode(payload, packet_type, *args, **kwargs)
        except FrameEncodingError:
            if cut:
                return [Ping()]
            raise

    monkeypatch.setattr(receiver, "decode_frames", lenient)


def accepts_empty_payloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A payload without frames is taken as a PING (VEL-FRM-006)."""
    _lenient_frames(monkeypatch, empty=True, cut=False)


def ignores_cut_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """A payload whose frames do not decode is taken as a PING (VEL-FRM-005)."""
    _lenient_frames(monkeypatch, empty=False, cut=True)


def forgets_binders(monkeypatch: pytest.MonkeyPatch) -> None:
    """The anti-replay filter accepts every binder (VEL-RES-007)."""
    monkeypatch.setattr(ReplayFilter, "accept", lambda self, *args: True)


NOT_CLOSED = "was not closed by peer"
TWICE = "where none may"
CASES = [  # (file, scenario, weakening, requirement, what the FAIL says)
    ("packets/templates.yaml", "packets/reserved-bits-in-a-1rtt-packet[bits=1]",
     ignores_reserved_bits, "VEL-PKT-004", NOT_CLOSED),
    ("packets/templates.yaml", "packets/reserved-bits-in-the-client-initial[bits=2]",
     ignores_reserved_bits, "VEL-PKT-004", NOT_CLOSED),
    ("replay/flights.yaml", "replay/one-rtt-packet-replayed-is-a-duplicate",
     processes_duplicates, "VEL-PKT-008", TWICE),
    ("frames/templates.yaml", "frames/packet-without-frames", accepts_empty_payloads,
     "VEL-FRM-006", NOT_CLOSED),
    ("frames/templates.yaml", "frames/stream-data-past-the-payload", ignores_cut_frames,
     "VEL-FRM-005", NOT_CLOSED),
    ("replay/flights.yaml", "replay/zero-rtt-flight-replayed-is-refused", forgets_binders,
     "VEL-RES-007", TWICE),
]


@pytest.mark.parametrize(("file", "name", "weaken", "says"), [
    pytest.param(file, name, weaken, says, marks=pytest.mark.spec(spec),
                 id=f"{weaken.__name__}-{name.split('/')[1]}")
    for file, name, weaken, spec, says in CASES])
async def test_the_scenario_fails_the_weakened_server_and_passes_the_reference(
        file: str, name: str, weaken: Weakening, says: str, reference: Target,
        weakened: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    await fails_only_weakened(file, name, weaken, says, reference, weakened, monkeypatch)
