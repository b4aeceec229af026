"""Field types the Velocity layers need beyond scapy's QUIC varint field."""

from __future__ import annotations

from typing import Any

from scapy.fields import Field, StrField
from scapy.layers.quic import QuicVarIntField
from scapy.packet import Packet

_PREFIX = {1: 0x00, 2: 0x40, 4: 0x80, 8: 0xC0}


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


class PacketNumberField(Field[int, int]):
    """The packet number, 1..4 bytes as given by the header's ``pn_length_bits`` field."""

    def __init__(self, name: str, default: int) -> None:
        super().__init__(name, default)

    def addfield(self, pkt: Packet, s: bytes, val: int | None) -> bytes:
        return s + int(val or 0).to_bytes(pkt.pn_length_bits + 1, "big")

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, int]:
        size = pkt.pn_length_bits + 1
        if len(s) < size:
            raise ValueError("packet number truncated")
        return s[size:], int.from_bytes(s[:size], "big")


class ZeroRunField(StrField):
    """The PADDING bytes that follow a PADDING frame's type byte, as one field."""

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, bytes]:
        run = len(s) - len(s.lstrip(b"\x00"))
        return s[run:], s[:run]


class TrailingTagField(StrField):
    """Everything but the last ``tag_size`` bytes (the Retry token before its tag)."""

    __slots__ = ("tag_size",)

    def __init__(self, name: str, default: bytes, tag_size: int) -> None:
        super().__init__(name, default)
        self.tag_size = tag_size

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, Any]:
        cut = max(len(s) - self.tag_size, 0)
        return s[cut:], s[:cut]
