"""Byte codecs shared by every wire structure: fixed-width integers, QUIC variable-length
integers (RFC 9000 section 16) and length-prefixed vectors, as ``pull_*`` / ``push_*`` pairs.

``Reader`` raises ``BufferReadError`` when a read runs past the end; the structure decoders
above it re-raise that as their own typed error naming the field.
"""

from __future__ import annotations

from velocity.core.errors import BufferReadError, UsageError

VARINT_MAX = (1 << 62) - 1
VARINT_MASKS = (0x3F, 0x3FFF, 0x3FFFFFFF, 0x3FFFFFFFFFFFFFFF)  # by the 2-bit length prefix
SINGLE_BYTES = tuple(bytes((value,)) for value in range(256))  # bytes([v]) without a call


def varint_size(value: int) -> int:
    """Bytes needed to encode ``value`` as a minimal varint."""
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x40000000:
        return 4
    if value <= VARINT_MAX:
        return 8
    raise UsageError(f"{value} does not fit a varint")


def encode_varint(value: int, size: int | None = None) -> bytes:
    """Encode ``value`` as a varint, minimal unless ``size`` (1, 2, 4 or 8) asks for more."""
    if size is None and value >= 0:  # the minimal encodings, written directly
        if value < 0x40:
            return SINGLE_BYTES[value]
        if value < 0x4000:
            return (value | 0x4000).to_bytes(2, "big")
        if value < 0x40000000:
            return (value | 0x80000000).to_bytes(4, "big")
        if value <= VARINT_MAX:
            return (value | 0xC000000000000000).to_bytes(8, "big")
    need = varint_size(value) if value >= 0 else 9
    size = need if size is None else size
    if size not in (1, 2, 4, 8) or size < need:
        raise UsageError(f"{value} cannot be encoded in {size} varint bytes")
    prefix = {1: 0, 2: 0x40, 4: 0x80, 8: 0xC0}[size]
    raw = value.to_bytes(size, "big")
    return bytes([raw[0] | prefix]) + raw[1:]


def varint_at(data: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``, reading no further than ``end``
    (the end of ``data`` by default), without a ``Reader``; raises ``BufferReadError`` when
    the bytes end first."""
    if end is None:
        end = len(data)
    if pos >= end:
        raise BufferReadError("varint needs 1 byte, 0 left")
    first = data[pos]
    kind = first >> 6
    if not kind:
        return first, pos + 1
    stop = pos + (1 << kind)
    if stop > end:
        raise BufferReadError(f"varint needs {1 << kind} bytes, {end - pos} left")
    return int.from_bytes(data[pos:stop], "big") & VARINT_MASKS[kind], stop


def minimal_varint_at(data: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    """``varint_at`` for a varint that must use its shortest encoding (frame, extension and
    transport parameter types)."""
    value, stop = varint_at(data, pos, end)
    if stop - pos != varint_size(value):
        raise BufferReadError(f"non-minimal varint encoding of {value}")
    return value, stop


class Reader:
    """Sequential reads from an immutable byte string."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    @property
    def position(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def eof(self) -> bool:
        return self._pos >= self._end

    def seek(self, position: int) -> None:
        if not 0 <= position <= self._end:
            raise BufferReadError(f"seek to {position} outside 0..{self._end}")
        self._pos = position

    def pull_bytes(self, length: int) -> bytes:
        pos = self._pos
        if length < 0 or pos + length > self._end:
            raise BufferReadError(f"needs {length} bytes, {self._end - pos} left")
        self._pos = pos + length
        return self._data[pos : pos + length]

    def pull_rest(self) -> bytes:
        data = self._data[self._pos : self._end]
        self._pos = self._end
        return data

    def pull_uint(self, size: int) -> int:
        return int.from_bytes(self.pull_bytes(size), "big")

    def pull_uint8(self) -> int:
        pos = self._pos
        if pos >= self._end:
            raise BufferReadError("needs 1 byte, 0 left")
        self._pos = pos + 1
        return self._data[pos]

    def pull_uint16(self) -> int:
        return self.pull_uint(2)

    def pull_uint24(self) -> int:
        return self.pull_uint(3)

    def pull_uint32(self) -> int:
        return self.pull_uint(4)

    def pull_varint(self) -> int:
        value, self._pos = varint_at(self._data, self._pos, self._end)
        return value

    def pull_varint_minimal(self) -> int:
        """A varint that must use its shortest encoding (frame types, extension types)."""
        value, self._pos = minimal_varint_at(self._data, self._pos, self._end)
        return value

    def pull_vec_varint(self) -> bytes:
        return self.pull_bytes(self.pull_varint())

    def pull_vec8(self) -> bytes:
        return self.pull_bytes(self.pull_uint8())

    def pull_vec16(self) -> bytes:
        return self.pull_bytes(self.pull_uint16())


class Writer:
    """Appends encodings to a growing byte array."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data = bytearray()

    def __len__(self) -> int:
        return len(self._data)

    def data(self) -> bytes:
        return bytes(self._data)

    def push_bytes(self, value: bytes) -> None:
        self._data += value

    def push_uint(self, value: int, size: int) -> None:
        if not 0 <= value < (1 << (8 * size)):
            raise UsageError(f"{value} does not fit {size} bytes")
        self._data += value.to_bytes(size, "big")

    def push_uint8(self, value: int) -> None:
        self.push_uint(value, 1)

    def push_uint16(self, value: int) -> None:
        self.push_uint(value, 2)

    def push_uint24(self, value: int) -> None:
        self.push_uint(value, 3)

    def push_uint32(self, value: int) -> None:
        self.push_uint(value, 4)

    def push_varint(self, value: int, size: int | None = None) -> None:
        if size is None and 0 <= value < 0x40:
            self._data.append(value)
        else:
            self._data += encode_varint(value, size)

    def push_vec_varint(self, value: bytes) -> None:
        self.push_varint(len(value))
        self._data += value

    def push_vec8(self, value: bytes) -> None:
        self.push_uint8(len(value))
        self._data += value

    def push_vec16(self, value: bytes) -> None:
        self.push_uint16(len(value))
        self._data += value
