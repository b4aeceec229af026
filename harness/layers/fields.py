"""Field types the Velocity layers need beyond scapy's QUIC varint field, each with a
``randval`` that covers its whole range, so scapy's ``fuzz()`` reaches every encoding: a
varint of any of its four sizes (scapy's own QUIC field draws 16-bit values), a packet
number of the header's length, a PADDING run, a Retry token."""

from __future__ import annotations

import random
from typing import Any

from scapy.fields import Field, StrField
from scapy.layers.quic import QuicVarIntField, QuicVarLenField
from scapy.packet import Packet
from scapy.volatile import RandBin, RandNum, VolatileValue

_PREFIX = {1: 0x00, 2: 0x40, 4: 0x80, 8: 0xC0}
VARINT_BITS = {1: 6, 2: 14, 4: 30, 8: 62}  # value bits of a varint encoded in N bytes


class RandVarInt(VolatileValue[int]):
    """A varint value: an encoding size first (1, 2, 4 or 8 bytes, equally likely), then a
    value that needs that size (each size's smallest and largest values included), so the
    short and the long encodings are drawn as often as each other."""

    def __init__(self, sizes: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        self.sizes = sizes

    def _fix(self) -> int:
        size = random.choice(self.sizes)
        low = 0 if size == 1 else 1 << VARINT_BITS[size // 2]
        high = (1 << VARINT_BITS[size]) - 1
        edge = random.randrange(4)
        return low if edge == 0 else high if edge == 1 else random.randint(low, high)


class VarIntField(QuicVarIntField):
    """A QUIC varint (0 to 2^62 - 1)."""

    def randval(self) -> VolatileValue[int]:
        return RandVarInt()


class VarLenField(QuicVarLenField):
    """A varint that counts another field (computed unless set): fuzzed over the whole
    varint range when a case mutates lengths."""

    def randval(self) -> VolatileValue[int]:
        return RandVarInt()


class SizedVarIntField(QuicVarIntField):
    """A varint always written in ``size`` bytes (the Length field of long headers)."""

    __slots__ = ("size",)

    def __init__(self, name: str, default: int, size: int) -> None:
        super().__init__(name, default)
        self.size = size

    def addfield(self, pkt: Packet, s: bytes, val: int | None) -> bytes:
        value = self.i2m(pkt, val)
        raw = value.to_bytes(self.size, "big")
        return s + bytes([raw[0] | _PREFIX[self.size]]) + raw[1:]

    def randval(self) -> VolatileValue[int]:
        return RandNum(0, (1 << VARINT_BITS[self.size]) - 1)


class PacketNumberField(Field[int, int]):
    """The packet number, 1..4 bytes as given by the header's ``pn_length_bits`` field."""

    def __init__(self, name: str, default: int) -> None:
        super().__init__(name, default)

    def addfield(self, pkt: Packet, s: bytes, val: int | None) -> bytes:
        return s + self.i2m(pkt, val).to_bytes(pkt.pn_length_bits + 1, "big")

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, int]:
        size = pkt.pn_length_bits + 1
        if len(s) < size:
            raise ValueError("packet number truncated")
        return s[size:], int.from_bytes(s[:size], "big")

    def randval(self) -> VolatileValue[int]:
        return RandNum(0, (1 << 32) - 1)  # written in the header's 1..4 bytes

    def i2m(self, pkt: Packet | None, x: int | None) -> int:
        size = pkt.pn_length_bits + 1 if pkt is not None else 4
        return int(x or 0) % (1 << (8 * size))


class ZeroRunField(StrField):
    """The PADDING bytes that follow a PADDING frame's type byte, as one field."""

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, bytes]:
        run = len(s) - len(s.lstrip(b"\x00"))
        return s[run:], s[:run]

    def randval(self) -> Any:
        return RandZeros()


class RandZeros(VolatileValue[bytes]):
    """A PADDING run: 0 to 1499 zero bytes."""

    def _fix(self) -> bytes:
        return bytes(random.randrange(1500))


class TrailingTagField(StrField):
    """Everything but the last ``tag_size`` bytes (the Retry token before its tag)."""

    __slots__ = ("tag_size",)

    def __init__(self, name: str, default: bytes, tag_size: int) -> None:
        super().__init__(name, default)
        self.tag_size = tag_size

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, Any]:
        cut = max(len(s) - self.tag_size, 0)
        return s[cut:], s[:cut]

    def randval(self) -> Any:
        return RandBin(RandNum(0, 1200))
