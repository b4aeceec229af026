"""Transport rules from the spec that each need one focused check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.loopback import CLIENT_ADDR, ONE_WAY, lossy
from tests.core.transport.helpers import both_completed, make, requested, terminated
from velocity.core.errors import CryptoBufferExceeded, ErrorCode, ProtocolError, UsageError
from velocity.core.frames import HandshakeDone, MaxStreamData, NewConnectionId, Stream
from velocity.core.packet import Epoch
from velocity.core.protection import CONFIDENTIALITY_LIMIT, INTEGRITY_LIMIT, Aead
from velocity.core.recovery import SentPacket
from velocity.core.streams import ReceiveBuffer
from velocity.core.transport_params import (
    TransportParameters,
    decode_transport_parameters,
    encode_transport_parameters,
)

SPEC = Path(__file__).resolve().parents[3] / "docs" / "spec" / "velocity-1.md"


@pytest.mark.spec("VEL-ERR-001")
def test_error_registry_matches_the_spec_table() -> None:
    section = SPEC.read_text().split("## 15. Errors", 1)[1].split("## 16.", 1)[0]
    rows = re.findall(r"^\| (0x[0-9a-f]+) \| ([A-Z_]+) \|", section, re.MULTILINE)
    assert {int(code, 16): name for code, name in rows} == {e.value: e.name for e in ErrorCode}
    assert len({e.value for e in ErrorCode}) == len(ErrorCode)
    for cls in ProtocolError.__subclasses__():
        assert isinstance(cls.code, ErrorCode)


@pytest.mark.spec("VEL-HS-003")
def test_reordered_and_duplicated_crypto_datagrams_complete_the_handshake() -> None:
    held: list[bytes] = []

    def swap_first_two(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        if direction == "c2s" and now == 0.0 and not held:
            held.append(datagram)
            return [(ONE_WAY * 2, datagram), (ONE_WAY * 3, datagram)]  # late, and twice
        return [(ONE_WAY, datagram)]

    pair = make("discovery", swap_first_two)
    pair.connect()
    assert pair.run(lambda: both_completed(pair))


@pytest.mark.spec("VEL-HS-004")
def test_crypto_buffer_limit() -> None:
    crypto = ReceiveBuffer(65536, crypto=True)
    assert crypto.receive(65536 - 10, b"x" * 10) == b""
    with pytest.raises(CryptoBufferExceeded):
        crypto.receive(65536, b"y")
    assert crypto.receive(0, b"z" * 100) == b"z" * 100  # delivering moves the window


@pytest.mark.spec("VEL-FRM-013")
def test_server_receiving_handshake_done_is_a_protocol_violation() -> None:
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    pair.client.queue_after_handshake(HandshakeDone())
    assert pair.run(lambda: bool(terminated(pair.client_events)))
    (end,) = terminated(pair.client_events)
    assert end.by_peer and end.error_code == ErrorCode.PROTOCOL_VIOLATION


@pytest.mark.spec("VEL-CONN-006", "VEL-ERR-003")
def test_too_many_connection_ids_is_connection_id_limit_error() -> None:
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    server = pair.server
    assert server is not None
    for sequence in (1, 2, 3):
        server.queue_after_handshake(NewConnectionId(sequence, 0, bytes([sequence]) * 8,
                                                     bytes(16)))
    assert pair.run(lambda: bool(terminated(pair.server_events)))
    (end,) = terminated(pair.server_events)
    assert end.error_code == ErrorCode.CONNECTION_ID_LIMIT_ERROR
    assert "NEW_CONNECTION_ID.sequence" in end.reason  # the reason names the field


@pytest.mark.spec("VEL-PKT-012", "VEL-PKT-013")
def test_datagram_sizes() -> None:
    sizes: dict[str, list[int]] = {"c2s": [], "s2c": []}

    def record(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        sizes[direction].append(len(datagram))
        return [(ONE_WAY, datagram)]

    pair = make("discovery", record)
    pair.connect()
    (first, _), *_ = pair.client.datagrams_to_send(now=0.0)
    pair.endpoint.receive_datagram(first[:1199], ("127.0.0.1", 1), now=0.0)
    assert not pair.endpoint.connections  # an Initial in a datagram under 1200 bytes
    pair.endpoint.receive_datagram(first, ("127.0.0.1", 1), now=0.0)
    assert pair.endpoint.connections
    pair = make("discovery", record)
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    assert all(size <= 1452 for side in sizes.values() for size in side)
    assert sizes["c2s"][0] >= 1200  # the client pads its first Initial datagram


@pytest.mark.spec("VEL-TP-004")
def test_preferred_address_is_ignored() -> None:
    params = TransportParameters(initial_source_connection_id=b"s")
    raw = encode_transport_parameters(params) + b"\x0d\x03abc"
    assert decode_transport_parameters(raw, from_server=True) == params


@pytest.mark.spec("VEL-PROT-011")
def test_key_updates_mid_transfer() -> None:
    pair = make()
    pair.connect()
    with pytest.raises(UsageError):
        pair.client.request_key_update()  # not before the handshake is confirmed
    assert pair.run(lambda: both_completed(pair) and pair.client.handshake_confirmed)
    server = pair.server
    assert server is not None
    payload = bytes(range(256)) * 800
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, payload[:100_000])
    pair.run(lambda: len(pair.received("server", sid)[0]) > 20_000)
    pair.client.request_key_update()
    with pytest.raises(UsageError):
        pair.client.request_key_update()  # one at a time
    pair.client.send_stream_data(sid, payload[100_000:], end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", sid))
    assert pair.received("server", sid)[0] == payload
    assert (pair.client._send_phase, pair.client._recv_phase) == (1, 1)
    assert (server._send_phase, server._recv_phase) == (1, 1)
    with pytest.raises(UsageError):
        server.request_key_update()  # none of its packets in this phase was acknowledged
    server.send_stream_data(sid, b"acknowledged ")
    assert pair.run(lambda: pair.received("client", sid)[0] == b"acknowledged "
                    and server.key_updates.unacked_from is None)
    server.request_key_update()  # the server may start the next one
    server.send_stream_data(sid, b"after two updates", end_stream=True)
    assert pair.run(lambda: pair.finished_stream("client", sid))
    assert pair.received("client", sid)[0] == b"acknowledged after two updates"
    assert pair.client._recv_phase == 0 and pair.client._send_phase == 0


def _key_updates(connection: object) -> list[tuple[str, str]]:
    tracer = getattr(connection, "tracer", None)
    assert tracer is not None
    return [(e["data"]["key_type"], e["data"]["trigger"]) for e in tracer.events
            if e["name"] == "quic:key_updated" and e["data"]["trigger"] != "tls"]


def test_key_updates_are_traced_with_who_started_them() -> None:
    pair = make(trace=True)
    pair.connect()
    assert pair.run(lambda: both_completed(pair) and pair.client.handshake_confirmed)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"before")
    assert pair.run(lambda: pair.client.key_updates.unacked_from is None)
    pair.client.request_key_update()
    pair.client.send_stream_data(sid, b" after", end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", sid) and pair.client._recv_phase)
    assert _key_updates(pair.client) == [("client_1rtt_secret", "local_update"),
                                         ("server_1rtt_secret", "local_update")]
    assert _key_updates(pair.server) == [("client_1rtt_secret", "remote_update"),
                                         ("server_1rtt_secret", "remote_update")]


@pytest.mark.spec("VEL-PROT-011")
def test_no_key_update_before_an_acknowledged_1rtt_packet_and_a_confirmed_peer() -> None:
    """A server is confirmed at completion but its client only on HANDSHAKE_DONE: the server
    may start an update only once the client acknowledged HANDSHAKE_DONE (a client that
    lost it would read the update as KEY_UPDATE_ERROR), and neither side before one of its
    1-RTT packets was acknowledged."""
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    server = pair.server
    assert server is not None and server.handshake_confirmed
    assert not server.key_updates.done_acknowledged  # HANDSHAKE_DONE still in flight
    with pytest.raises(UsageError):
        server.request_key_update()
    assert pair.run(lambda: server.key_updates.done_acknowledged
                    and pair.client.handshake_confirmed)
    server.request_key_update()
    sid = server.get_next_available_stream_id()
    server.send_stream_data(sid, b"new keys", end_stream=True)
    assert pair.run(lambda: pair.finished_stream("client", sid))
    assert not terminated(pair.client_events)
    fresh = make()
    assert fresh.client.key_updates.unacked_from == 0, "the first update waits for an ACK"


@pytest.mark.spec("VEL-PROT-011")
def test_a_second_key_update_before_the_first_is_acknowledged_is_key_update_error() -> None:
    """A hostile client updates its keys twice in a row, before the server acknowledged any
    packet of the first update (RFC 9001 section 6.5), forcing the updates past
    request_key_update's guard (the seam)."""
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair) and pair.client.handshake_confirmed)
    sid = pair.client.get_next_available_stream_id()
    datagrams = []
    for chunk in (b"first update", b"second update"):
        pair.client.request_key_update(force=True)
        pair.client.send_stream_data(sid, chunk)
        datagrams += pair.client.datagrams_to_send(now=pair.now)
    for datagram, _ in datagrams:
        pair.endpoint.receive_datagram(datagram, CLIENT_ADDR, now=pair.now)
    events = []
    while (item := pair.endpoint.next_event()) is not None:
        events.append(item[1])
    assert [t.error_code for t in terminated(events)] == [ErrorCode.KEY_UPDATE_ERROR]


@pytest.mark.spec("VEL-PKT-008")
def test_packet_numbers_start_at_zero_and_never_repeat() -> None:
    pair = make("discovery", lossy(4, loss=0.05, reorder=0.1))
    sent: list[tuple[int, int]] = []
    record = pair.client.recovery.on_sent

    def observe(packet: SentPacket, now: float) -> None:
        sent.append((packet.epoch, packet.packet_number))
        record(packet, now)

    pair.client.recovery.on_sent = observe  # type: ignore[method-assign]
    pair.connect()
    assert pair.run(lambda: both_completed(pair), max_time=20)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, bytes(100_000), end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", sid), max_time=60)
    for epoch in {e for e, _ in sent}:
        numbers = [n for e, n in sent if e == epoch]
        assert numbers == list(range(len(numbers))), epoch  # from 0, each used once, in order


@pytest.mark.spec("VEL-PROT-012")
def test_keys_update_before_the_confidentiality_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(CONFIDENTIALITY_LIMIT, Aead.AES_128_GCM, 1024 + 60)
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair) and pair.client.handshake_confirmed)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, bytes(200_000), end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", sid), max_time=30)
    keys = pair.client.spaces[2].send_keys
    assert keys is not None and keys.encrypted < 60 + 1  # rotated, fresh key in use
    server = pair.server
    assert server is not None and server._recv_phase == pair.client._send_phase


@pytest.mark.spec("VEL-PROT-012")
def test_integrity_limit_closes_with_aead_limit_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(INTEGRITY_LIMIT, Aead.AES_128_GCM, 3)
    forging = {"on": False}

    def forge(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        if forging["on"] and direction == "s2c" and not datagram[0] & 0x80:
            return [(ONE_WAY, datagram[:-1] + bytes([datagram[-1] ^ 1]))]
        return [(ONE_WAY, datagram)]

    pair = make(network=forge)
    pair.connect()
    assert pair.run(lambda: both_completed(pair) and pair.client.handshake_confirmed)
    forging["on"] = True
    server = pair.server
    assert server is not None
    server.send_stream_data(server.get_next_available_stream_id(), bytes(20_000), True)
    assert pair.run(lambda: bool(terminated(pair.client_events)), max_time=20)
    (end,) = terminated(pair.client_events)
    assert end.error_code == ErrorCode.AEAD_LIMIT_REACHED and not end.by_peer


@pytest.mark.spec("VEL-REC-001")
def test_a_packet_after_a_gap_is_acknowledged_at_once() -> None:
    pair = make(server={"ack_every": 10})
    pair.connect()
    assert pair.run(lambda: both_completed(pair) and pair.client.handshake_confirmed)
    server = pair.server
    assert server is not None
    stream = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(stream, bytes(5000))
    sent: list[bytes] = []
    for step in range(10):  # the pacer spreads them out
        sent += [d for d, _ in pair.client.datagrams_to_send(now=pair.now + step * 0.01)]
    first, _, third, *_ = sent
    space = server.spaces[Epoch.APPLICATION]
    server.receive_datagram(first, CLIENT_ADDR, now=pair.now)
    assert not space.ack_needed  # in order: it may wait for more (ack_every, max_ack_delay)
    server.receive_datagram(third, CLIENT_ADDR, now=pair.now)
    assert space.ack_needed  # after a gap: the sender must hear of it now


@pytest.mark.spec("VEL-REC-002")
def test_reordering_widens_the_loss_thresholds() -> None:
    """Packets declared lost and then acknowledged were reordered: the sender widens its
    packet and time thresholds, as RFC 9002 section 6.1 allows, and stops resending them."""
    pair = make(network=lossy("reorder", reorder=0.5))
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    stream = pair.client.get_next_available_stream_id()
    payload = bytes(range(256)) * 1200
    pair.client.send_stream_data(stream, payload, end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", stream), max_time=60)
    assert pair.received("server", stream) == (payload, True)
    recovery = pair.client.recovery
    assert recovery.packet_threshold > 3 and recovery.time_threshold > 9 / 8


@pytest.mark.spec("VEL-CONN-014")
def test_the_server_says_it_follows_no_migration() -> None:
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    assert pair.client.peer_params is not None
    assert pair.client.peer_params.disable_active_migration


@pytest.mark.spec("VEL-ERR-002", "VEL-STR-001")
@pytest.mark.parametrize("frame", ["stream", "max_stream_data"])
def test_a_close_names_the_type_of_the_frame_that_caused_it(frame: str) -> None:
    """A stream beyond the limit, by STREAM (the receive fast path) or by MAX_STREAM_DATA on
    a stream never opened: the close carries that frame's type (it carried 0)."""
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    beyond = 4 * 1000  # client-initiated bidirectional, far past the limit of 128
    sent = (Stream(beyond, b"x", 0, True) if frame == "stream" else MaxStreamData(beyond + 1,
                                                                                  10))
    pair.client.send_frames(Epoch.APPLICATION, [sent])
    assert pair.run(lambda: bool(terminated(pair.client_events)))
    (end,) = terminated(pair.client_events)
    assert end.by_peer
    if frame == "stream":
        assert end.error_code == ErrorCode.STREAM_LIMIT_ERROR and 0x08 <= end.frame_type <= 0x0F
    else:
        assert end.frame_type == MaxStreamData.TYPE


@pytest.mark.spec("VEL-STR-002")
def test_a_sender_held_by_the_stream_limit_says_stream_data_blocked() -> None:
    pair = make(client={"max_stream_data": 1000}, trace=True)
    server, stream = requested(pair)
    server.send_stream_data(stream, bytes(8000), end_stream=True)
    assert pair.run(lambda: pair.received("client", stream) == (bytes(8000), True))
    frames = [f for e in pair.client.tracer.events  # type: ignore[union-attr]
              if e["name"] == "quic:packet_received" for f in e["data"]["frames"]]
    blocked = [f for f in frames if f["frame_type"] == "stream_data_blocked"]
    assert blocked and blocked[0]["stream_id"] == stream and blocked[0]["limit"] == 1000
