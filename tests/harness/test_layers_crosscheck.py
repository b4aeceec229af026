"""The scapy layers and the reference codec are two readings of the same wire format: on
every frame, packet and handshake message type (with the extension values and the ticket
plaintext) they must produce and accept the same bytes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.packet import Packet

from harness.fuzz import strategies as st_v
from harness.layers import frames as layers
from harness.layers import messages as ml
from harness.layers.packets import VLongHeader, VRetry, VVersionNegotiation, short_header_layer
from velocity.core import frames as f
from velocity.core.buffer import VARINT_MAX, Writer
from velocity.core.handshake import messages as m
from velocity.core.handshake import server as server_module
from velocity.core.handshake.common import TicketState
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


@pytest.mark.parametrize("cls", f.FRAME_CLASSES, ids=lambda c: c.NAME)
def test_longer_than_minimal_names_a_frame_only_with_a_widened_varint(
        cls: type[f.Frame]) -> None:
    """The codec writes minimal varints: nothing is named; the same frame with its type
    written in 2 bytes is."""
    @given(st_v.FRAME_STRATEGIES[cls])
    def check(frame: f.Frame) -> None:
        wire = f.encode_frames([frame])
        assert layers.longer_than_minimal(wire) == []
        assert wire[0] < 0x40
        assert layers.longer_than_minimal(bytes([0x40, wire[0]]) + wire[1:]) == [frame.NAME]

    check()


def test_longer_than_minimal_reads_fields_and_ack_ranges() -> None:
    stream = bytes([0x0E, 0x40, 0x00, 0x00, 0x01]) + b"x"  # stream ID 0 in 2 bytes
    ack = bytes([0x02, 0x0A, 0x00, 0x01, 0x00, 0x40, 0x01, 0x00])  # a range's gap in 2
    minimal = f.encode_frames([f.Ping(), f.MaxData(1 << 40)])
    assert layers.longer_than_minimal(minimal + stream + ack) == ["STREAM", "ACK"]
    assert layers.longer_than_minimal(minimal + bytes([0x1F, 0x40, 0x00])) == []  # unknown
    assert layers.longer_than_minimal(b"\x02\x40") == []  # an ACK cut short


def test_longer_than_minimal_judges_long_payloads_to_their_end() -> None:
    """A packet of 600 frames (scapy's recursive chaining gave up near 200) and an ACK of
    more ranges than scapy's default list bound (100), first or later in its payload."""
    assert layers.longer_than_minimal(bytes([0x40, 0x01]) * 600) == ["PING"] * 600
    ranges = bytes([0x00, 0x00]) * 150
    ack = bytes([0x02, 0x01, 0x00, 0x40, 150, 0x40, 0x00]) + ranges  # first range 0 in 2
    assert layers.longer_than_minimal(ack) == ["ACK"]
    assert layers.longer_than_minimal(b"\x01" + ack + bytes([0x40, 0x01])) == ["ACK", "PING"]


@given(st.binary(max_size=64))
def test_longer_than_minimal_judges_any_bytes_without_failing(payload: bytes) -> None:
    """A target's payload may be anything (a frame cut short first included): what cannot
    be dissected is not judged."""
    assert set(layers.longer_than_minimal(payload)) <= set(layers.LAYERS_BY_NAME)


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


# --- handshake messages (spec sections 7 and 13) ---------------------------------------

u16s, u32s = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
# extension types the codec accepts in every message: past the known ones (VEL-EXT-001)
ext_lists = st.lists(st.tuples(st.integers(5, VARINT_MAX), st_v.blobs), max_size=4,
                     unique_by=lambda e: e[0]).map(tuple)
nonempty_u16s = st.lists(u16s, min_size=1, max_size=4, unique=True).map(tuple)


@st.composite
def client_hellos(draw: st.DrawFn) -> m.ClientHello:
    profiles = draw(nonempty_u16s)
    return m.ClientHello(
        draw(st.binary(min_size=32, max_size=32)),
        draw(st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=3,
                      unique=True).map(tuple)),
        profiles, draw(nonempty_u16s), draw(st.sampled_from(profiles)), draw(st_v.blobs),
        draw(ext_lists))


MESSAGE_STRATEGIES: dict[type[m.Message], st.SearchStrategy[m.Message]] = {
    m.ClientHello: client_hellos(),
    m.HelloRetry: st.builds(m.HelloRetry, u16s, ext_lists),
    m.ServerHello: st.builds(m.ServerHello, st.binary(min_size=32, max_size=32), u16s, u16s,
                             st_v.blobs, st.integers(0, 1), st.integers(0, 1), ext_lists),
    m.EncryptedExtensions: st.builds(m.EncryptedExtensions, st.binary(max_size=255), u16s,
                                     ext_lists),
    m.Certificate: st.builds(m.Certificate,
                             st.lists(st_v.blobs, min_size=1, max_size=3).map(tuple)),
    m.KemCiphertext: st.builds(m.KemCiphertext, st_v.blobs),
    m.Finished: st.builds(m.Finished, st.binary(min_size=32, max_size=64)),
    m.NewSessionTicket: st.builds(m.NewSessionTicket, st.integers(0, 604800), u32s,
                                  st.binary(max_size=255), st.binary(min_size=1, max_size=64),
                                  u32s, ext_lists),
    m.Fallback: st.builds(m.Fallback, st.binary(max_size=255), st.binary(max_size=255), u16s,
                          st_v.varints, st_v.blobs, st_v.varints, st.binary(max_size=64)),
}


def message_layer(message: m.Message) -> Packet:
    """The layer for ``message``, field by field; lists become item layers."""
    fields: dict[str, Any] = {}
    for fld in dataclasses.fields(message):
        value = getattr(message, fld.name)
        if fld.name == "extensions":
            value = [ml.VExtension(type=t, value=v) for t, v in value]
        elif fld.name == "alpn" and isinstance(message, m.ClientHello):
            value = [ml.VProtocol(protocol=a) for a in value]
        elif fld.name == "certificates":
            value = [ml.VCertificateEntry(der=c) for c in value]
        elif isinstance(value, tuple):
            value = list(value)
        fields[fld.name] = value
    return ml.MESSAGE_LAYERS[message.TYPE](**fields)


def message_from_layer(layer: Packet) -> m.Message:
    """The reference dataclass with the fields the layer read."""
    cls = m.MESSAGE_CLASSES[layer.msg_type]
    values: dict[str, Any] = {}
    for fld in dataclasses.fields(cls):
        value = getattr(layer, fld.name)
        if fld.name == "extensions":
            value = tuple((e.type, e.value) for e in value)
        elif fld.name == "alpn" and cls is m.ClientHello:
            value = tuple(a.protocol for a in value)
        elif fld.name == "certificates":
            value = tuple(c.der for c in value)
        elif isinstance(value, list):
            value = tuple(value)
        values[fld.name] = value
    return cls(**values)


@pytest.mark.spec("VEL-HS-001", "VEL-EXT-001")
@pytest.mark.parametrize("cls", list(MESSAGE_STRATEGIES), ids=lambda c: c.TYPE.name)
def test_message_layers_agree_with_the_codec(cls: type[m.Message]) -> None:
    @given(MESSAGE_STRATEGIES[cls])
    def check(message: m.Message) -> None:
        wire = m.encode_message(message)
        assert bytes(message_layer(message)) == wire
        (dissected,) = ml.dissect_messages(wire)
        assert dissected.name == message.TYPE.name
        assert message_from_layer(dissected) == message
        assert m.decode_message(wire[0], wire[4:]) == message

    check()


@given(st.binary(max_size=255), st.binary(max_size=64))
def test_server_key_layer_agrees(key_id: bytes, ciphertext: bytes) -> None:
    value = bytes(ml.VServerKey(key_id=key_id, ciphertext=ciphertext))
    assert server_module._pull_server_key(value) == (key_id, ciphertext)


@given(st.binary(max_size=64), u32s, st.binary(max_size=64))
def test_pre_shared_key_layer_agrees(identity: bytes, age: int, binder: bytes) -> None:
    value = bytes(ml.VPreSharedKey(identity=identity, obfuscated_age=age, binder=binder))
    offer = server_module._pull_psk(value)
    assert (offer.identity, offer.obfuscated_age, offer.binder) == (identity, age, binder)


@given(st.builds(TicketState, st.integers(0, (1 << 64) - 1), u16s, u16s,
                 st.binary(max_size=255), u32s, st.binary(max_size=64)))
def test_ticket_state_layer_agrees(state: TicketState) -> None:
    wire = state.encode()
    layer = ml.read_exactly(ml.VTicketState, wire, "ticket")
    assert (layer.issued_ms, layer.profile, layer.aead, layer.alpn, layer.max_early_data,
            layer.psk) == dataclasses.astuple(state)
    assert bytes(ml.VTicketState(**{k: getattr(state, k) for k in (
        "issued_ms", "profile", "aead", "alpn", "max_early_data", "psk")})) == wire


@pytest.mark.parametrize("wire", [
    bytes.fromhex("140000"),  # a header cut short
    bytes.fromhex("14000030") + bytes(8),  # a length past the end
    bytes.fromhex("7f000000"),  # no such message type
    m.encode_message(m.KemCiphertext(b"abc"))[:-1],  # the vector cut short
    m.encode_message(m.HelloRetry(0x11EC)) + b"\x00",  # not a whole next message
])
def test_dissect_refuses_what_is_not_whole_messages(wire: bytes) -> None:
    with pytest.raises(ValueError, match="CRYPTO data"):
        ml.dissect_messages(wire)


def test_read_exactly_refuses_trailing_bytes() -> None:
    wire = m.encode_message(m.KemCiphertext(b"abc"))
    body_with_extra = wire[:1] + (len(wire) - 3).to_bytes(3, "big") + wire[4:] + b"\x00"
    with pytest.raises(ValueError, match="does not decode"):
        ml.read_exactly(ml.VKemCiphertext, body_with_extra, "KEM_CIPHERTEXT")


def test_read_exactly_refuses_a_list_element_it_cannot_read() -> None:
    wire = bytearray(m.encode_message(m.HelloRetry(0x11EC, ((0x1B, b"grease"),))))
    wire[7] = 0x40  # the extension's value length becomes a truncated 2-byte varint
    with pytest.raises(ValueError, match="does not decode"):
        ml.read_exactly(ml.VHelloRetry, bytes(wire), "HELLO_RETRY")
