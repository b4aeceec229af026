"""The harness measured, for server-side scenarios (frame encodings, key updates, graceful
shutdown, ticket ages, key rotation, application failures, held ranges): each PASSes
against the in-process reference server and FAILs against the same server weakened, for
that one run, to break the requirement it names (see test_catalogue_transport_weakened,
whose helpers this reuses)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness import targets
from harness.scenario.verdict import Verdict
from harness.targets import InProcessServer, Target
from tests.harness.test_catalogue_transport_weakened import (
    NOT_CLOSED,
    Weakening,
    _serve,
    fails_only_weakened,
    outcome,
)
from velocity.core import frames, handshaking, receiver, sender, streams
from velocity.core.buffer import Reader, Writer, varint_at
from velocity.core.connection import Connection
from velocity.core.endpoint import ServerEndpoint
from velocity.core.frames import Ack, ApplicationClose, Frame
from velocity.core.handshake import server as handshake_server
from velocity.core.handshake.server import ServerConfig, StaticKey
from velocity.core.packet import Epoch
from velocity.core.protection import INTEGRITY_LIMIT
from velocity.http import h1

reference = pytest.fixture(_serve, scope="module", name="reference")
weakened = pytest.fixture(_serve, scope="module", name="weakened")


def reads_non_minimal_types(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frame (and extension) types in any varint encoding are read (VEL-FRM-003)."""
    monkeypatch.setattr(Reader, "pull_varint_minimal", Reader.pull_varint)


def takes_any_key_update(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new key phase is followed even before the last update was acknowledged
    (VEL-PROT-011)."""
    follow = receiver._open_other_phase

    def lenient(conn: Connection, *args: Any) -> bytes:
        conn.key_updates.peer_update = None
        return follow(conn, *args)

    monkeypatch.setattr(receiver, "_open_other_phase", lenient)


def does_not_follow_key_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The peer's key update is read but the sending keys stay (VEL-PROT-011)."""
    rotate = Connection._rotate_send_keys

    def own_only(self: Connection, trigger: str) -> None:
        if trigger != "remote_update":
            rotate(self, trigger)

    monkeypatch.setattr(Connection, "_rotate_send_keys", own_only)


def ignores_ticket_age(monkeypatch: pytest.MonkeyPatch) -> None:
    """Early data is taken whatever age the client reports (VEL-RES-005)."""
    monkeypatch.setattr(handshake_server, "EARLY_DATA_AGE_TOLERANCE_MS", 1 << 40)


def takes_any_ciphertext_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server_key ciphertext is cut or padded to its parameter set's length before
    decapsulation (VEL-AUTH-013): the handshake then fails later, not with
    ILLEGAL_PARAMETER."""
    pull = handshake_server._pull_server_key

    def lenient(value: bytes) -> tuple[bytes, bytes]:
        key_id, ciphertext = pull(value)
        size = next(n for n in (768, 1088, 1568) if abs(len(ciphertext) - n) <= 1)
        return key_id, (ciphertext + bytes(size))[:size]

    monkeypatch.setattr(handshake_server, "_pull_server_key", lenient)


def forgets_the_previous_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the current key of each profile opens PDK ciphertexts (VEL-CERT-005)."""
    def current_only(self: ServerConfig, key_id: bytes) -> StaticKey | None:
        return next((k for k in self.static_keys if k.key_id == key_id
                     and self.current_key(k.profile) is k), None)

    monkeypatch.setattr(ServerConfig, "key_by_id", current_only)


def sends_no_500(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing application's request is reset instead of answered 500 (VEL-HTTP-014)."""
    text = h1._text

    def no_500(status: int, message: str) -> h1.Response:
        if status == 500:
            raise ConnectionError("weakened: no 500")
        return text(status, message)

    monkeypatch.setattr(h1, "_text", no_500)


def holds_any_number_of_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """No bound on the ranges of CRYPTO data waiting (VEL-STR-005)."""
    monkeypatch.setattr(streams, "MAX_CRYPTO_RANGES", 1 << 40)


def holds_any_number_of_stream_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """No bound on the ranges of STREAM data waiting (VEL-STR-005)."""
    monkeypatch.setattr(receiver, "MAX_STREAM_RANGES", 1 << 40)


def keeps_initial_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server reads Initial packets for as long as the connection lives (VEL-PROT-013)."""
    discard = handshaking.discard_space

    def keep_initial(conn: Connection, epoch: Epoch) -> None:
        if conn.is_client or epoch is not Epoch.INITIAL:
            discard(conn, epoch)

    monkeypatch.setattr(handshaking, "discard_space", keep_initial)


CASES = [  # (file, scenario, weakening, requirement, what the FAIL says)
    ("frames/encoding.yaml", "frames/non-minimal-frame-type[type=4001]",
     reads_non_minimal_types, "VEL-FRM-003", NOT_CLOSED),
    ("protection/key-update.yaml", "protection/second-key-update-before-an-ack-is-refused",
     takes_any_key_update, "VEL-PROT-011", NOT_CLOSED),
    ("protection/key-update.yaml", "protection/key-update-is-answered",
     does_not_follow_key_updates, "VEL-PROT-011", "no quic:key_updated"),
    ("resumption/ticket-age.yaml", "resumption/early-data-with-a-wrong-age-is-rejected[shift=11]",
     ignores_ticket_age, "VEL-RES-005", "data.early_data_accepted = false"),
    ("auth/server-key-length.yaml",
     "auth/server-key-ciphertext-of-the-wrong-length[profile=balanced-edit=long]",
     takes_any_ciphertext_length, "VEL-AUTH-013", "no quic:packet_received"),
    ("certificates/rotation.yaml", "certificates/previous-key-is-accepted-after-rotation",
     forgets_the_previous_key, "VEL-CERT-005", "no velocity:handshake_completed"),
    ("http/failures.yaml", "http/failure-before-the-response-is-500[where=answer]",
     sends_no_500, "VEL-HTTP-014", "failed"),
    ("streams/holes.yaml", "streams/crypto-holes-beyond-the-bound",
     holds_any_number_of_ranges, "VEL-STR-005", NOT_CLOSED),
    ("streams/holes.yaml", "streams/stream-holes-beyond-the-bound",
     holds_any_number_of_stream_ranges, "VEL-STR-005", NOT_CLOSED),
    ("protection/discarded-keys.yaml",
     "protection/initial-packets-after-the-handshake-are-not-read",
     keeps_initial_keys, "VEL-PROT-013", "packet of type initial"),
]


@pytest.mark.parametrize(("file", "name", "weaken", "says"), [
    pytest.param(file, name, weaken, says, marks=pytest.mark.spec(spec), id=weaken.__name__)
    for file, name, weaken, spec, says in CASES])
async def test_the_scenario_fails_the_weakened_server_and_passes_the_reference(
        file: str, name: str, weaken: Weakening, says: str, reference: Target,
        weakened: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    await fails_only_weakened(file, name, weaken, says, reference, weakened, monkeypatch)


@pytest.mark.spec("VEL-CONN-007")
@pytest.mark.parametrize("weakened", [False, True], ids=["reference", "silent-shutdown"])
async def test_the_shutdown_scenario_fails_a_server_that_stops_without_closing(
        weakened: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server whose shutdown sends no CONNECTION_CLOSE: its clients wait for the idle
    timeout."""
    if weakened:
        monkeypatch.setattr(ServerEndpoint, "close_all", lambda self, *, now: None)
    server = InProcessServer(tmp_path)
    target = replace(server.start(), shutdown=server.stop)
    try:
        result = await outcome("connection/shutdown.yaml",
                               "connection/graceful-shutdown-closes-every-connection", target)
    finally:
        server.stop()
    assert result.verdict is (Verdict.FAIL if weakened else Verdict.PASS), result
    if weakened:
        assert NOT_CLOSED in result.reason, result


@contextlib.contextmanager
def claiming(directory: Path, limits: dict[str, int], also: set[str] | None = None,
             **server: Any) -> Iterator[Target]:
    """The in-process server (``server``: its session table and Retry policy) claiming the
    bounds ``limits`` and the capabilities ``also``, stopped afterwards."""
    running = InProcessServer(directory, **server)
    started = running.start()
    try:
        yield replace(started, limits=limits,
                      capabilities=started.capabilities | set(limits) | (also or set()))
    finally:
        running.stop()


@pytest.mark.spec("VEL-CONN-010")
@pytest.mark.parametrize(("bound", "verdict"), [(3, Verdict.PASS), (4, Verdict.FAIL)],
                         ids=["claimed-bound", "looser-bound"])
async def test_the_half_open_bound_scenario_fails_a_server_looser_than_it_claims(
        bound: int, verdict: Verdict, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process server with a bound of ``bound`` handshakes per address, claiming 3:
    the fourth handshake from the address is refused only where the bound holds."""
    monkeypatch.setattr(targets, "IN_PROCESS_HALF_OPEN", bound)
    with claiming(tmp_path, {"half-open-per-address": 3}) as target:
        result = await outcome("connection/limits.yaml",
                               "connection/half-open-beyond-the-address-bound-is-refused",
                               target)
    assert result.verdict is verdict, result


@pytest.mark.spec("VEL-CONN-005", "VEL-CONN-009")
@pytest.mark.parametrize(("name", "retry", "says"), [
    ("connection/full-table-evicts-the-oldest-handshake", "never", "during the 1 s"),
    ("connection/full-table-of-complete-connections-refuses", "never", "data.frames"),
    ("connection/full-table-asks-for-a-retry-first", "under-load", "retry"),
], ids=["evicts", "refuses", "retry-first"])
@pytest.mark.parametrize("bound", [4, 8], ids=["claimed-bound", "looser-bound"])
async def test_the_session_limit_scenarios_fail_a_server_looser_than_it_claims(
        name: str, retry: str, says: str, bound: int, tmp_path: Path) -> None:
    """The in-process server with a table of ``bound`` connections, claiming 4: a full
    table evicts its oldest handshake, refuses when only complete connections fill it, and
    asks for a Retry first; with room to spare it does none of these."""
    also = {"retry", "retry-under-load"} if retry != "never" else set()
    with claiming(tmp_path, {"sessions": 4}, also, max_sessions=bound, retry=retry) as target:
        result = await outcome("connection/limits.yaml", name, target)
    assert result.verdict is (Verdict.PASS if bound == 4 else Verdict.FAIL), result
    if bound != 4:
        assert says in result.reason, result


@pytest.mark.spec("VEL-CONN-005")
async def test_a_server_that_claims_retry_under_load_but_sends_it_always_fails_the_control(
        tmp_path: Path) -> None:
    """The retry-first scenario's Retry at the full table must be the session limit's: a
    server whose policy is always fails its first connection, to a table with room."""
    with claiming(tmp_path, {"sessions": 4}, {"retry", "retry-under-load"}, max_sessions=4,
                  retry="always") as target:
        result = await outcome("connection/limits.yaml",
                               "connection/full-table-asks-for-a-retry-first", target)
    assert result.verdict is Verdict.FAIL, result
    assert "where none may" in result.reason and "before" in result.reason, result


@pytest.mark.spec("VEL-PROT-012")
@pytest.mark.parametrize("limit", [8, None], ids=["claimed-limit", "no-limit"])
async def test_the_integrity_limit_scenario_fails_a_server_that_does_not_count_forgeries(
        limit: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process server with an integrity limit of 8 (or the spec's, out of reach),
    claiming 8: the ninth forgery closes with AEAD_LIMIT_REACHED only where the limit holds;
    up to 8 the connection goes on either way."""
    if limit is not None:
        for aead in list(INTEGRITY_LIMIT):
            monkeypatch.setitem(INTEGRITY_LIMIT, aead, limit)
    with claiming(tmp_path, {"integrity-limit": 8}) as target:
        closes = await outcome("protection/integrity-limit.yaml",
                               "protection/integrity-limit-closes-with-aead-limit-reached",
                               target)
        control = await outcome("protection/integrity-limit.yaml",
                                "protection/forgeries-up-to-the-integrity-limit-are-dropped",
                                target)
    assert control.verdict is Verdict.PASS, control
    assert closes.verdict is (Verdict.PASS if limit else Verdict.FAIL), closes
    if limit is None:
        assert NOT_CLOSED in closes.reason, closes


def closes_with_application_close_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """An application's close goes out as 0x1d in every space, Handshake included
    (VEL-FRM-004 broken)."""
    frame = sender._close_frame

    def close_frame(conn: Connection, epoch: Epoch) -> Any:
        assert conn._close is not None
        code, _, reason, application = conn._close
        return ApplicationClose(code, reason.encode()) if application else frame(conn, epoch)

    monkeypatch.setattr(sender, "_close_frame", close_frame)


@pytest.mark.spec("VEL-FRM-004", "VEL-CONN-007")
@pytest.mark.parametrize("weaken", [False, True], ids=["reference", "application-close"])
async def test_a_server_shut_down_mid_handshake_must_not_send_an_application_close_there(
        weaken: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shut down while the harness holds back its FINISHED, the reference closes in the
    Handshake space with APPLICATION_ERROR; one sending 0x1d there fails the scenario (the
    harness's client refuses that frame in a Handshake packet)."""
    if weaken:
        closes_with_application_close_everywhere(monkeypatch)
    running = InProcessServer(tmp_path)
    target = replace(running.start(), shutdown=running.stop)
    try:
        result = await outcome(
            "connection/shutdown.yaml",
            "connection/shutdown-during-a-handshake-sends-no-application-close-there", target)
    finally:
        running.stop()
    assert result.verdict is (Verdict.FAIL if weaken else Verdict.PASS), result
    if weaken:
        assert "was not closed by peer" in result.reason, result


class _Prepending(bytearray):
    """A payload to which padding is added in front (VEL-FRM-014 broken)."""

    def __iadd__(self, other: Any) -> _Prepending:
        self[:0] = other
        return self


def pads_in_front(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every packet's PADDING goes before its frames instead of after them."""
    seal = sender._seal

    def front(conn: Connection, plans: list[Any], now: float, pad_to: int) -> bytes:
        for plan in plans:
            plan.payload = _Prepending(plan.payload)
        return seal(conn, plans, now, pad_to)

    monkeypatch.setattr(sender, "_seal", front)


@pytest.mark.spec("VEL-FRM-014")
@pytest.mark.parametrize("name", ["frames/server-padding-comes-last",
                                  "frames/client-padding-comes-last"])
async def test_an_endpoint_that_pads_in_front_of_its_frames_fails(
        name: str, reference: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process endpoint (server and client) padding in front of its frames fails the
    padding scenario of its role; the reference passes it."""
    assert (await outcome("frames/padding.yaml", name, reference)).verdict is Verdict.PASS
    pads_in_front(monkeypatch)
    failed = await outcome("frames/padding.yaml", name, reference)
    assert failed.verdict is Verdict.FAIL, failed
    assert "padding_not_last == 0" in failed.reason, failed


def widens_ack_largest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ACK frame's Largest Acknowledged is written as an 8-byte varint (VEL-VAR-004
    broken; the frame type itself must stay minimal)."""
    ack = frames._ENCODERS[Ack]

    def widened(writer: Writer, frame: Frame) -> None:
        inner = Writer()
        ack(inner, frame)
        data = inner.data()
        largest, end = varint_at(data, 1)
        writer.push_bytes(data[:1])
        writer.push_varint(largest, 8)
        writer.push_bytes(data[end:])

    monkeypatch.setitem(frames._ENCODERS, Ack, widened)


@pytest.mark.spec("VEL-VAR-004")
@pytest.mark.parametrize("name", ["encoding/server-frames-use-minimal-varints",
                                  "encoding/client-frames-use-minimal-varints"])
async def test_an_endpoint_that_widens_a_varint_fails(
        name: str, reference: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process endpoint (server and client) writing its ACK frames' largest
    acknowledged in 8 bytes fails the minimal-varints scenario of its role, naming the
    packet and the frame; the reference passes it."""
    assert (await outcome("encoding/varints.yaml", name, reference)).verdict is Verdict.PASS
    widens_ack_largest(monkeypatch)
    failed = await outcome("encoding/varints.yaml", name, reference)
    assert failed.verdict is Verdict.FAIL, failed
    assert "non_minimal_varints == []" in failed.reason, failed
    assert failed.actual is not None and ": ACK" in failed.actual, failed
