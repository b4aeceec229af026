"""The transport on an in-memory pair with a virtual clock: handshakes over packets, streams,
loss and reordering, PTO, idle timeout, flow control, stream limits, closing."""

from __future__ import annotations

import hashlib

import pytest

from harness.loopback import CLIENT_ADDR, ONE_WAY, SERVER_ADDR, lossy, perfect
from harness.pair import PairSpec
from tests.core.transport.helpers import both_completed, completed, make, terminated
from velocity.core.connection import StreamsExhausted
from velocity.core.errors import ErrorCode
from velocity.core.events import (
    HandshakeConfirmed,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from velocity.core.hybrid import PROFILES, Profile
from velocity.core.state import State

PAYLOAD = hashlib.shake_256(b"velocity transfer").digest(300_000)


@pytest.mark.spec("VEL-HS-103", "VEL-PROT-013", "VEL-KS-002")
@pytest.mark.parametrize("mode", ["pdk", "discovery"])
@pytest.mark.parametrize("profile", PROFILES.values(), ids=lambda p: p.name)
def test_handshake_over_packets(mode: str, profile: Profile) -> None:
    pair = make(spec=PairSpec(profile, mode))
    pair.connect()
    assert pair.run(lambda: both_completed(pair) and pair.client.handshake_confirmed)
    assert any(isinstance(e, HandshakeConfirmed) for e in pair.client_events)
    assert pair.client.spaces[0].discarded and pair.client.spaces[1].discarded
    rtts = round(pair.now / (2 * ONE_WAY))
    assert rtts <= (2 if mode == "discovery" else 1) + 1, pair.now


@pytest.mark.spec("VEL-STR-001", "VEL-HTTP-001")
def test_bidirectional_and_unidirectional_streams_both_ways() -> None:
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    bidi = pair.client.get_next_available_stream_id()
    uni = pair.client.get_next_available_stream_id(unidirectional=True)
    assert (bidi, uni) == (0, 2)
    pair.client.send_stream_data(bidi, b"request", end_stream=True)
    pair.client.send_stream_data(uni, b"one way", end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", bidi)
                    and pair.finished_stream("server", uni))
    server = pair.server
    assert server is not None
    server.send_stream_data(bidi, b"response", end_stream=True)
    pushed = server.get_next_available_stream_id(unidirectional=True)
    assert pushed == 3
    server.send_stream_data(pushed, b"from the server", end_stream=True)
    assert pair.run(lambda: pair.received("client", bidi) == (b"response", True)
                    and pair.received("client", pushed) == (b"from the server", True))


@pytest.mark.spec("VEL-REC-001", "VEL-REC-002", "VEL-REC-003")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_transfer_survives_loss_reordering_and_duplication(seed: int) -> None:
    pair = make(network=lossy(seed, loss=0.05, reorder=0.1, duplicate=0.02))
    pair.connect()
    assert pair.run(lambda: both_completed(pair), max_time=20)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, PAYLOAD, end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", sid), max_time=120), seed
    assert pair.received("server", sid)[0] == PAYLOAD


def drop_first(direction: str, count: int = 1):  # type: ignore[no-untyped-def]
    left = {"n": count}

    def network(dir_: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        if dir_ == direction and left["n"] > 0:
            left["n"] -= 1
            return []
        return [(ONE_WAY, datagram)]

    return network


@pytest.mark.spec("VEL-REC-002", "VEL-CONN-002")
@pytest.mark.parametrize(("direction", "count"), [("c2s", 1), ("c2s", 2), ("s2c", 1),
                                                  ("s2c", 3), ("c2s", 4)])
@pytest.mark.parametrize("mode", ["pdk", "discovery"])
def test_lost_handshake_flights_are_recovered_by_pto(mode: str, direction: str,
                                                     count: int) -> None:
    pair = make(mode, drop_first(direction, count))
    pair.connect()
    assert pair.run(lambda: both_completed(pair), max_time=20)
    assert pair.client.recovery.pto_count == 0  # reset once acknowledgements resumed


@pytest.mark.spec("VEL-CONN-003")
def test_idle_timeout_closes_silently_on_both_sides() -> None:
    pair = make(client={"idle_timeout": 2.0}, server={"idle_timeout": 5.0})
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    started = pair.now
    assert pair.run(lambda: pair.client.state == State.TERMINATED, max_time=30)
    assert 2.0 <= pair.now - started < 3.0
    (end,) = terminated(pair.client_events)
    assert end.reason == "idle timeout"
    assert pair.run(lambda: not pair.endpoint.connections, max_time=30)


@pytest.mark.spec("VEL-STR-002")
def test_flow_control_blocks_and_unblocks() -> None:
    pair = make(server={"max_data": 16_384, "max_stream_data": 8_192})
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, PAYLOAD[:100_000], end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", sid), max_time=60)
    assert pair.received("server", sid)[0] == PAYLOAD[:100_000]
    assert pair.client.flow.max_send > 16_384  # MAX_DATA raised it as data was consumed


@pytest.mark.spec("VEL-STR-001", "VEL-STR-002")
def test_stream_limit_and_max_streams_credit() -> None:
    pair = make(server={"max_streams_bidi": 2})
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    first = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(first, b"a", end_stream=True)
    second = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(second, b"b", end_stream=True)
    with pytest.raises(StreamsExhausted):
        pair.client.get_next_available_stream_id()
    server = pair.server
    assert server is not None
    assert pair.run(lambda: pair.finished_stream("server", second))
    for sid in (first, second):
        server.send_stream_data(sid, b"done", end_stream=True)

    def opened() -> bool:
        try:
            pair.client.get_next_available_stream_id()
        except StreamsExhausted:
            return False
        return True

    assert pair.run(opened, max_time=10)


@pytest.mark.spec("VEL-STR-001", "VEL-ERR-002")
def test_opening_beyond_the_limit_is_stream_limit_error() -> None:
    pair = make(server={"max_streams_bidi": 2})
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    pair.client._peer_streams_bidi = 100  # a misbehaving client ignores the limit
    pair.client.send_stream_data(40, b"too far", end_stream=True)
    assert pair.run(lambda: bool(terminated(pair.client_events)))
    (end,) = terminated(pair.client_events)
    assert end.by_peer and end.error_code == ErrorCode.STREAM_LIMIT_ERROR


@pytest.mark.spec("VEL-STR-003")
def test_reset_stream_and_stop_sending() -> None:
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    reset_id = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(reset_id, b"partial")
    assert pair.run(lambda: pair.received("server", reset_id)[0] == b"partial")
    pair.client.reset_stream(reset_id, 0x0103)
    assert pair.run(lambda: StreamReset(reset_id, 0x0103) in pair.server_events)

    stopped_id = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(stopped_id, b"more to come")
    assert pair.run(lambda: pair.received("server", stopped_id)[0] == b"more to come")
    server = pair.server
    assert server is not None
    server.stop_stream(stopped_id, 0x0100)
    assert pair.run(lambda: StopSendingReceived(stopped_id, 0x0100) in pair.client_events)
    assert pair.run(lambda: StreamReset(stopped_id, 0x0100) in pair.server_events)


@pytest.mark.spec("VEL-ERR-004", "VEL-CONN-007")
def test_close_drains_the_peer() -> None:
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    pair.client.close(0x0100, "bye")
    assert pair.run(lambda: bool(terminated(pair.server_events)))
    (end,) = terminated(pair.server_events)
    assert end.by_peer and end.error_code == 0x0100 and end.reason == "bye"
    assert pair.run(lambda: pair.client.state == State.TERMINATED and not
                    pair.endpoint.connections, max_time=10)


@pytest.mark.spec("VEL-ERR-002")
def test_a_close_not_yet_sent_leaves_after_the_datagrams_read_with_it() -> None:
    """A client that closes while it reads the server's first flight (a HELLO_RETRY it
    refuses, say) and reads the rest of that flight before it sends still sends its
    CONNECTION_CLOSE: the falling answer rate of a closing endpoint counts only closes it
    sent."""
    pair = make("discovery", trace=True)
    pair.connect()
    for datagram, _ in pair.client.datagrams_to_send(now=0.0):
        pair.endpoint.receive_datagram(datagram, CLIENT_ADDR, now=0.0)
    flight = [datagram for datagram, _ in pair.endpoint.datagrams_to_send(now=0.0)]
    assert len(flight) >= 3
    pair.client.close(ErrorCode.PROTOCOL_VIOLATION, "refused", application=False)
    for datagram in flight:
        pair.client.receive_datagram(datagram, SERVER_ADDR, now=0.0)
    closes = pair.client.datagrams_to_send(now=0.0)
    assert closes
    for datagram, _ in closes:
        pair.endpoint.receive_datagram(datagram, CLIENT_ADDR, now=0.0)
    pair.run(lambda: bool(terminated(pair.server_events)), max_time=0.001)
    (end,) = terminated(pair.server_events)
    assert end.by_peer and end.error_code == ErrorCode.PROTOCOL_VIOLATION


@pytest.mark.spec("VEL-ERR-005", "VEL-PROT-010")
def test_garbage_and_tampered_datagrams_are_dropped() -> None:
    def corrupt(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        broken = bytearray(datagram)
        broken[-5] ^= 0xFF
        return [(ONE_WAY, bytes(broken)), (ONE_WAY, datagram)]

    pair = make(network=corrupt)
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"still fine", end_stream=True)
    assert pair.run(lambda: pair.received("server", sid) == (b"still fine", True))
    assert not terminated(pair.client_events)


def test_stream_data_events_are_in_order() -> None:
    pair = make(network=lossy(9, loss=0.1, reorder=0.3))
    pair.connect()
    assert pair.run(lambda: both_completed(pair), max_time=30)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, PAYLOAD[:50_000], end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", sid), max_time=120)
    offsets = 0
    for event in pair.server_events:
        if isinstance(event, StreamDataReceived):
            assert PAYLOAD[offsets : offsets + len(event.data)] == event.data
            offsets += len(event.data)
    assert completed(pair.client_events)
    assert perfect("c2s", b"", 0.0)


@pytest.mark.spec("VEL-STR-001")
def test_a_higher_stream_arriving_first_opens_the_lower_ones() -> None:
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    for sid in (8, 4, 0):  # one packet each, so the peer sees stream 8 first
        pair.client.send_stream_data(sid, f"stream {sid}".encode(), end_stream=True)
        pair.step()
    assert pair.run(lambda: all(pair.finished_stream("server", sid) for sid in (0, 4, 8)))
    assert [pair.received("server", sid)[0] for sid in (0, 4, 8)] == [
        b"stream 0", b"stream 4", b"stream 8"]
