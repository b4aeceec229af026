"""What a hostile peer can make the core hold is bounded, and what a hostile run found it
could send unchecked is refused. On the in-memory pair and ServerEndpoint with the virtual
clock, so sizes are exact."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.loopback import CLIENT_ADDR, Pair
from harness.pair import PairSpec
from tests.core.transport.helpers import both_completed, make, terminated
from velocity.core.errors import (
    CryptoBufferExceeded,
    DecodeError,
    ErrorCode,
    TransportParameterError,
)
from velocity.core.events import StreamDataReceived, StreamReset
from velocity.core.frames import Crypto, Frame, Ping, ResetStream, RetireConnectionId, Stream
from velocity.core.handshake import messages as m
from velocity.core.packet import Epoch
from velocity.core.receiver import MAX_RECEIVED_RANGES
from velocity.core.seams import PlannedPacket
from velocity.core.state import CRYPTO_BUFFER_LIMIT
from velocity.core.streams import MAX_CRYPTO_RANGES, MAX_STREAM_RANGES, ReceiveBuffer
from velocity.core.transport_params import (
    TransportParameters,
    decode_transport_parameters,
    encode_transport_parameters,
)

MiB = 1 << 20
SLACK = 8192  # what tracemalloc counts besides the buffered bytes (ranges, frames, dicts)


def _held_while(feed: Callable[[], object]) -> int:
    """Bytes allocated by ``feed()`` and still alive after it."""
    tracemalloc.start()
    try:
        feed()
        return tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def _server_closes(pair: Pair) -> list[tuple[int, str]]:
    """The codes and reasons the server closed with (its events drained into the pair's)."""
    while (item := pair.endpoint.next_event()) is not None:
        pair.server_events.append(item[1])
    return [(t.error_code, t.reason) for t in terminated(pair.server_events) if not t.by_peer]


def _connected() -> Pair:
    pair = make()
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    return pair


def _inject(pair: Pair, epoch: Epoch, frames: list[Frame]) -> None:
    """Client frames in ``epoch``, handed to the server at once (no clock runs)."""
    pair.client.send_frames(epoch, frames)
    for datagram, _ in pair.client.datagrams_to_send(now=pair.now):
        pair.endpoint.receive_datagram(datagram, CLIENT_ADDR, now=pair.now)


# --- 1. overlapping data is stored once ------------------------------------------------------


@pytest.mark.spec("VEL-HS-004", "VEL-STR-004")
def test_overlapping_crypto_before_any_handshake_holds_at_most_the_limit() -> None:
    """Initial packets whose CRYPTO frames overlap, each 1100 bytes 300 bytes further on,
    never offset 0: the half-open connection holds the span they cover (under 64 KiB),
    not one copy per frame (which was 236 KB here)."""
    pair = make()
    pair.client.seams.crypto_policy = lambda epoch, offset, data: []  # no CLIENT_HELLO
    pair.connect()
    datagrams = []
    for index in range((CRYPTO_BUFFER_LIMIT - 1100) // 300):
        pair.client.send_frames(Epoch.INITIAL, [Crypto(1 + 300 * index, bytes([index]) * 1100)])
        datagrams += [d for d, _ in pair.client.datagrams_to_send(now=pair.now)]
    first, *rest = datagrams
    pair.endpoint.receive_datagram(first, CLIENT_ADDR, now=pair.now)
    assert pair.server is not None

    def feed() -> None:
        for datagram in rest:
            pair.endpoint.receive_datagram(datagram, CLIENT_ADDR, now=pair.now)

    held = _held_while(feed)
    crypto = pair.server.spaces[Epoch.INITIAL].crypto_recv
    assert crypto.highest == 1 + 300 * (len(datagrams) - 1) + 1100 <= CRYPTO_BUFFER_LIMIT
    assert held <= crypto.highest + SLACK
    assert not _server_closes(pair)


@pytest.mark.spec("VEL-STR-004")
def test_overlapping_stream_data_holds_at_most_the_span() -> None:
    """The hostile run's pattern: frames of 1150 bytes at offsets 1, 2, 3 ... (offset 0
    withheld). Held: the 3149 bytes they span, not 2000 copies (2.3 MB)."""
    receiver = ReceiveBuffer(4 * MiB)
    piece = bytes(1150)
    held = _held_while(lambda: [receiver.receive(offset, piece) for offset in range(1, 2001)])
    assert receiver.highest == 2000 + 1150
    assert held <= receiver.highest + SLACK
    assert receiver.receive(0, b"x") == b"x" + bytes(receiver.highest - 1)


@given(st.data())
@pytest.mark.spec("VEL-HS-003", "VEL-STR-004")
def test_reassembly_delivers_each_byte_once_in_order(data: st.DataObject) -> None:
    """Pieces of any sizes, overlapping, in any order: what comes out is the data, in order,
    each byte once, as soon as the prefix before it is complete."""
    size = data.draw(st.integers(1, 200))
    payload = bytes(i % 251 for i in range(size))
    pieces = data.draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 60)),
                                max_size=30))
    for crypto in (True, False):
        receiver, out, seen = ReceiveBuffer(1 << 20, crypto=crypto), bytearray(), set()
        for start, length in [*pieces, (0, size)]:
            out += receiver.receive(start, payload[start : start + length])
            seen |= set(range(start, min(start + length, size)))
            prefix = next(i for i in range(size + 1) if i not in seen)
            assert out == payload[:prefix] and receiver.delivered == prefix
        assert out == payload


@pytest.mark.spec("VEL-HS-003")
def test_rewritten_bytes_are_ignored() -> None:
    """A re-sent byte that differs from the first copy changes nothing (RFC 9000 section
    2.2 lets a receiver ignore re-sent bytes)."""
    receiver = ReceiveBuffer(1 << 20)
    assert receiver.receive(2, b"cd") == b""
    assert receiver.receive(1, b"XYZW") == b""  # "Y" and "Z" re-send "c" and "d"
    assert receiver.receive(0, b"a") == b"aXcdW"


@pytest.mark.spec("VEL-STR-005")
def test_too_many_crypto_holes_are_crypto_buffer_exceeded() -> None:
    """One byte every other offset: each makes a range of its own, up to the bound."""
    receiver = ReceiveBuffer(CRYPTO_BUFFER_LIMIT, crypto=True)
    for index in range(MAX_CRYPTO_RANGES):
        assert receiver.receive(1 + 2 * index, b"x") == b""
    assert receiver.waiting == MAX_CRYPTO_RANGES
    with pytest.raises(CryptoBufferExceeded):
        receiver.receive(1 + 2 * MAX_CRYPTO_RANGES, b"x")


def _holes(pair: Pair, stream_id: int, count: int) -> None:
    """One byte every other offset from 1 on ``stream_id``: ``count`` ranges that wait."""
    frames: list[Frame] = [Stream(stream_id, b"x", 1 + 2 * i) for i in range(count)]
    for first in range(0, count, 150):
        _inject(pair, Epoch.APPLICATION, frames[first : first + 150])


@pytest.mark.spec("VEL-STR-005")
def test_stream_holes_are_bounded_across_the_connection() -> None:
    """The ranges waiting add up across streams (a bound per stream would let 256 streams
    hold 256 times as many); delivering or resetting a stream frees its ranges; past the
    bound the server closes with PROTOCOL_VIOLATION."""
    pair = _connected()
    share = MAX_STREAM_RANGES // 4
    for stream_id in (0, 4, 8, 12):
        _holes(pair, stream_id, share)
    assert not _server_closes(pair)
    _inject(pair, Epoch.APPLICATION, [Stream(0, bytes(2 * share), 0),
                                     ResetStream(4, 0, 2 * share)])
    assert not _server_closes(pair)
    _holes(pair, 16, 2 * share)
    assert not _server_closes(pair)  # MAX_STREAM_RANGES wait again
    _holes(pair, 20, 1)
    (close,) = _server_closes(pair)
    assert close[0] == ErrorCode.PROTOCOL_VIOLATION and "STREAM.offset" in close[1]


@pytest.mark.spec("VEL-STR-005", "VEL-HS-004")
def test_a_peer_that_fragments_its_crypto_is_closed_with_crypto_buffer_exceeded() -> None:
    pair = make()
    pair.connect()
    frames: list[Frame] = [Crypto(60_000 + 2 * i, b"x") for i in range(MAX_CRYPTO_RANGES + 1)]
    _inject(pair, Epoch.INITIAL, frames)
    assert [code for code, _ in _server_closes(pair)] == [ErrorCode.CRYPTO_BUFFER_EXCEEDED]


# --- 2. 1-RTT CRYPTO before the handshake completes ------------------------------------------


def _withholding_finished() -> Pair:
    """A PDK client that has its 1-RTT keys but never lets its FINISHED (Handshake) out."""
    pair = make()

    def no_handshake_packets(packets: list[PlannedPacket]) -> list[PlannedPacket]:
        return [p for p in packets if p.epoch != Epoch.HANDSHAKE]

    pair.client.seams.packet_mutator = no_handshake_packets
    pair.connect()
    assert pair.run(lambda: pair.client.handshake_complete)
    assert pair.server is not None and not pair.server.handshake_complete
    return pair


@pytest.mark.spec("VEL-HS-004")
def test_early_1rtt_crypto_is_bounded_by_the_crypto_buffer_limit() -> None:
    """Contiguous 1-RTT CRYPTO from a client that withholds its FINISHED: held up to 64 KiB,
    CRYPTO_BUFFER_EXCEEDED beyond (it was held without limit)."""
    pair = _withholding_finished()
    chunk, offset = 1000, 0
    while offset + chunk <= CRYPTO_BUFFER_LIMIT:
        _inject(pair, Epoch.APPLICATION, [Crypto(offset, bytes(chunk))])
        offset += chunk
    assert not _server_closes(pair)  # 65000 bytes: within the limit
    _inject(pair, Epoch.APPLICATION, [Crypto(offset, bytes(chunk))])
    assert [code for code, _ in _server_closes(pair)] == [ErrorCode.CRYPTO_BUFFER_EXCEEDED]


# --- 3. received packet-number ranges ---------------------------------------------------------


@pytest.mark.spec("VEL-CONN-013")
def test_received_ranges_are_bounded_and_the_oldest_forgotten() -> None:
    """A client that skips every other packet number and never hears (so never acknowledges)
    the server's ACKs: the server keeps the newest MAX_RECEIVED_RANGES ranges; a packet
    below them counts as a duplicate."""
    pair = make()
    pair.connect()
    for datagram, _ in pair.client.datagrams_to_send(now=pair.now):  # the CLIENT_HELLO
        pair.endpoint.receive_datagram(datagram, CLIENT_ADDR, now=pair.now)
    pings = []
    for _ in range(2 * (MAX_RECEIVED_RANGES + 20) + 1):
        pair.client.send_frames(Epoch.INITIAL, [Ping()])
        (datagram, _), = pair.client.datagrams_to_send(now=pair.now)
        pings.append(datagram)
    for datagram in pings[::2]:
        pair.endpoint.receive_datagram(datagram, CLIENT_ADDR, now=pair.now)
        pair.endpoint.datagrams_to_send(now=pair.now)  # each answer carries an ACK
    assert pair.server is not None
    space = pair.server.spaces[Epoch.INITIAL]
    newest = pair.client.spaces[Epoch.INITIAL].next_packet_number - 1
    assert len(space.received) == MAX_RECEIVED_RANGES
    assert space.received.bounds()[1] == newest + 1
    assert space.ack_floor == space.received.first()[0] > 0
    skipped = space.ack_floor - 2 * MAX_RECEIVED_RANGES  # the packet number of pings[1]
    pair.endpoint.receive_datagram(pings[1], CLIENT_ADDR, now=pair.now)
    assert skipped not in space.received and len(space.received) == MAX_RECEIVED_RANGES
    assert not _server_closes(pair)


# --- 4. RESET_STREAM and connection flow control ----------------------------------------------


@pytest.mark.spec("VEL-STR-001")
def test_reset_final_sizes_count_against_the_connection_limit() -> None:
    """Eight RESET_STREAMs of 4 MiB - 1 each (32 MiB) against a 16 MiB initial_max_data."""
    pair = _connected()
    _inject(pair, Epoch.APPLICATION, [ResetStream(4 * i, 1, 4 * MiB - 1) for i in range(8)])
    (close,) = _server_closes(pair)
    assert close[0] == ErrorCode.FLOW_CONTROL_ERROR and "RESET_STREAM.final_size" in close[1]


@pytest.mark.spec("VEL-STR-001")
def test_data_after_a_reset_is_counted_once_and_not_delivered() -> None:
    """RESET_STREAM (final size 1000), then the stream's data up to 1000 (a retransmission
    overtaken): 1000 bytes against a 1500-byte connection limit, not 2000; and the data of
    a reset stream is not handed to the application."""
    pair = make(server={"max_data": 1500})
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    _inject(pair, Epoch.APPLICATION, [ResetStream(0, 7, 1000), Stream(0, bytes(1000), 0, True)])
    assert not _server_closes(pair)
    assert StreamReset(0, 7) in pair.server_events
    assert not [e for e in pair.server_events if isinstance(e, StreamDataReceived)]


@pytest.mark.spec("VEL-STR-002", "VEL-STR-001")
def test_a_reset_returns_its_undelivered_bytes_to_the_connection_window() -> None:
    """The bytes of a reset stream that were never delivered are consumed all the same:
    otherwise every reset shrinks the connection's window for good, and a peer that cancels
    enough streams stalls. Here 1500 of a 2000-byte window: the next MAX_DATA is 3500."""
    pair = make(server={"max_data": 2000})
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    _inject(pair, Epoch.APPLICATION, [Stream(0, bytes(100)), ResetStream(0, 7, 1500)])
    assert pair.server is not None and not _server_closes(pair)
    pair.endpoint.datagrams_to_send(now=pair.now)
    assert pair.server.flow.max_recv == 1500 + 2000


# --- 5. validation gaps ---------------------------------------------------------------------


@pytest.mark.spec("VEL-TP-002", "VEL-TP-004")
def test_a_client_sending_preferred_address_is_a_transport_parameter_error() -> None:
    raw = encode_transport_parameters(TransportParameters(initial_source_connection_id=b"c"))
    with pytest.raises(TransportParameterError) as caught:
        decode_transport_parameters(raw + b"\x0d\x03abc", from_server=False)
    assert caught.value.field == "transport_parameters.0xd"


def _hello(server_name: bytes) -> m.ClientHello:
    return m.ClientHello(bytes(32), (b"velocity/1",), (1,), (1,), 1, b"share",
                         ((m.ExtensionType.SERVER_NAME, server_name),))


@pytest.mark.spec("VEL-EXT-002")
@pytest.mark.parametrize("server_name", [b"", b"a" * 256, b"\xff\xfe.example"])
def test_a_bad_server_name_is_a_decode_error(server_name: bytes) -> None:
    raw = m.encode_message(_hello(server_name))
    with pytest.raises(DecodeError) as caught:
        m.decode_message(raw[0], raw[4:])
    assert caught.value.field == "CLIENT_HELLO.server_name"


@pytest.mark.spec("VEL-EXT-002")
def test_a_server_name_of_255_bytes_decodes() -> None:
    raw = m.encode_message(_hello(b"a" * 255))
    assert m.decode_message(raw[0], raw[4:]) == _hello(b"a" * 255)


@pytest.mark.spec("VEL-EXT-002")
def test_a_server_closes_on_a_300_byte_server_name() -> None:
    pair = make(spec=PairSpec(mode="pdk", client={"server_name": "a" * 300}))
    pair.connect()
    assert pair.run(lambda: bool(terminated(pair.server_events)))
    assert [code for code, _ in _server_closes(pair)] == [ErrorCode.DECODE_ERROR]


@pytest.mark.spec("VEL-CONN-012")
def test_retiring_a_connection_id_never_issued_is_a_protocol_violation() -> None:
    pair = _connected()
    _inject(pair, Epoch.APPLICATION, [RetireConnectionId(1)])
    (close,) = _server_closes(pair)
    assert close[0] == ErrorCode.PROTOCOL_VIOLATION
    assert "RETIRE_CONNECTION_ID.sequence" in close[1]
