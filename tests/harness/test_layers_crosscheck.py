"""The scapy layers and the reference codec are two readings of the same wire format: on
every frame and packet type they must produce and accept the same bytes."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from scapy.packet import Packet

from harness.fuzz import strategies as st_v
from harness.layers import frames as layers
from harness.layers.packets import VLongHeader, VRetry, VVersionNegotiation, short_header_layer
from velocity.core import frames as f
from velocity.core.buffer import Writer
from velocity.core.packet import (
    LongHeader,
    RetryPacket,
    ShortHeader,
    VersionNegotiation,
    encode_retry,
    encode_version_negotiation,
    push_long_header,
    push_short_header,
)


def frame_layer(frame: f.Frame) -> Packet:
    layer = layers.LAYERS_BY_NAME[frame.NAME]
    if isinstance(frame, f.Padding):
        return layer(run=bytes(frame.length - 1))
    if isinstance(frame, f.Ack):
        ecn = dict(zip(("ect0", "ect1", "ce"), frame.ecn, strict=True)) if frame.ecn else {}
        return layer(type=0x03 if frame.ecn else 0x02, largest=frame.largest,
                     delay=frame.delay, first_range=frame.first_range,
                     ranges=[layers.VAckRange(gap=g, length=n) for g, n in frame.ranges], **ecn)
    if isinstance(frame, f.Stream):
        flags = (0x04 if frame.offset else 0) | (0x02 if frame.explicit_length else 0)
        return layer(type=0x08 | flags | frame.fin, stream_id=frame.stream_id,
                     offset=frame.offset, data=frame.data)
    return layer(**{fld.name: getattr(frame, fld.name) for fld in dataclasses.fields(frame)})


@pytest.mark.parametrize("cls", f.FRAME_CLASSES, ids=lambda c: c.NAME)
def test_frame_layers_agree_with_the_codec(cls: type[f.Frame]) -> None:
    @given(st_v.FRAME_STRATEGIES[cls])
    def check(frame: f.Frame) -> None:
        wire = f.encode_frames([frame])
        assert bytes(frame_layer(frame)) == wire
        (dissected,) = layers.dissect_frames(wire)
        assert bytes(dissected) == wire
        assert type(dissected).__name__ == frame.NAME

    check()


@given(st_v.long_headers())
def test_long_header_layer_agrees(header: LongHeader) -> None:
    writer = Writer()
    push_long_header(writer, header)
    layer = VLongHeader(packet_type=int(header.packet_type), pn_length_bits=header.pn_length - 1,
                        version=header.version, dcid=header.dcid, scid=header.scid,
                        token=header.token, length=header.length,
                        packet_number=header.packet_number)
    assert bytes(layer) == writer.data()
    parsed = VLongHeader(writer.data())
    assert (parsed.dcid, parsed.scid, parsed.length, parsed.packet_number) == (
        header.dcid, header.scid, header.length, header.packet_number)


@given(st_v.short_headers())
def test_short_header_layer_agrees(header: ShortHeader) -> None:
    writer = Writer()
    push_short_header(writer, header)
    layer = short_header_layer(len(header.dcid))(
        spin=int(header.spin), key_phase=int(header.key_phase),
        pn_length_bits=header.pn_length - 1, dcid=header.dcid,
        packet_number=header.packet_number)
    assert bytes(layer) == writer.data()


@given(st_v.retry_packets)
def test_retry_layer_agrees(packet: RetryPacket) -> None:
    wire = encode_retry(packet)
    layer = VRetry(unused=packet.unused_bits, version=packet.version, dcid=packet.dcid,
                   scid=packet.scid, token=packet.token, integrity_tag=packet.integrity_tag)
    assert bytes(layer) == wire
    assert VRetry(wire).token == packet.token


@given(st_v.version_negotiations)
def test_version_negotiation_layer_agrees(packet: VersionNegotiation) -> None:
    wire = encode_version_negotiation(packet)
    layer = VVersionNegotiation(unused=packet.unused_bits, dcid=packet.dcid, scid=packet.scid,
                                versions=list(packet.versions))
    assert bytes(layer) == wire
    assert VVersionNegotiation(wire).versions == list(packet.versions)
