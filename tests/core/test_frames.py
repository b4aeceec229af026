"""Frame decoding names the field at fault, on recorded bytes (the frame vectors)."""

from __future__ import annotations

import json

import pytest

from harness.vectors import VECTORS_DIR
from harness.vectors.check import frame_from_fields
from velocity.core import frames as f
from velocity.core.errors import FrameEncodingError, ProtocolViolation
from velocity.core.packet import PacketType

VECTORS = json.loads((VECTORS_DIR / "frames.json").read_text())["vectors"]
FIXED_SIZE = [v for v in VECTORS if v["frame"] != "PADDING" and not (
    v["frame"] == "STREAM" and not v["fields"]["explicit_length"])]


@pytest.mark.spec("VEL-FRM-005", "VEL-VAR-005")
@pytest.mark.parametrize("vector", FIXED_SIZE, ids=lambda v: v["frame"])
def test_every_truncation_names_a_field_of_the_frame(vector: dict[str, object]) -> None:
    """Pull each recorded frame apart byte by byte: each strict prefix must fail with
    FRAME_ENCODING_ERROR naming a field of that frame (VEL-FRM-005)."""
    raw = bytes.fromhex(str(vector["hex"]))
    name = str(vector["frame"])
    for cut in range(1, len(raw)):
        with pytest.raises(FrameEncodingError) as info:
            f.decode_frames(raw[:cut], PacketType.ONE_RTT)
        assert info.value.field is not None
        assert info.value.field.split(".")[0] in (name, name.rsplit("_", 1)[0])


def test_record_round_trip_covers_every_frame_class() -> None:
    assert {frame_from_fields(v["frame"], v["fields"]).NAME for v in VECTORS} == {
        cls.NAME for cls in f.FRAME_CLASSES}


@pytest.mark.spec("VEL-FRM-004")
@pytest.mark.parametrize("cls", f.FRAME_CLASSES, ids=lambda c: c.NAME)
def test_space_rules_follow_rfc9000_table3(cls: type[f.Frame]) -> None:
    """Every frame is refused with PROTOCOL_VIOLATION in every packet type Table 3 forbids."""
    example = next(frame_from_fields(v["frame"], v["fields"]) for v in VECTORS
                   if v["frame"] == cls.NAME)
    wire = f.encode_frames([example])
    for space in (PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE,
                  PacketType.ONE_RTT):
        if space in cls.SPACES:
            assert f.decode_frames(wire, space) == [example]
        else:
            with pytest.raises(ProtocolViolation) as info:
                f.decode_frames(wire, space)
            assert info.value.frame_type == wire[0]


@pytest.mark.spec("VEL-FRM-004")
def test_table3_allowed_spaces() -> None:
    i, z, h, o = (PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE,
                  PacketType.ONE_RTT)
    assert f.Padding.SPACES == f.Ping.SPACES == f.ConnectionClose.SPACES == {i, z, h, o}
    assert f.Ack.SPACES == f.Crypto.SPACES == {i, h, o}
    assert f.NewToken.SPACES == f.PathResponse.SPACES == f.HandshakeDone.SPACES == {o}
    assert f.Stream.SPACES == f.ApplicationClose.SPACES == f.RetireConnectionId.SPACES == {z, o}


@pytest.mark.spec("VEL-FRM-014")
def test_padding_runs_decode_as_one_frame() -> None:
    assert f.decode_frames(b"\x01" + bytes(1000), PacketType.INITIAL) == [f.Ping(),
                                                                         f.Padding(1000)]


@pytest.mark.spec("VEL-FRM-001")
def test_ack_packet_ranges_round_trip() -> None:
    ranges = [(90, 100), (50, 80), (0, 10)]
    ack = f.Ack.from_packet_ranges(ranges, delay=7)
    assert ack.packet_ranges() == ranges
    assert f.decode_frames(f.encode_frames([ack]), PacketType.HANDSHAKE) == [ack]


@pytest.mark.spec("VEL-FRM-005")
def test_ack_range_count_beyond_payload_is_refused_without_looping() -> None:
    wire = bytes.fromhex("0205") + b"\x00" + bytes.fromhex("bfffffff") + b"\x00"
    with pytest.raises(FrameEncodingError) as info:
        f.decode_frames(wire, PacketType.ONE_RTT)
    assert info.value.field == "ACK.range_count"


def test_every_truncation_of_a_stream_frame_is_refused() -> None:
    """The fast STREAM reader hands every cut it cannot read whole to the general decoder,
    which names the field; it never returns a frame from a short varint."""
    for frame_type_bits in range(8):
        frame = f.Stream(0x3FFF, b"data", 0x12345 if frame_type_bits & 4 else 0,
                         bool(frame_type_bits & 1), bool(frame_type_bits & 2))
        wire = f.encode_frames([frame])
        assert f.stream_frame_at(wire, 0) == (0x3FFF, frame.offset, b"data", frame.fin,
                                              len(wire))
        for cut in range(1, len(wire)):
            found = f.stream_frame_at(wire[:cut], 0)
            if not frame.explicit_length and found is not None:  # data runs to the end
                assert found[2] == b"data"[: len(found[2])] and found[4] == cut
                assert cut >= len(wire) - len(b"data")
            else:
                assert found is None, (frame, cut, found)
