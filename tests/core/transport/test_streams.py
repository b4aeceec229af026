"""Send buffers: what is resent after a loss, and what a late acknowledgement withdraws;
received data handed to the application."""

from __future__ import annotations

from harness.loopback import SERVER_ADDR
from tests.core.transport.helpers import make, requested
from velocity.core.events import StreamDataReceived
from velocity.core.streams import SendBuffer


def test_a_late_ack_withdraws_bytes_declared_lost() -> None:
    """Bytes declared lost and then acknowledged after all leave the buffer; they must not
    be resent (they are gone, and slicing below the buffer's base would send other bytes
    under their offsets)."""
    buffer = SendBuffer()
    buffer.write(bytes(range(100)), end_stream=True)
    first = buffer.next_frame(60, 1 << 62)
    second = buffer.next_frame(60, 1 << 62)
    assert first == (0, bytes(range(60)), False)
    assert second == (60, bytes(range(60, 100)), True)
    buffer.on_lost(0, 60, False)
    buffer.on_acked(0, 60, False)  # the "lost" packet's ACK arrives late
    assert buffer.next_frame(60, 1 << 62) is None
    buffer.on_lost(60, 100, True)
    assert buffer.next_frame(60, 1 << 62) == (60, bytes(range(60, 100)), True)


def test_lost_bytes_are_resent_from_their_offsets() -> None:
    buffer = SendBuffer()
    buffer.write(b"abcdefghij")
    assert buffer.next_frame(4, 1 << 62) == (0, b"abcd", False)
    assert buffer.next_frame(4, 1 << 62) == (4, b"efgh", False)
    buffer.on_acked(4, 8, False)  # acknowledged out of order: the buffer keeps its base
    buffer.on_lost(0, 4, False)
    assert buffer.next_frame(10, 1 << 62) == (0, b"abcd", False)
    assert buffer.next_frame(10, 1 << 62) == (8, b"ij", False)


def test_consecutive_packets_of_a_stream_are_one_event() -> None:
    """Data of one stream that several packets delivered before the application asked is
    handed out as one StreamDataReceived, in order, with the end of the stream."""
    pair = make()
    server, stream = requested(pair)
    server.recovery.cc.window = 1 << 30  # the whole answer leaves in one call
    body = bytes(range(256)) * 200
    server.send_stream_data(stream, body, end_stream=True)
    pair.endpoint.mark(server)
    datagrams = pair.endpoint.datagrams_to_send(now=pair.now)
    assert len(datagrams) > 10
    for datagram, _ in datagrams:
        pair.client.receive_datagram(datagram, SERVER_ADDR, now=pair.now)
    events = []
    while (event := pair.client.next_event()) is not None:
        events.append(event)
    assert events == [StreamDataReceived(stream, body, True)]


def test_a_second_acknowledgement_of_gone_bytes_changes_nothing() -> None:
    """Bytes sent twice (a retransmission) can be acknowledged twice; the second time they
    are already gone from the buffer and must not stop it from trimming later ranges."""
    buffer = SendBuffer()
    buffer.write(bytes(300))
    for _ in range(3):
        buffer.next_frame(100, 1 << 62)
    buffer.on_acked(0, 100, False)
    buffer.on_acked(0, 100, False)  # the retransmission's ACK
    buffer.on_acked(100, 200, False)
    buffer.on_acked(200, 300, False)
    assert buffer.buffered == 0
