"""Scapy layers for Velocity/1 packet headers (spec sections 2, 3 and 6): long headers
(Initial, 0-RTT, Handshake), the short header, Retry and Version Negotiation, unprotected.
The frames follow as payload bytes (see ``harness.layers.frames``)."""

from __future__ import annotations

from functools import cache
from typing import Any

from scapy.fields import (
    BitField,
    ConditionalField,
    FieldLenField,
    FieldListField,
    IntField,
    StrFixedLenField,
    StrLenField,
)
from scapy.packet import Packet, Raw

from harness.layers.fields import (
    PacketNumberField,
    SizedVarIntField,
    TrailingTagField,
    VarLenField,
)

VELOCITY_VERSION = 0x56553100


def _cids() -> list[Any]:
    return [
        FieldLenField("dcid_length", None, length_of="dcid", fmt="B"),
        StrLenField("dcid", b"", length_from=lambda p: p.dcid_length, max_length=255),
        FieldLenField("scid_length", None, length_of="scid", fmt="B"),
        StrLenField("scid", b"", length_from=lambda p: p.scid_length, max_length=255),
    ]


class VLongHeader(Packet):
    """Initial (type 0), 0-RTT (1) and Handshake (2). ``pn_length_bits`` is length - 1."""

    name = "Velocity long header"
    fields_desc = [
        BitField("form", 1, 1), BitField("fixed", 1, 1), BitField("packet_type", 0, 2),
        BitField("reserved", 0, 2), BitField("pn_length_bits", 0, 2),
        IntField("version", VELOCITY_VERSION),
        *_cids(),
        ConditionalField(VarLenField("token_length", None, length_of="token"),
                         lambda p: p.packet_type == 0),
        ConditionalField(StrLenField("token", b"", length_from=lambda p: p.token_length),
                         lambda p: p.packet_type == 0),
        SizedVarIntField("length", 0, 2),
        PacketNumberField("packet_number", 0),
    ]

    def guess_payload_class(self, payload: bytes) -> type:
        return Raw


@cache
def short_header_layer(dcid_length: int) -> type[Packet]:
    """The 1-RTT header layer for connection IDs of ``dcid_length`` bytes."""
    layer: type[Packet] = type(f"VShortHeader{dcid_length}", (Packet,), {
        "name": "Velocity short header",
        "fields_desc": [
            BitField("form", 0, 1), BitField("fixed", 1, 1), BitField("spin", 0, 1),
            BitField("reserved", 0, 2), BitField("key_phase", 0, 1),
            BitField("pn_length_bits", 0, 2),
            StrFixedLenField("dcid", b"\x00" * dcid_length, dcid_length),
            PacketNumberField("packet_number", 0),
        ],
    })
    return layer


class VRetry(Packet):
    name = "Velocity Retry"
    fields_desc = [
        BitField("form", 1, 1), BitField("fixed", 1, 1), BitField("packet_type", 3, 2),
        BitField("unused", 0, 4), IntField("version", VELOCITY_VERSION),
        *_cids(),
        TrailingTagField("token", b"", 16),
        StrFixedLenField("integrity_tag", b"\x00" * 16, 16),
    ]


class VVersionNegotiation(Packet):
    name = "Velocity Version Negotiation"
    fields_desc = [
        BitField("form", 1, 1), BitField("unused", 0, 7), IntField("version", 0),
        *_cids(),
        FieldListField("versions", [], IntField("", 0)),
    ]
