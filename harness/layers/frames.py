"""One scapy layer per Velocity/1 frame (spec section 4). Field names match the frame
dataclasses of the reference codec; ``dissect_frames`` splits a payload into layers, and
``longer_than_minimal`` names the frames of a payload written with a longer varint than
their values need (VEL-VAR-004)."""

from __future__ import annotations

import struct
from typing import Any

from scapy.fields import (
    ConditionalField,
    FieldLenField,
    MaximumItemsCount,
    PacketListField,
    StrFixedLenField,
    StrLenField,
)
from scapy.packet import Packet, Raw

from harness.layers.fields import VarIntField, VarLenField, ZeroRunField


def _varint_at(data: bytes) -> int:
    if not data:
        return -1
    size = 1 << (data[0] >> 6)
    return int.from_bytes(data[:size], "big") & ((1 << (8 * size - 2)) - 1)


def _vec(name: str) -> list[Any]:
    return [VarLenField(f"{name}_length", None, length_of=name),
            StrLenField(name, b"", length_from=lambda p: getattr(p, f"{name}_length"))]


class VFrame(Packet):
    """Base layer: dispatches on the frame type, and chains the next frame as payload."""

    name = "Velocity frame"
    fields_desc = [VarIntField("type", 0x01)]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kwargs: Any) -> type:
        if _pkt:
            return FRAME_LAYERS.get(_varint_at(_pkt), Raw)
        return cls

    def guess_payload_class(self, payload: bytes) -> type:
        return VFrame if payload else Raw

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return s, b""


def _frame(cls_name: str, frame_type: int, fields: list[Any]) -> type[VFrame]:
    layer: type[VFrame] = type(cls_name, (VFrame,), {
        "name": cls_name,
        "fields_desc": [VarIntField("type", frame_type), *fields],
    })
    return layer


class VAckRange(Packet):
    name = "ACK range"
    fields_desc = [VarIntField("gap", 0), VarIntField("length", 0)]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


def _has_ecn(p: Packet) -> bool:
    return bool(p.type == 0x03)


def _stream_length(p: Packet) -> int:
    return int(p.length) if p.type & 0x02 else 1 << 40


PADDING = _frame("PADDING", 0x00, [ZeroRunField("run", b"")])
PING = _frame("PING", 0x01, [])
ACK = _frame("ACK", 0x02, [
    VarIntField("largest", 0), VarIntField("delay", 0),
    VarLenField("range_count", None, count_of="ranges"),
    VarIntField("first_range", 0),
    PacketListField("ranges", [], VAckRange, count_from=lambda p: p.range_count,
                    max_count=1 << 16),  # any count a payload holds (scapy's default: 100)
    ConditionalField(VarIntField("ect0", 0), _has_ecn),
    ConditionalField(VarIntField("ect1", 0), _has_ecn),
    ConditionalField(VarIntField("ce", 0), _has_ecn),
])
RESET_STREAM = _frame("RESET_STREAM", 0x04, [VarIntField("stream_id", 0),
                                             VarIntField("error_code", 0),
                                             VarIntField("final_size", 0)])
STOP_SENDING = _frame("STOP_SENDING", 0x05, [VarIntField("stream_id", 0),
                                             VarIntField("error_code", 0)])
CRYPTO = _frame("CRYPTO", 0x06, [VarIntField("offset", 0), *_vec("data")])
NEW_TOKEN = _frame("NEW_TOKEN", 0x07, _vec("token"))
STREAM = _frame("STREAM", 0x0A, [
    VarIntField("stream_id", 0),
    ConditionalField(VarIntField("offset", 0), lambda p: p.type & 0x04),
    ConditionalField(VarLenField("length", None, length_of="data"),
                     lambda p: p.type & 0x02),
    StrLenField("data", b"", length_from=_stream_length),
])
MAX_DATA = _frame("MAX_DATA", 0x10, [VarIntField("maximum", 0)])
MAX_STREAM_DATA = _frame("MAX_STREAM_DATA", 0x11, [VarIntField("stream_id", 0),
                                                   VarIntField("maximum", 0)])
MAX_STREAMS_BIDI = _frame("MAX_STREAMS_BIDI", 0x12, [VarIntField("maximum", 0)])
MAX_STREAMS_UNI = _frame("MAX_STREAMS_UNI", 0x13, [VarIntField("maximum", 0)])
DATA_BLOCKED = _frame("DATA_BLOCKED", 0x14, [VarIntField("limit", 0)])
STREAM_DATA_BLOCKED = _frame("STREAM_DATA_BLOCKED", 0x15, [VarIntField("stream_id", 0),
                                                           VarIntField("limit", 0)])
STREAMS_BLOCKED_BIDI = _frame("STREAMS_BLOCKED_BIDI", 0x16, [VarIntField("limit", 0)])
STREAMS_BLOCKED_UNI = _frame("STREAMS_BLOCKED_UNI", 0x17, [VarIntField("limit", 0)])
NEW_CONNECTION_ID = _frame("NEW_CONNECTION_ID", 0x18, [
    VarIntField("sequence", 0), VarIntField("retire_prior_to", 0),
    FieldLenField("connection_id_length", None, length_of="connection_id", fmt="B"),
    StrLenField("connection_id", b"", length_from=lambda p: p.connection_id_length,
                max_length=255),
    StrFixedLenField("stateless_reset_token", b"\x00" * 16, 16),
])
RETIRE_CONNECTION_ID = _frame("RETIRE_CONNECTION_ID", 0x19, [VarIntField("sequence", 0)])
PATH_CHALLENGE = _frame("PATH_CHALLENGE", 0x1A, [StrFixedLenField("data", b"\x00" * 8, 8)])
PATH_RESPONSE = _frame("PATH_RESPONSE", 0x1B, [StrFixedLenField("data", b"\x00" * 8, 8)])
CONNECTION_CLOSE = _frame("CONNECTION_CLOSE", 0x1C, [
    VarIntField("error_code", 0), VarIntField("frame_type", 0), *_vec("reason")])
APPLICATION_CLOSE = _frame("APPLICATION_CLOSE", 0x1D, [VarIntField("error_code", 0),
                                                       *_vec("reason")])
HANDSHAKE_DONE = _frame("HANDSHAKE_DONE", 0x1E, [])

FRAME_LAYERS: dict[int, type[VFrame]] = {
    0x00: PADDING, 0x01: PING, 0x02: ACK, 0x03: ACK, 0x04: RESET_STREAM, 0x05: STOP_SENDING,
    0x06: CRYPTO, 0x07: NEW_TOKEN, **dict.fromkeys(range(0x08, 0x10), STREAM),
    0x10: MAX_DATA, 0x11: MAX_STREAM_DATA, 0x12: MAX_STREAMS_BIDI, 0x13: MAX_STREAMS_UNI,
    0x14: DATA_BLOCKED, 0x15: STREAM_DATA_BLOCKED, 0x16: STREAMS_BLOCKED_BIDI,
    0x17: STREAMS_BLOCKED_UNI, 0x18: NEW_CONNECTION_ID, 0x19: RETIRE_CONNECTION_ID,
    0x1A: PATH_CHALLENGE, 0x1B: PATH_RESPONSE, 0x1C: CONNECTION_CLOSE, 0x1D: APPLICATION_CLOSE,
    0x1E: HANDSHAKE_DONE,
}
LAYERS_BY_NAME: dict[str, type[VFrame]] = {layer.__name__: layer for layer in FRAME_LAYERS.values()}


def dissect_frames(payload: bytes) -> list[Packet]:
    """Split a decrypted payload into frame layers, one frame at a time (scapy's own chaining
    of payloads recurses once a frame and gives up near its recursion limit); an unknown
    type, or a frame cut short, ends the list as ``Raw``."""
    layers: list[Packet] = []
    rest = payload
    while rest:
        layer_class = FRAME_LAYERS.get(_varint_at(rest))
        if layer_class is None:
            layers.append(Raw(rest))
            break
        layer = layer_class()
        try:
            after = layer.do_dissect(rest)
        except (struct.error, IndexError, ValueError, MaximumItemsCount):
            layers.append(Raw(rest))
            break
        layers.append(layer)
        rest = after
    return layers


def _rebuilt(layer: Packet) -> Packet:
    """``layer`` built again from its field values, each varint written minimally (its ACK
    ranges too)."""
    values: dict[str, Any] = {}
    for name, value in layer.fields.items():
        nested = isinstance(value, list) and value and isinstance(value[0], Packet)
        values[name] = [_rebuilt(item) for item in value] if nested else value
    return type(layer)(**values)


def longer_than_minimal(payload: bytes) -> list[str]:
    """The frames of ``payload`` (by name, in order) whose bytes are longer than the same
    values encoded with minimal varints; frames from an unknown type on are not judged."""
    return [type(layer).__name__ for layer in dissect_frames(payload)
            if not isinstance(layer, Raw) and len(bytes(layer)) > len(bytes(_rebuilt(layer)))]
