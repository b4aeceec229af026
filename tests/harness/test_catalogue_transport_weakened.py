"""The harness measured: each of the transport catalogue's key scenarios PASSes against the
in-process reference server and FAILs against the same server weakened, for that one run,
to break the requirement the scenario names (a module of velocity.core patched on the
server's side: the scripted peer is a client, so a patch of server-only behaviour leaves
it alone). A scenario that passed a broken server would be measuring nothing. Waits are the
scenarios' own, bounded by their budgets; nothing counts datagrams exactly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from harness.scenario.engine import run_scenario
from harness.scenario.loader import load_file
from harness.scenario.model import Scenario
from harness.scenario.spec import requirements
from harness.scenario.verdict import Outcome, Verdict
from harness.targets import InProcessServer, Target
from velocity.core import endpoint, receiver, state, transport_params
from velocity.core.buffer import varint_at
from velocity.core.connection import Address, Connection
from velocity.core.errors import ProtocolViolation
from velocity.core.frames import ConnectionClose, HandshakeDone, NewConnectionId, StopSending
from velocity.core.packet import FIXED_BIT, parse_header
from velocity.http import app

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
Weakening = Callable[[pytest.MonkeyPatch], None]


def _serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server = InProcessServer(tmp_path_factory.mktemp("target"))
    try:
        yield server.start()
    finally:
        server.stop()


# Two servers, so that no run meets the connections of another: the hand-written datagrams
# carry fixed connection IDs, which a server remembers while it drains.
reference = pytest.fixture(_serve, scope="module", name="reference")
weakened = pytest.fixture(_serve, scope="module", name="weakened")


def scenario(file: str, name: str) -> Scenario:
    found = [s for s in load_file(SCENARIOS / file, file, requirements()) if s.name == name]
    assert found, f"no scenario {name} in {file}"
    return found[0]


async def outcome(file: str, name: str, target: Target) -> Outcome:
    return (await run_scenario(scenario(file, name), target, seed=0, strict=False)).outcome


async def fails_only_weakened(file: str, name: str, weaken: Weakening, says: str,
                              reference: Target, weakened: Target,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The scenario PASSes against ``reference``; with ``weaken`` applied (process-wide,
    so to the ``weakened`` server's new connections) it FAILs, saying ``says``."""
    passed = await outcome(file, name, reference)
    assert passed.verdict is Verdict.PASS, passed
    weaken(monkeypatch)
    failed = await outcome(file, name, weakened)
    assert failed.verdict is Verdict.FAIL, failed
    assert says in failed.reason, failed


def server_connections(monkeypatch: pytest.MonkeyPatch, **methods: Any) -> None:
    """The server's new connections get ``methods`` (the endpoint builds them; the
    scripted peer builds its own)."""
    monkeypatch.setattr(endpoint, "Connection", type("Weakened", (Connection,), methods))


def starts_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No anti-amplification limit: every address counts as validated (VEL-CONN-001)."""
    def validated(self: Connection, *args: Any, **kwargs: Any) -> None:
        Connection.__init__(self, *args, **{**kwargs, "address_validated": True})

    server_connections(monkeypatch, __init__=validated)


def counts_every_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another address's datagrams raise the budget (VEL-CONN-011)."""
    def receive_datagram(self: Connection, data: bytes, address: Address, *,
                         now: float) -> None:
        if self.peer_address is not None and address != self.peer_address:
            self.bytes_received += len(data)
        Connection.receive_datagram(self, data, address, now=now)

    server_connections(monkeypatch, receive_datagram=receive_datagram)


def own_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's own idle timeout, whatever the client asked (VEL-CONN-003)."""
    server_connections(monkeypatch, _idle_timeout=lambda self: self.config.idle_timeout)


def _first_of_each(data: bytes) -> bytes:
    """Transport parameters with every repeated id after its first left out."""
    seen: set[int] = set()
    kept, pos = bytearray(), 0
    while pos < len(data):
        start = pos
        pid, pos = varint_at(data, pos)
        length, pos = varint_at(data, pos)
        pos += length
        if pid not in seen:
            seen.add(pid)
            kept += data[start:pos]
    return bytes(kept)


def ignores_duplicate_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client's repeated transport parameter is ignored (VEL-TP-002)."""
    decode = transport_params.decode_transport_parameters

    def lenient(data: bytes, *, from_server: bool) -> transport_params.TransportParameters:
        return decode(data if from_server else _first_of_each(data), from_server=from_server)

    monkeypatch.setattr("velocity.core.handshaking.decode_transport_parameters", lenient)


def accepts_server_only_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """No parameter is server-only (VEL-TP-002, VEL-TP-005)."""
    monkeypatch.setattr(transport_params, "SERVER_ONLY", frozenset())


def _client_only(handler: Callable[..., None]) -> Callable[..., None]:
    """``handler``, skipped on the server's side."""
    def handle(conn: Connection, *args: Any) -> None:
        if conn.is_client:
            handler(conn, *args)

    return handle


def accepts_handshake_done(monkeypatch: pytest.MonkeyPatch) -> None:
    """HANDSHAKE_DONE from a client is ignored (VEL-FRM-013)."""
    handlers = dict(receiver._HANDLERS)
    handlers[HandshakeDone] = _client_only(handlers[HandshakeDone])
    monkeypatch.setattr(receiver, "_HANDLERS", handlers)


def stop_sending_resets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """STOP_SENDING is not answered with RESET_STREAM (VEL-STR-003)."""
    handlers = dict(receiver._HANDLERS)
    handlers[StopSending] = _client_only(handlers[StopSending])
    monkeypatch.setattr(receiver, "_HANDLERS", handlers)


def ignores_connection_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client's CONNECTION_CLOSE is ignored: no draining (VEL-ERR-004)."""
    handlers = dict(receiver._HANDLERS)
    handlers[ConnectionClose] = _client_only(handlers[ConnectionClose])
    monkeypatch.setattr(receiver, "_HANDLERS", handlers)


def stores_any_number_of_connection_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server keeps every connection ID it is given (VEL-CONN-006)."""
    handlers = dict(receiver._HANDLERS)
    handlers[NewConnectionId] = _client_only(handlers[NewConnectionId])
    monkeypatch.setattr(receiver, "_HANDLERS", handlers)


def reads_any_echo_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """/api/echo takes a body of any size (VEL-HTTP-008)."""
    monkeypatch.setattr(app, "ECHO_MAX_BODY", 1 << 20)


def serves_any_early_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any method is served from 0-RTT early data (VEL-HTTP-005)."""
    monkeypatch.setattr(app, "SAFE_EARLY_METHODS", frozenset({"GET", "HEAD", "POST"}))


def ignores_packet_types(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames are taken whatever packet type carries them (VEL-FRM-004)."""
    monkeypatch.setattr(receiver, "decode_frames",
                        partial(receiver.decode_frames, check_space=False))


def ignores_the_fixed_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A packet whose fixed bit is 0 is read as if it were 1 (VEL-PKT-003)."""
    def lenient(data: bytes, offset: int = 0, **options: Any) -> Any:
        fixed = data[:offset] + bytes([data[offset] | FIXED_BIT]) + data[offset + 1:]
        return parse_header(fixed, offset, **options)

    monkeypatch.setattr(endpoint, "parse_header", lenient)
    monkeypatch.setattr(receiver, "parse_header", lenient)


def accepts_short_client_dcids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any client DCID starts a connection (VEL-PKT-014)."""
    monkeypatch.setattr(endpoint, "MIN_CLIENT_DCID", 1)


def unbounded_crypto_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """CRYPTO data is buffered without bound (VEL-HS-004)."""
    monkeypatch.setattr(state, "CRYPTO_BUFFER_LIMIT", 1 << 24)


def undecryptable_is_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A packet that fails authentication closes the connection (VEL-PROT-010)."""
    dropped = receiver._not_opened

    def fatal(conn: Connection, *args: Any) -> None:
        if conn.is_client:
            dropped(conn, *args)
        else:
            raise ProtocolViolation("a packet failed authentication", field="payload")

    monkeypatch.setattr(receiver, "_not_opened", fatal)


NOT_CLOSED = "was not closed by peer"
SILENCE = "during the 1 s of expected silence"
CASES = [  # (file, scenario, weakening, requirement, what the FAIL says)
    ("transport_parameters/client.yaml", "transport_parameters/duplicate-parameter",
     ignores_duplicate_parameters, "VEL-TP-002", NOT_CLOSED),
    ("transport_parameters/client.yaml",
     "transport_parameters/server-only-stateless-reset-token", accepts_server_only_parameters,
     "VEL-TP-005", NOT_CLOSED),
    ("amplification/limit.yaml",
     "amplification/unvalidated-discovery-per-profile[profile=secure]", starts_validated,
     "VEL-CONN-001", "amplification_ratio <= 3"),
    ("amplification/limit.yaml", "amplification/other-addresses-do-not-raise-the-budget",
     counts_every_address, "VEL-CONN-011", "amplification_ratio <= 3"),
    ("connection/lifetime.yaml", "connection/idle-timeout-is-the-smaller-one",
     own_idle_timeout, "VEL-CONN-003", SILENCE),
    ("frames/malformed.yaml", "frames/handshake-done-from-a-client", accepts_handshake_done,
     "VEL-FRM-013", NOT_CLOSED),
    ("frames/wrong-space.yaml", "frames/limits-in-the-handshake-spaces[space=initial-frame="
     "max_data]", ignores_packet_types, "VEL-FRM-004", NOT_CLOSED),
    ("streams/control.yaml", "streams/stop-sending-is-answered-by-reset-stream",
     stop_sending_resets_nothing, "VEL-STR-003", "no quic:packet_received"),
    ("packets/initial-datagrams.yaml", "packets/fixed-bit-zero-is-discarded",
     ignores_the_fixed_bit, "VEL-PKT-003", SILENCE),
    ("packets/initial-datagrams.yaml", "packets/client-dcid-below-8-bytes-is-ignored",
     accepts_short_client_dcids, "VEL-PKT-014", SILENCE),
    ("crypto/reassembly.yaml", "crypto/buffer-limit", unbounded_crypto_buffer, "VEL-HS-004",
     "not with CRYPTO_BUFFER_EXCEEDED"),
    ("protection/corrupt.yaml", "protection/undecryptable-initial-is-dropped-not-fatal",
     undecryptable_is_fatal, "VEL-PROT-010", SILENCE),
    ("connection/close.yaml", "connection/draining-after-the-peer-closed",
     ignores_connection_close, "VEL-ERR-004", SILENCE),
    ("http/requests.yaml", "http/post-in-early-data-is-too-early", serves_any_early_method,
     "VEL-HTTP-005", "the response status is 200"),
    ("http/requests.yaml", "http/body-over-the-route-bound", reads_any_echo_body,
     "VEL-HTTP-008", "the response status is 200"),
    ("connection/ids.yaml", "connection/connection-ids-beyond-the-limit",
     stores_any_number_of_connection_ids, "VEL-CONN-006", NOT_CLOSED),
]


@pytest.mark.parametrize(("file", "name", "weaken", "says"), [
    pytest.param(file, name, weaken, says, marks=pytest.mark.spec(spec), id=weaken.__name__)
    for file, name, weaken, spec, says in CASES])
async def test_the_scenario_fails_the_weakened_server_and_passes_the_reference(
        file: str, name: str, weaken: Weakening, says: str, reference: Target,
        weakened: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    await fails_only_weakened(file, name, weaken, says, reference, weakened, monkeypatch)
