"""Packet headers: packet-number arithmetic (RFC 9000 Appendix A) and strict parsing that
names the field at fault."""

from __future__ import annotations

import pytest

from velocity.core.buffer import Reader, Writer, encode_varint, varint_size
from velocity.core.errors import BufferReadError, PacketDropped, ProtocolViolation, UsageError
from velocity.core.packet import (
    VELOCITY_VERSION,
    LongHeader,
    PacketType,
    decode_packet_number,
    decode_retry,
    decode_version_negotiation,
    packet_number_length,
    parse_header,
    pull_long_header,
    push_long_header,
)


@pytest.mark.spec("VEL-PKT-007")
def test_rfc9000_a2_packet_number_encoding_examples() -> None:
    assert packet_number_length(0xAC5C02, 0xABE8B3) == 2
    assert packet_number_length(0xACE8FE, 0xABE8B3) == 3
    assert packet_number_length(0, None) == 1


@pytest.mark.spec("VEL-PKT-007")
def test_rfc9000_a3_packet_number_decoding_example() -> None:
    assert decode_packet_number(0x9B32, 2, 0xA82F30EA + 1) == 0xA82F9B32


@pytest.mark.spec("VEL-PKT-007")
@pytest.mark.parametrize("largest", [0, 255, 65535, 1 << 30])
def test_packet_numbers_recover_within_the_window(largest: int) -> None:
    for pn in range(largest + 1, largest + 300):
        size = packet_number_length(pn, largest)
        truncated = pn & ((1 << (8 * size)) - 1)
        assert decode_packet_number(truncated, size, largest + 1) == pn


@pytest.mark.spec("VEL-VAR-001", "VEL-VAR-002", "VEL-VAR-003", "VEL-VAR-004", "VEL-VAR-006")
def test_varint_encoding_sizes_and_limits() -> None:
    writer = Writer()
    writer.push_uint16(0x0102)
    writer.push_uint24(0x030405)
    writer.push_vec_varint(b"abc")
    writer.push_vec8(b"de")
    assert writer.data().hex() == "01020304050361626302" + "6465"
    reader = Reader(writer.data())
    assert (reader.pull_uint16(), reader.pull_uint24(), reader.pull_vec_varint(),
            reader.pull_vec8()) == (0x0102, 0x030405, b"abc", b"de")
    assert encode_varint(37, 2).hex() == "4025"
    assert varint_size((1 << 62) - 1) == 8
    with pytest.raises(UsageError):
        encode_varint(1 << 62)
    with pytest.raises(UsageError):
        encode_varint(300, 1)
    with pytest.raises(BufferReadError):
        Reader(bytes.fromhex("4025")).pull_varint_minimal()


def _initial(dcid: bytes = b"\x01" * 8, length: int = 40) -> bytes:
    writer = Writer()
    push_long_header(writer, LongHeader(PacketType.INITIAL, VELOCITY_VERSION, dcid, b"",
                                        0, 1, length))
    return writer.data() + bytes(length - 1)


@pytest.mark.spec("VEL-PKT-001", "VEL-VAR-005")
@pytest.mark.parametrize(("cut", "field"), [(0, "first_byte"), (3, "long.version"),
                                            (5, "long.dcid"), (9, "long.dcid"),
                                            (14, "long.scid"), (15, "initial.token"),
                                            (16, "long.length"), (17, "long.length")])
def test_truncated_long_header_names_the_field(cut: int, field: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        parse_header(_initial()[:cut], short_dcid_length=8)
    assert info.value.field == field


@pytest.mark.spec("VEL-PKT-002", "VEL-PKT-005")
def test_long_header_rejects_oversized_cids_and_lengths() -> None:
    with pytest.raises(ProtocolViolation) as info:
        parse_header(_initial(dcid=b"\x01" * 21), short_dcid_length=8)
    assert info.value.field == "long.dcid"
    with pytest.raises(ProtocolViolation) as info:
        parse_header(_initial()[:-1], short_dcid_length=8)
    assert info.value.field == "long.length"
    with pytest.raises(ProtocolViolation) as info:
        parse_header(_initial(length=19), short_dcid_length=8)
    assert info.value.field == "long.length"


@pytest.mark.spec("VEL-PKT-002")
def test_unknown_versions_are_parsed_only_to_the_invariants() -> None:
    packet = bytearray(_initial(dcid=b"\x02" * 40))
    packet[1:5] = (0x1A2A3A4A).to_bytes(4, "big")
    header = parse_header(bytes(packet), short_dcid_length=8)
    assert header.version == 0x1A2A3A4A
    assert header.dcid == b"\x02" * 40


@pytest.mark.spec("VEL-PKT-002")
def test_an_unknown_version_has_no_long_header_to_pull() -> None:
    """Found by the guided fuzzer: a foreign version's bytes after the SCID were read as a
    Velocity/1 packet number (no Length field), a header that did not re-encode to itself."""
    packet = bytes.fromhex("d1565531c000000008007a")  # the input it found
    assert parse_header(packet, short_dcid_length=8).version == 0x565531C0
    with pytest.raises(ProtocolViolation) as info:
        pull_long_header(packet)
    assert info.value.field == "long.version"


@pytest.mark.spec("VEL-PKT-003", "VEL-PKT-004")
def test_fixed_bit_zero_is_dropped_and_reserved_bits_are_violations() -> None:
    packet = bytearray(_initial())
    packet[0] &= ~0x40
    with pytest.raises(PacketDropped):
        parse_header(bytes(packet), short_dcid_length=8)
    packet = bytearray(_initial())
    packet[0] |= 0x0C
    with pytest.raises(ProtocolViolation) as info:
        pull_long_header(bytes(packet))
    assert info.value.field == "first_byte"


@pytest.mark.spec("VEL-PKT-006")
def test_coalesced_packets_are_delimited_by_length() -> None:
    first, second = _initial(), _initial(length=60)
    header = parse_header(first + second, short_dcid_length=8)
    assert header.end == len(first)
    assert parse_header(first + second, header.end, short_dcid_length=8).end == len(
        first + second)


@pytest.mark.spec("VEL-VN-003")
def test_version_negotiation_needs_a_whole_version_list() -> None:
    base = bytes.fromhex("80") + bytes(4) + b"\x00\x00"
    with pytest.raises(ProtocolViolation) as info:
        decode_version_negotiation(base)
    assert info.value.field == "version_negotiation.versions"
    with pytest.raises(ProtocolViolation):
        decode_version_negotiation(base + b"\x00\x00\x00")
    assert decode_version_negotiation(base + bytes.fromhex("56553100")).versions == (
        VELOCITY_VERSION,)


@pytest.mark.spec("VEL-RTY-002")
def test_retry_needs_a_token_and_a_tag() -> None:
    base = bytes.fromhex("f0") + VELOCITY_VERSION.to_bytes(4, "big") + b"\x00\x00"
    with pytest.raises(ProtocolViolation) as info:
        decode_retry(base + bytes(16))
    assert info.value.field == "retry.token"
