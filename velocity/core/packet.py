"""Packet headers of Velocity/1 (spec "Packets"): long and short headers, Version Negotiation,
Retry, and packet-number encoding. Headers here are the unprotected form; header protection
and payload AEAD live in ``protection``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from velocity.core.buffer import Reader, Writer
from velocity.core.errors import BufferReadError, PacketDropped, ProtocolViolation, UsageError

VELOCITY_VERSION = 0x56553100
MAX_CID_LENGTH = 20
RETRY_TAG_LENGTH = 16
MIN_INITIAL_DATAGRAM = 1200

FORM_LONG = 0x80
FIXED_BIT = 0x40


class PacketType(IntEnum):
    """Packet types; the first four are the long-header type bits."""

    INITIAL = 0
    ZERO_RTT = 1
    HANDSHAKE = 2
    RETRY = 3
    ONE_RTT = 4
    VERSION_NEGOTIATION = 5


class Epoch(IntEnum):
    """Packet-number spaces."""

    INITIAL = 0
    HANDSHAKE = 1
    APPLICATION = 2


EPOCHS = tuple(Epoch)  # iterating an Enum class is several times slower than a tuple

EPOCH_OF = {
    PacketType.INITIAL: Epoch.INITIAL,
    PacketType.HANDSHAKE: Epoch.HANDSHAKE,
    PacketType.ZERO_RTT: Epoch.APPLICATION,
    PacketType.ONE_RTT: Epoch.APPLICATION,
}


@dataclass(frozen=True, slots=True)
class LongHeader:
    """An unprotected Initial, 0-RTT or Handshake header. ``length`` is the Length field:
    packet-number bytes plus protected payload (including the AEAD tag)."""

    packet_type: PacketType
    version: int
    dcid: bytes
    scid: bytes
    packet_number: int
    pn_length: int
    length: int
    token: bytes = b""


@dataclass(frozen=True, slots=True)
class ShortHeader:
    """An unprotected 1-RTT header."""

    dcid: bytes
    packet_number: int
    pn_length: int
    key_phase: bool = False
    spin: bool = False


@dataclass(frozen=True, slots=True)
class RetryPacket:
    version: int
    dcid: bytes
    scid: bytes
    token: bytes
    integrity_tag: bytes
    unused_bits: int = 0


@dataclass(frozen=True, slots=True)
class VersionNegotiation:
    dcid: bytes
    scid: bytes
    versions: tuple[int, ...]
    unused_bits: int = 0


@dataclass(slots=True)
class ProtectedHeader:
    """What can be read of a packet before header protection is removed (not frozen: it is
    built for every packet received, and frozen dataclasses are slow to build).

    ``pn_offset`` is where the (protected) packet number starts and ``end`` where this packet
    ends inside the datagram (coalesced packets follow it)."""

    packet_type: PacketType
    version: int
    dcid: bytes
    scid: bytes
    token: bytes
    pn_offset: int
    end: int


def _cid(reader: Reader, field: str, *, limit: int) -> bytes:
    try:
        length = reader.pull_uint8()
        if length > limit:
            raise ProtocolViolation(f"length {length} exceeds {limit}", field=field)
        return reader.pull_bytes(length)
    except BufferReadError as exc:
        raise ProtocolViolation(f"truncated ({exc.reason})", field=field) from None


def _pull(reader: Reader, field: str, fn: str) -> int | bytes:
    """Run one ``pull_*`` naming ``field`` when the datagram is too short."""
    try:
        result: int | bytes = getattr(reader, fn)()
    except BufferReadError as exc:
        raise ProtocolViolation(f"truncated ({exc.reason})", field=field) from None
    return result


def parse_header(data: bytes, offset: int = 0, *, short_dcid_length: int) -> ProtectedHeader:
    """Read the invariant and unprotected fields of the packet that starts at ``offset``.

    Raises ``ProtocolViolation`` naming the field for truncation or a bad length, and
    ``PacketDropped`` for a packet whose fixed bit is clear."""
    if offset >= len(data):
        raise ProtocolViolation("truncated (no first byte)", field="first_byte")
    first = data[offset]
    if not first & FORM_LONG:  # the common case, read without a Reader
        if not first & FIXED_BIT:
            raise PacketDropped("fixed bit is 0", field="first_byte")
        dcid_end = offset + 1 + short_dcid_length
        if dcid_end > len(data):
            raise ProtocolViolation("truncated", field="short.dcid")
        return ProtectedHeader(PacketType.ONE_RTT, VELOCITY_VERSION, data[offset + 1 : dcid_end],
                               b"", b"", dcid_end, len(data))
    reader = Reader(data, offset + 1)
    version = int(_pull(reader, "long.version", "pull_uint32"))
    limit = MAX_CID_LENGTH if version == VELOCITY_VERSION else 255
    dcid = _cid(reader, "long.dcid", limit=limit)
    scid = _cid(reader, "long.scid", limit=limit)
    if version == 0:
        return ProtectedHeader(PacketType.VERSION_NEGOTIATION, 0, dcid, scid, b"",
                               reader.position, len(data))
    if not first & FIXED_BIT:
        raise PacketDropped("fixed bit is 0", field="first_byte")
    packet_type = PacketType((first >> 4) & 0x03)
    if version != VELOCITY_VERSION:
        return ProtectedHeader(packet_type, version, dcid, scid, b"", reader.position, len(data))
    if packet_type == PacketType.RETRY:
        return ProtectedHeader(packet_type, version, dcid, scid, b"", reader.position, len(data))
    token = b""
    if packet_type == PacketType.INITIAL:
        token = bytes(_pull(reader, "initial.token", "pull_vec_varint"))
    length = int(_pull(reader, "long.length", "pull_varint"))
    if length > reader.remaining:
        raise ProtocolViolation(f"{length} exceeds the {reader.remaining} bytes left",
                                field="long.length")
    if length < 20:
        raise ProtocolViolation(f"{length} is too short for a packet number and sample",
                                field="long.length")
    return ProtectedHeader(packet_type, version, dcid, scid, token, reader.position,
                           reader.position + length)


def push_long_header(writer: Writer, header: LongHeader) -> None:
    """Write an unprotected long header, packet number included."""
    if header.packet_type not in (PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE):
        raise UsageError(f"{header.packet_type.name} has no long packet header")
    writer.push_uint8(FORM_LONG | FIXED_BIT | (header.packet_type << 4) | (header.pn_length - 1))
    writer.push_uint32(header.version)
    writer.push_vec8(header.dcid)
    writer.push_vec8(header.scid)
    if header.packet_type == PacketType.INITIAL:
        writer.push_vec_varint(header.token)
    writer.push_varint(header.length, 2 if header.length < 0x4000 else 4)
    writer.push_uint(header.packet_number, header.pn_length)


def push_short_header(writer: Writer, header: ShortHeader) -> None:
    writer.push_uint8(FIXED_BIT | (header.spin << 5) | (header.key_phase << 2)
                      | (header.pn_length - 1))
    writer.push_bytes(header.dcid)
    writer.push_uint(header.packet_number, header.pn_length)


def pull_long_header(data: bytes) -> LongHeader:
    """Parse an unprotected long header (header protection already removed)."""
    hdr = parse_header(data, short_dcid_length=0)
    if hdr.version != VELOCITY_VERSION:  # parse_header read only its invariant fields
        raise ProtocolViolation(f"version 0x{hdr.version:08x} has no Velocity/1 long header",
                                field="long.version")
    if hdr.packet_type not in (PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE):
        raise ProtocolViolation(f"{hdr.packet_type.name} is not a protected long header",
                                field="first_byte")
    packet_number, pn_length = _unprotected_packet_number(data, hdr, 0x0C, "long")
    return LongHeader(hdr.packet_type, hdr.version, hdr.dcid, hdr.scid, packet_number,
                      pn_length, hdr.end - hdr.pn_offset, hdr.token)


def _unprotected_packet_number(data: bytes, hdr: ProtectedHeader, reserved: int,
                               form: str) -> tuple[int, int]:
    """Check the reserved bits and read the packet number (header protection removed)."""
    if data[0] & reserved:
        raise ProtocolViolation("reserved bits are not 0", field="first_byte")
    pn_length = (data[0] & 0x03) + 1
    reader = Reader(data, hdr.pn_offset)
    return int(_pull(reader, f"{form}.packet_number", f"pull_uint{8 * pn_length}")), pn_length


def pull_short_header(data: bytes, dcid_length: int) -> ShortHeader:
    """Parse an unprotected short header (header protection already removed)."""
    hdr = parse_header(data, short_dcid_length=dcid_length)
    if hdr.packet_type != PacketType.ONE_RTT:
        raise ProtocolViolation("not a short header", field="first_byte")
    packet_number, pn_length = _unprotected_packet_number(data, hdr, 0x18, "short")
    return ShortHeader(hdr.dcid, packet_number, pn_length, bool(data[0] & 0x04),
                       bool(data[0] & 0x20))


def encode_version_negotiation(packet: VersionNegotiation) -> bytes:
    writer = Writer()
    writer.push_uint8(FORM_LONG | (packet.unused_bits & 0x7F))
    writer.push_uint32(0)
    writer.push_vec8(packet.dcid)
    writer.push_vec8(packet.scid)
    for version in packet.versions:
        writer.push_uint32(version)
    return writer.data()


def decode_version_negotiation(data: bytes) -> VersionNegotiation:
    hdr = parse_header(data, short_dcid_length=0)
    if hdr.packet_type != PacketType.VERSION_NEGOTIATION:
        raise ProtocolViolation("version is not 0", field="long.version")
    body = data[hdr.pn_offset :]
    if not body or len(body) % 4:
        raise ProtocolViolation(f"{len(body)} bytes is not a non-empty list of 32-bit versions",
                                field="version_negotiation.versions")
    versions = tuple(int.from_bytes(body[i : i + 4], "big") for i in range(0, len(body), 4))
    return VersionNegotiation(hdr.dcid, hdr.scid, versions, data[0] & 0x7F)


def encode_retry_without_tag(version: int, dcid: bytes, scid: bytes, token: bytes,
                             unused_bits: int = 0) -> bytes:
    writer = Writer()
    writer.push_uint8(FORM_LONG | FIXED_BIT | (PacketType.RETRY << 4) | (unused_bits & 0x0F))
    writer.push_uint32(version)
    writer.push_vec8(dcid)
    writer.push_vec8(scid)
    writer.push_bytes(token)
    return writer.data()


def encode_retry(packet: RetryPacket) -> bytes:
    return encode_retry_without_tag(packet.version, packet.dcid, packet.scid, packet.token,
                                    packet.unused_bits) + packet.integrity_tag


def decode_retry(data: bytes) -> RetryPacket:
    hdr = parse_header(data, short_dcid_length=0)
    if hdr.packet_type != PacketType.RETRY:
        raise ProtocolViolation("not a Retry packet", field="first_byte")
    rest = data[hdr.pn_offset :]
    if len(rest) <= RETRY_TAG_LENGTH:
        raise ProtocolViolation(f"{len(rest)} bytes leave no token before the 16-byte tag",
                                field="retry.token")
    return RetryPacket(hdr.version, hdr.dcid, hdr.scid, rest[:-RETRY_TAG_LENGTH],
                       rest[-RETRY_TAG_LENGTH:], data[0] & 0x0F)


def packet_number_length(packet_number: int, largest_acked: int | None) -> int:
    """Bytes needed to send ``packet_number`` (RFC 9000 Appendix A.2)."""
    unacked = packet_number + 1 if largest_acked is None else packet_number - largest_acked
    bits = unacked.bit_length() + 1
    return min(max((bits + 7) // 8, 1), 4)


def decode_packet_number(truncated: int, pn_length: int, expected: int) -> int:
    """Recover the full packet number (RFC 9000 Appendix A.3); ``expected`` is largest + 1."""
    bits = pn_length * 8
    window = 1 << bits
    half = window // 2
    mask = window - 1
    candidate = (expected & ~mask) | truncated
    if candidate <= expected - half and candidate < (1 << 62) - window:
        return candidate + window
    if candidate > expected + half and candidate >= window:
        return candidate - window
    return candidate
