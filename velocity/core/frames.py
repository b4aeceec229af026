"""Frames of Velocity/1 (spec "Frames", the QUIC v1 set of RFC 9000 section 19): one frozen
dataclass per frame, encoded and decoded through one table that also says which packet
types may carry each frame (RFC 9000 Table 3).

Decoding is strict: truncation, an unknown or non-minimally encoded type, a bad length or
an out-of-range value raises ``FrameEncodingError`` naming the field; a frame in a packet
type that may not carry it raises ``ProtocolViolation``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, cast

from velocity.core.buffer import VARINT_MASKS, VARINT_MAX, Reader, Writer
from velocity.core.errors import (
    BufferReadError,
    FrameEncodingError,
    ProtocolError,
    ProtocolViolation,
)
from velocity.core.packet import MAX_CID_LENGTH, PacketType

MAX_STREAMS_LIMIT = 1 << 60

_I, _Z, _H, _O = (PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE,
                  PacketType.ONE_RTT)
# RFC 9000 Table 3 columns: I(nitial) H(andshake) 0(-RTT) 1(-RTT)
SPACES_IH01 = frozenset({_I, _H, _Z, _O})
SPACES_IH_1 = frozenset({_I, _H, _O})
SPACES_01 = frozenset({_Z, _O})
SPACES_1 = frozenset({_O})


@dataclass(frozen=True, slots=True)
class Frame:
    """Base of all frames. ``TYPE`` is the (first) frame type; ``SPACES`` the packet types
    that may carry it."""

    TYPE: ClassVar[int]
    NAME: ClassVar[str]
    SPACES: ClassVar[frozenset[PacketType]]
    ACK_ELICITING: ClassVar[bool] = True

    def validate(self) -> None:
        """Raise ``FrameEncodingError`` naming the field if a value is out of range."""


@dataclass(frozen=True, slots=True)
class Padding(Frame):
    """A run of ``length`` PADDING bytes (decoded as one frame)."""

    TYPE = 0x00
    NAME = "PADDING"
    SPACES = SPACES_IH01
    ACK_ELICITING = False
    length: int = 1


@dataclass(frozen=True, slots=True)
class Ping(Frame):
    TYPE = 0x01
    NAME = "PING"
    SPACES = SPACES_IH01


@dataclass(frozen=True, slots=True)
class Ack(Frame):
    """ACK (0x02) or, with ``ecn`` counts (ECT0, ECT1, CE), ACK_ECN (0x03). ``ranges`` holds
    the (gap, length) pairs after the first range, as on the wire."""

    TYPE = 0x02
    NAME = "ACK"
    SPACES = SPACES_IH_1
    ACK_ELICITING = False
    largest: int
    delay: int
    first_range: int
    ranges: tuple[tuple[int, int], ...] = ()
    ecn: tuple[int, int, int] | None = None

    def validate(self) -> None:
        if self.first_range > self.largest:
            raise FrameEncodingError("first range reaches below packet 0",
                                     field="ACK.first_range", frame_type=self.TYPE)
        smallest = self.largest - self.first_range
        for index, (gap, length) in enumerate(self.ranges):
            smallest -= gap + 2 + length
            if smallest < 0:
                raise FrameEncodingError(f"range {index} reaches below packet 0",
                                         field="ACK.ranges", frame_type=self.TYPE)

    def packet_ranges(self) -> list[tuple[int, int]]:
        """Acknowledged packet numbers as inclusive (low, high) pairs, highest first."""
        high = self.largest
        low = high - self.first_range
        result = [(low, high)]
        for gap, length in self.ranges:
            high = low - gap - 2
            low = high - length
            result.append((low, high))
        return result

    @classmethod
    def from_packet_ranges(cls, ranges: list[tuple[int, int]], delay: int) -> Ack:
        """Build from inclusive (low, high) pairs sorted highest first, not overlapping."""
        (low, high), *rest = ranges
        pairs = []
        for next_low, next_high in rest:
            pairs.append((low - next_high - 2, next_high - next_low))
            low = next_low
        return cls(high, delay, high - ranges[0][0], tuple(pairs))


@dataclass(frozen=True, slots=True)
class ResetStream(Frame):
    TYPE = 0x04
    NAME = "RESET_STREAM"
    SPACES = SPACES_01
    stream_id: int
    error_code: int
    final_size: int


@dataclass(frozen=True, slots=True)
class StopSending(Frame):
    TYPE = 0x05
    NAME = "STOP_SENDING"
    SPACES = SPACES_01
    stream_id: int
    error_code: int


def _check_end(name: str, offset: int, data: bytes, frame_type: int) -> None:
    if offset + len(data) > VARINT_MAX:
        raise FrameEncodingError("offset + length exceeds 2^62-1", field=f"{name}.offset",
                                 frame_type=frame_type)


@dataclass(frozen=True, slots=True)
class Crypto(Frame):
    TYPE = 0x06
    NAME = "CRYPTO"
    SPACES = SPACES_IH_1
    offset: int
    data: bytes

    def validate(self) -> None:
        _check_end("CRYPTO", self.offset, self.data, self.TYPE)


@dataclass(frozen=True, slots=True)
class NewToken(Frame):
    TYPE = 0x07
    NAME = "NEW_TOKEN"
    SPACES = SPACES_1
    token: bytes

    def validate(self) -> None:
        if not self.token:
            raise FrameEncodingError("empty token", field="NEW_TOKEN.token",
                                     frame_type=self.TYPE)


@dataclass(frozen=True, slots=True)
class Stream(Frame):
    """STREAM (0x08-0x0f). The OFF bit is sent when ``offset`` > 0; without
    ``explicit_length`` the data runs to the end of the packet."""

    TYPE = 0x08
    NAME = "STREAM"
    SPACES = SPACES_01
    stream_id: int
    data: bytes
    offset: int = 0
    fin: bool = False
    explicit_length: bool = True

    def validate(self) -> None:
        _check_end("STREAM", self.offset, self.data, self.TYPE)


@dataclass(frozen=True, slots=True)
class MaxData(Frame):
    TYPE = 0x10
    NAME = "MAX_DATA"
    SPACES = SPACES_01
    maximum: int


@dataclass(frozen=True, slots=True)
class MaxStreamData(Frame):
    TYPE = 0x11
    NAME = "MAX_STREAM_DATA"
    SPACES = SPACES_01
    stream_id: int
    maximum: int


def _check_stream_count(name: str, value: int, frame_type: int) -> None:
    if value > MAX_STREAMS_LIMIT:
        raise FrameEncodingError("exceeds 2^60", field=name, frame_type=frame_type)


@dataclass(frozen=True, slots=True)
class MaxStreamsBidi(Frame):
    TYPE = 0x12
    NAME = "MAX_STREAMS_BIDI"
    SPACES = SPACES_01
    maximum: int

    def validate(self) -> None:
        _check_stream_count("MAX_STREAMS.maximum", self.maximum, self.TYPE)


@dataclass(frozen=True, slots=True)
class MaxStreamsUni(Frame):
    TYPE = 0x13
    NAME = "MAX_STREAMS_UNI"
    SPACES = SPACES_01
    maximum: int

    def validate(self) -> None:
        _check_stream_count("MAX_STREAMS.maximum", self.maximum, self.TYPE)


@dataclass(frozen=True, slots=True)
class DataBlocked(Frame):
    TYPE = 0x14
    NAME = "DATA_BLOCKED"
    SPACES = SPACES_01
    limit: int


@dataclass(frozen=True, slots=True)
class StreamDataBlocked(Frame):
    TYPE = 0x15
    NAME = "STREAM_DATA_BLOCKED"
    SPACES = SPACES_01
    stream_id: int
    limit: int


@dataclass(frozen=True, slots=True)
class StreamsBlockedBidi(Frame):
    TYPE = 0x16
    NAME = "STREAMS_BLOCKED_BIDI"
    SPACES = SPACES_01
    limit: int

    def validate(self) -> None:
        _check_stream_count("STREAMS_BLOCKED.limit", self.limit, self.TYPE)


@dataclass(frozen=True, slots=True)
class StreamsBlockedUni(Frame):
    TYPE = 0x17
    NAME = "STREAMS_BLOCKED_UNI"
    SPACES = SPACES_01
    limit: int

    def validate(self) -> None:
        _check_stream_count("STREAMS_BLOCKED.limit", self.limit, self.TYPE)


@dataclass(frozen=True, slots=True)
class NewConnectionId(Frame):
    TYPE = 0x18
    NAME = "NEW_CONNECTION_ID"
    SPACES = SPACES_01
    sequence: int
    retire_prior_to: int
    connection_id: bytes
    stateless_reset_token: bytes

    def validate(self) -> None:
        if not 1 <= len(self.connection_id) <= MAX_CID_LENGTH:
            raise FrameEncodingError(f"length {len(self.connection_id)} outside 1..20",
                                     field="NEW_CONNECTION_ID.connection_id",
                                     frame_type=self.TYPE)
        if self.retire_prior_to > self.sequence:
            raise FrameEncodingError("greater than the sequence number",
                                     field="NEW_CONNECTION_ID.retire_prior_to",
                                     frame_type=self.TYPE)


@dataclass(frozen=True, slots=True)
class RetireConnectionId(Frame):
    TYPE = 0x19
    NAME = "RETIRE_CONNECTION_ID"
    SPACES = SPACES_01
    sequence: int


@dataclass(frozen=True, slots=True)
class PathChallenge(Frame):
    TYPE = 0x1A
    NAME = "PATH_CHALLENGE"
    SPACES = SPACES_01
    data: bytes


@dataclass(frozen=True, slots=True)
class PathResponse(Frame):
    TYPE = 0x1B
    NAME = "PATH_RESPONSE"
    SPACES = SPACES_1
    data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClose(Frame):
    """CONNECTION_CLOSE for transport and handshake errors (0x1c)."""

    TYPE = 0x1C
    NAME = "CONNECTION_CLOSE"
    SPACES = SPACES_IH01
    ACK_ELICITING = False
    error_code: int
    frame_type: int
    reason: bytes = b""


@dataclass(frozen=True, slots=True)
class ApplicationClose(Frame):
    """CONNECTION_CLOSE for application errors (0x1d)."""

    TYPE = 0x1D
    NAME = "APPLICATION_CLOSE"
    SPACES = SPACES_01
    ACK_ELICITING = False
    error_code: int
    reason: bytes = b""


@dataclass(frozen=True, slots=True)
class HandshakeDone(Frame):
    TYPE = 0x1E
    NAME = "HANDSHAKE_DONE"
    SPACES = SPACES_1


# --- field codecs: (pull, push) pairs used by the generic table-driven codec -------------

Pull = Callable[[Reader], Any]
Push = Callable[[Writer, Any], None]


def _fixed(size: int) -> tuple[Pull, Push]:
    def pull(reader: Reader) -> bytes:
        return reader.pull_bytes(size)

    def push(writer: Writer, value: bytes) -> None:
        if len(value) != size:
            raise FrameEncodingError(f"must be {size} bytes, not {len(value)}")
        writer.push_bytes(value)

    return pull, push


_VARINT: tuple[Pull, Push] = (Reader.pull_varint, Writer.push_varint)
_VEC: tuple[Pull, Push] = (Reader.pull_vec_varint, Writer.push_vec_varint)
_VEC8: tuple[Pull, Push] = (Reader.pull_vec8, Writer.push_vec8)
_BYTES8 = _fixed(8)
_BYTES16 = _fixed(16)

_LAYOUTS: dict[type[Frame], tuple[tuple[Pull, Push], ...]] = {
    Ping: (),
    ResetStream: (_VARINT, _VARINT, _VARINT),
    StopSending: (_VARINT, _VARINT),
    Crypto: (_VARINT, _VEC),
    NewToken: (_VEC,),
    MaxData: (_VARINT,),
    MaxStreamData: (_VARINT, _VARINT),
    MaxStreamsBidi: (_VARINT,),
    MaxStreamsUni: (_VARINT,),
    DataBlocked: (_VARINT,),
    StreamDataBlocked: (_VARINT, _VARINT),
    StreamsBlockedBidi: (_VARINT,),
    StreamsBlockedUni: (_VARINT,),
    NewConnectionId: (_VARINT, _VARINT, _VEC8, _BYTES16),
    RetireConnectionId: (_VARINT,),
    PathChallenge: (_BYTES8,),
    PathResponse: (_BYTES8,),
    ConnectionClose: (_VARINT, _VARINT, _VEC),
    ApplicationClose: (_VARINT, _VEC),
    HandshakeDone: (),
}

_FIELD_NAMES: dict[type[Frame], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _LAYOUTS
}


class _Cursor:
    """Tracks which field is being read so a short read names it."""

    __slots__ = ("field",)

    def __init__(self, field: str) -> None:
        self.field = field


def _decode_generic(cls: type[Frame], reader: Reader, cursor: _Cursor, frame_type: int) -> Frame:
    values = []
    for name, (pull, _) in zip(_FIELD_NAMES[cls], _LAYOUTS[cls], strict=True):
        cursor.field = f"{cls.NAME}.{name}"
        values.append(pull(reader))
    return cls(*values)


def _encode_generic(writer: Writer, frame: Frame) -> None:
    cls = type(frame)
    writer.push_varint(cls.TYPE)
    for name, (_, push) in zip(_FIELD_NAMES[cls], _LAYOUTS[cls], strict=True):
        push(writer, getattr(frame, name))


def _decode_ack(cls: type[Frame], reader: Reader, cursor: _Cursor, frame_type: int) -> Frame:
    cursor.field = "ACK.largest"
    largest = reader.pull_varint()
    cursor.field = "ACK.delay"
    delay = reader.pull_varint()
    cursor.field = "ACK.range_count"
    count = reader.pull_varint()
    cursor.field = "ACK.first_range"
    first_range = reader.pull_varint()
    if count > reader.remaining // 2:
        raise FrameEncodingError(f"{count} ranges cannot fit in {reader.remaining} bytes",
                                 field="ACK.range_count", frame_type=frame_type)
    cursor.field = "ACK.ranges"
    ranges = tuple((reader.pull_varint(), reader.pull_varint()) for _ in range(count))
    ecn = None
    if frame_type == 0x03:
        cursor.field = "ACK.ecn"
        ecn = (reader.pull_varint(), reader.pull_varint(), reader.pull_varint())
    return Ack(largest, delay, first_range, ranges, ecn)


def _encode_ack(writer: Writer, frame: Frame) -> None:
    frame = cast(Ack, frame)
    writer.push_varint(0x03 if frame.ecn is not None else 0x02)
    writer.push_varint(frame.largest)
    writer.push_varint(frame.delay)
    writer.push_varint(len(frame.ranges))
    writer.push_varint(frame.first_range)
    for gap, length in frame.ranges:
        writer.push_varint(gap)
        writer.push_varint(length)
    if frame.ecn is not None:
        for count in frame.ecn:
            writer.push_varint(count)


def _decode_stream(cls: type[Frame], reader: Reader, cursor: _Cursor, frame_type: int) -> Frame:
    cursor.field = "STREAM.stream_id"
    stream_id = reader.pull_varint()
    offset = 0
    if frame_type & 0x04:
        cursor.field = "STREAM.offset"
        offset = reader.pull_varint()
    cursor.field = "STREAM.data"
    explicit_length = bool(frame_type & 0x02)
    data = reader.pull_vec_varint() if explicit_length else reader.pull_rest()
    return Stream(stream_id, data, offset, bool(frame_type & 0x01), explicit_length)


def _encode_stream(writer: Writer, frame: Frame) -> None:
    frame = cast(Stream, frame)
    flags = (0x04 if frame.offset else 0) | (0x02 if frame.explicit_length else 0) | frame.fin
    writer.push_varint(0x08 | flags)
    writer.push_varint(frame.stream_id)
    if frame.offset:
        writer.push_varint(frame.offset)
    if frame.explicit_length:
        writer.push_vec_varint(frame.data)
    else:
        writer.push_bytes(frame.data)


def _decode_padding(cls: type[Frame], reader: Reader, cursor: _Cursor, frame_type: int) -> Frame:
    start = reader.position - 1
    rest = reader.pull_rest()
    zeros = len(rest) - len(rest.lstrip(b"\x00"))
    reader.seek(start + 1 + zeros)
    return Padding(zeros + 1)


def _encode_padding(writer: Writer, frame: Frame) -> None:
    frame = cast(Padding, frame)
    writer.push_bytes(bytes(frame.length))


Decoder = Callable[[type[Frame], Reader, _Cursor, int], Frame]
Encoder = Callable[[Writer, Frame], None]


@dataclass(frozen=True, slots=True)
class FrameCodec:
    cls: type[Frame]
    decode: Decoder
    encode: Encoder


FRAME_TABLE: dict[int, FrameCodec] = {}
for _cls in _LAYOUTS:
    FRAME_TABLE[_cls.TYPE] = FrameCodec(_cls, _decode_generic, _encode_generic)
FRAME_TABLE[0x00] = FrameCodec(Padding, _decode_padding, _encode_padding)
for _t in (0x02, 0x03):
    FRAME_TABLE[_t] = FrameCodec(Ack, _decode_ack, _encode_ack)
for _t in range(0x08, 0x10):
    FRAME_TABLE[_t] = FrameCodec(Stream, _decode_stream, _encode_stream)

_ENCODERS: dict[type[Frame], Encoder] = {codec.cls: codec.encode for codec in
                                         FRAME_TABLE.values()}
FRAME_CLASSES: tuple[type[Frame], ...] = tuple(_ENCODERS)


def push_frame(writer: Writer, frame: Frame) -> None:
    _ENCODERS[type(frame)](writer, frame)


def encode_frames(frames: list[Frame] | tuple[Frame, ...]) -> bytes:
    writer = Writer()
    for frame in frames:
        _ENCODERS[type(frame)](writer, frame)
    return writer.data()


def pull_frame(reader: Reader, packet_type: PacketType | None) -> Frame:
    """Decode one frame and check that ``packet_type`` may carry it (None: any)."""
    cursor = _Cursor("frame_type")
    try:
        frame_type = reader.pull_varint_minimal()
        codec = FRAME_TABLE.get(frame_type)
        if codec is None:
            raise FrameEncodingError(f"unknown frame type 0x{frame_type:x}", field="frame_type",
                                     frame_type=frame_type)
        if packet_type is not None and packet_type not in codec.cls.SPACES:
            raise ProtocolViolation(f"{codec.cls.NAME} is not allowed in {packet_type.name}",
                                    field="frame_type", frame_type=frame_type)
        frame = codec.decode(codec.cls, reader, cursor, frame_type)
        frame.validate()
    except BufferReadError as exc:
        raise FrameEncodingError(f"truncated ({exc.reason})", field=cursor.field) from None
    except ProtocolError:
        raise
    except Exception as exc:  # a decoded value the dataclass rejects: still a wire error
        raise FrameEncodingError(str(exc), field=cursor.field) from None
    return frame


def stream_frame_at(payload: bytes, pos: int) -> tuple[int, int, bytes, bool, int] | None:
    """(stream id, offset, data, fin, end) of a well-formed STREAM frame at ``pos``; None for
    anything else (``pull_frame`` then decodes it, or names what is wrong). The common
    payload of a 1-RTT packet, read without a Reader or a frame object."""
    size = len(payload)
    if pos >= size or payload[pos] & 0xF8 != 0x08:
        return None
    frame_type = payload[pos]
    try:  # three varints, read in line (an IndexError or a short slice: not this path)
        kind = payload[pos + 1] >> 6
        step = 1 << kind
        stream_id = int.from_bytes(payload[pos + 1 : pos + 1 + step], "big") & VARINT_MASKS[kind]
        pos += 1 + step
        offset = 0
        if frame_type & 0x04:
            kind = payload[pos] >> 6
            step = 1 << kind
            offset = int.from_bytes(payload[pos : pos + step], "big") & VARINT_MASKS[kind]
            pos += step
        if frame_type & 0x02:
            kind = payload[pos] >> 6
            step = 1 << kind
            length = int.from_bytes(payload[pos : pos + step], "big") & VARINT_MASKS[kind]
            pos += step
        else:
            length = size - pos
    except IndexError:
        return None
    end = pos + length
    if end > size or pos > size or offset + length > VARINT_MAX:
        return None
    return stream_id, offset, payload[pos:end], bool(frame_type & 0x01), end


def decode_frames(payload: bytes, packet_type: PacketType, start: int = 0, *,
                  check_space: bool = True) -> list[Frame]:
    """Decode a packet payload from ``start``. A payload without frames is a
    PROTOCOL_VIOLATION; so is a frame ``packet_type`` may not carry, unless
    ``check_space`` is off (what a sender's transcript shows of a packet a seam built)."""
    if not payload:
        raise ProtocolViolation("packet carries no frames", field="payload")
    frames: list[Frame] = []
    if packet_type in SPACES_01 and (fast := stream_frame_at(payload, start)) is not None:
        explicit_length = bool(payload[start] & 0x02)
        stream_id, offset, data, fin, start = fast
        frames.append(Stream(stream_id, data, offset, fin, explicit_length))
    reader = Reader(payload, start)
    checked = packet_type if check_space else None
    while not reader.eof():
        frames.append(pull_frame(reader, checked))
    return frames
