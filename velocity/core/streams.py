"""Stream state (spec VEL-STR-001..003, RFC 9000 sections 2-4): send buffers that hand out
frames and take acknowledgements and losses, receive buffers that reassemble by offset and
enforce flow control and final sizes. The CRYPTO stream of each packet-number space uses
the same receive buffer, with its own limit (VEL-HS-004)."""

from __future__ import annotations

from velocity.core.errors import (
    CryptoBufferExceeded,
    FinalSizeError,
    FlowControlError,
    StreamStateError,
    UsageError,
)
from velocity.core.rangeset import RangeSet

# disjoint ranges of data waiting beyond the delivered prefixes, at most (VEL-STR-005): each
# costs about 120 bytes, and an honest peer leaves one per packet lost or reordered; across
# all the streams of a connection (the receiver counts them), and per CRYPTO stream (a
# handshake flight is a few dozen packets)
MAX_STREAM_RANGES = 1024
MAX_CRYPTO_RANGES = 64


def is_client_initiated(stream_id: int) -> bool:
    return not stream_id & 0x01


def is_unidirectional(stream_id: int) -> bool:
    return bool(stream_id & 0x02)


class SendBuffer:
    """Bytes the application wrote, from the lowest unacknowledged offset on."""

    __slots__ = ("_acked", "_base", "_buffer", "_fin_acked", "_fin_pending", "_pending",
                 "fin_offset", "reset_code", "sent_max", "stop_sending_code")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._base = 0  # stream offset of _buffer[0]
        self._pending = RangeSet()  # offsets to (re)send
        self._acked = RangeSet()
        self.fin_offset: int | None = None
        self._fin_pending = False
        self._fin_acked = False
        self.sent_max = 0  # highest offset ever sent (for flow control accounting)
        self.reset_code: int | None = None
        self.stop_sending_code: int | None = None

    @property
    def write_offset(self) -> int:
        return self._base + len(self._buffer)

    @property
    def buffered(self) -> int:
        """Bytes written but not yet acknowledged."""
        return len(self._buffer)

    def write(self, data: bytes, end_stream: bool = False) -> None:
        if self.fin_offset is not None or self.reset_code is not None:
            raise UsageError("the stream's sending side is closed")
        if data:
            self._pending.add(self.write_offset, self.write_offset + len(data))
            self._buffer += data
        if end_stream:
            self.fin_offset = self.write_offset
            self._fin_pending = True

    @property
    def pending_bytes(self) -> int:
        """Bytes waiting to be sent or resent."""
        return sum(stop - start for start, stop in self._pending)

    def has_data(self) -> bool:
        return self.reset_code is None and (bool(self._pending) or self._fin_pending)

    def next_run(self) -> int:
        """How many bytes the next frame could carry at most (the first pending run)."""
        if self.reset_code is not None or not self._pending:
            return 0
        start, stop = self._pending.first()
        return stop - start

    def next_frame(self, max_size: int, max_offset: int) -> tuple[int, bytes, bool] | None:
        """(offset, data, fin) of up to ``max_size`` bytes below flow-control ``max_offset``."""
        if self.reset_code is not None:
            return None
        if self._pending:
            start, stop = self._pending.first()
            stop = min(stop, start + max_size, max_offset)
            if stop <= start:
                return None
            self._pending.subtract(start, stop)
            data = bytes(self._buffer[start - self._base : stop - self._base])
            self.sent_max = max(self.sent_max, stop)
            fin = self._fin_pending and stop == self.fin_offset and not self._pending
            if fin:
                self._fin_pending = False
            return start, data, fin
        if self._fin_pending and self.fin_offset is not None:
            self._fin_pending = False
            return self.fin_offset, b"", True
        return None

    def mark_sent(self, start: int, stop: int) -> None:
        """Bytes sent another way (a CRYPTO policy, velocity.core.seams): not pending, still
        held until acknowledged or resent when declared lost."""
        self._pending.subtract(start, stop)
        self.sent_max = max(self.sent_max, stop)

    def on_acked(self, start: int, stop: int, fin: bool) -> None:
        if fin:
            self._fin_acked = True
        if stop <= self._base:
            return  # a second copy of bytes already acknowledged and gone
        start = max(start, self._base)
        if start == self._base and not self._acked:  # in order: the usual case
            del self._buffer[: stop - start]
            self._base = stop
            pending = self._pending
            if pending and pending.first()[0] < stop:
                pending.subtract(0, stop)  # declared lost, acknowledged late: not resent
            return
        self._acked.add(start, stop)
        if self._acked and self._acked.first()[0] == self._base:
            _, high = self._acked.shift()
            del self._buffer[: high - self._base]
            self._base = high
            # bytes declared lost and then acknowledged after all (a late ACK) are not resent:
            # they are gone from the buffer
            self._pending.subtract(0, high)

    def on_lost(self, start: int, stop: int, fin: bool) -> None:
        if self.reset_code is not None:
            return
        for low, high in RangeSet([(start, stop)]):
            self._pending.add(max(low, self._base), high)
            for a_low, a_high in self._acked:
                self._pending.subtract(a_low, a_high)
        if fin and not self._fin_acked:
            self._fin_pending = True

    @property
    def finished(self) -> bool:
        """Everything, FIN included, was acknowledged."""
        return self.fin_offset is not None and self._fin_acked and not self._buffer


class ReceiveBuffer:
    """Reassembles data by offset; hands out the contiguous prefix once.

    ``limit`` bounds how far beyond the delivered prefix data may reach: for streams it is
    flow control (FLOW_CONTROL_ERROR), for CRYPTO the buffer limit (CRYPTO_BUFFER_EXCEEDED).
    Data beyond the prefix waits in one buffer that starts at the prefix, with the ranges it
    holds; only the bytes of a frame that are new are stored (re-sent bytes are ignored, as
    RFC 9000 section 2.2 allows), so what is held never exceeds the limit whatever the
    overlap (VEL-STR-004). ``waiting`` counts the disjoint ranges that wait: at most
    ``MAX_CRYPTO_RANGES`` for CRYPTO; a connection bounds those of its streams together
    (VEL-STR-005).
    """

    __slots__ = ("_buffer", "_crypto", "_ranges", "delivered", "final_size", "highest", "limit",
                 "reset_code", "waiting")

    def __init__(self, limit: int, *, crypto: bool = False) -> None:
        self._buffer = bytearray()  # bytes from offset ``delivered`` on; empty: none wait
        self._ranges = RangeSet()  # the offsets ``_buffer`` holds
        self.waiting = 0  # len(_ranges), read on every frame
        self.delivered = 0
        self.highest = 0
        self.limit = limit
        self.final_size: int | None = None
        self.reset_code: int | None = None
        self._crypto = crypto

    def _check_limit(self, end: int) -> None:
        if self._crypto and end - self.delivered > self.limit:
            raise CryptoBufferExceeded(f"{end - self.delivered} bytes beyond the delivered "
                                       f"prefix exceed {self.limit}", field="CRYPTO.offset")
        if not self._crypto and end > self.limit:
            raise FlowControlError(f"data up to {end} exceeds the limit {self.limit}",
                                   field="STREAM.offset")

    def _check_final(self, end: int, fin: bool) -> None:
        if self.final_size is not None and (end > self.final_size or
                                            (fin and end != self.final_size)):
            raise FinalSizeError(f"data up to {end} past the final size {self.final_size}",
                                 field="STREAM.offset")
        if fin:
            if end < self.highest:
                raise FinalSizeError("final size below data already received",
                                     field="STREAM.offset")
            self.final_size = end

    def receive(self, offset: int, data: bytes, fin: bool = False) -> bytes:
        """Store a frame's data; return newly contiguous bytes (possibly empty)."""
        end = offset + len(data)
        if (offset == self.delivered and end <= self.limit and data and not fin
                and not self._buffer and not self._crypto and self.final_size is None):
            self.delivered = end  # in order, within the window, nothing held: the usual case
            self.highest = max(self.highest, end)
            return data
        self._check_limit(end)
        self._check_final(end, fin)
        self.highest = max(self.highest, end)
        if end <= self.delivered or not data or self.reset_code is not None:
            return b""
        if offset == self.delivered and not self._buffer:  # in order: the usual case
            self.delivered = end
            return data
        if offset < self.delivered:
            data, offset = data[self.delivered - offset :], self.delivered
        return self._store(offset, data)

    def _store(self, offset: int, data: bytes) -> bytes:
        """Out-of-order data: its new bytes into the buffer; the prefix it completes."""
        buffer, base, ranges = self._buffer, self.delivered, self._ranges
        first_low, first_high = ranges.first() if ranges else (0, 0)
        if offset == base and first_low <= offset + len(data) <= first_high:
            ranges.shift()  # it fills the first hole (a retransmission, usually): no copy in
            out = data[: first_low - base] + buffer[first_low - base : first_high - base]
            del buffer[: first_high - base]
            self.delivered, self.waiting = first_high, self.waiting - 1
            return out
        if offset - base >= len(buffer):  # past what is held: the usual case
            if offset - base > len(buffer):
                buffer += bytes(offset - base - len(buffer))
            buffer += data
        else:
            for low, high in ranges.missing(offset, offset + len(data)):
                buffer[low - base : high - base] = data[low - offset : high - offset]
        ranges.add(offset, offset + len(data))
        self.waiting = len(ranges)
        if self._crypto and self.waiting > MAX_CRYPTO_RANGES:
            raise CryptoBufferExceeded(f"more than {MAX_CRYPTO_RANGES} ranges wait beyond the "
                                       f"delivered prefix", field="CRYPTO.offset")
        if ranges.first()[0] != base:
            return b""
        _, high = ranges.shift()
        self.waiting -= 1
        out = bytes(buffer[: high - base])
        del buffer[: high - base]
        self.delivered = high
        return out

    @property
    def complete(self) -> bool:
        return self.final_size is not None and self.delivered == self.final_size

    def reset(self, final_size: int, code: int) -> None:
        if self.final_size is not None and final_size != self.final_size:
            raise FinalSizeError("RESET_STREAM changes the final size",
                                 field="RESET_STREAM.final_size")
        if final_size < self.highest:
            raise FinalSizeError("RESET_STREAM final size below data received",
                                 field="RESET_STREAM.final_size")
        self._check_limit(final_size)
        self.final_size = self.highest = final_size
        self.reset_code = code
        self._buffer, self._ranges, self.waiting = bytearray(), RangeSet(), 0  # not delivered


class StreamState:
    """One stream: a sending part, a receiving part (either may be absent for
    unidirectional streams), and their flow-control limits."""

    __slots__ = ("blocked_sent_at", "max_recv", "max_recv_sent", "max_send", "receiver",
                 "sender", "stream_id", "window")

    def __init__(self, stream_id: int, *, local: bool, is_client: bool, max_send: int,
                 window: int) -> None:
        self.stream_id = stream_id
        uni = is_unidirectional(stream_id)
        self.sender = SendBuffer() if not uni or local else None
        self.receiver = ReceiveBuffer(window) if not uni or not local else None
        self.max_send = max_send
        self.blocked_sent_at = -1  # the limit of the last STREAM_DATA_BLOCKED sent
        self.window = window
        self.max_recv = window
        self.max_recv_sent = window

    def require_sender(self, frame: str) -> SendBuffer:
        if self.sender is None:
            raise StreamStateError(f"{frame} for a receive-only stream", field=f"{frame}.stream_id")
        return self.sender

    def require_receiver(self, frame: str) -> ReceiveBuffer:
        if self.receiver is None:
            raise StreamStateError(f"{frame} for a send-only stream", field=f"{frame}.stream_id")
        return self.receiver

    def credit_due(self) -> bool:
        """Whether half the receive window has been consumed (MAX_STREAM_DATA is due)."""
        receiver = self.receiver
        return (receiver is not None and receiver.final_size is None
                and self.max_recv - receiver.delivered <= self.window // 2)

    def credit(self) -> int | None:
        """A new MAX_STREAM_DATA limit when half the window has been consumed."""
        if not self.credit_due():
            return None
        assert self.receiver is not None  # credit_due checked it
        self.max_recv = self.receiver.delivered + self.window
        self.receiver.limit = self.max_recv
        return self.max_recv

    @property
    def closed(self) -> bool:
        send_done = self.sender is None or self.sender.finished or (
            self.sender.reset_code is not None)
        receive_done = self.receiver is None or self.receiver.complete or (
            self.receiver.reset_code is not None)
        return send_done and receive_done


