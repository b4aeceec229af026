"""Send buffers: what is resent after a loss, and what a late acknowledgement withdraws."""

from __future__ import annotations

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
