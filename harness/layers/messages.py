"""One scapy layer per Velocity/1 handshake message (spec section 7) with its extension block
(section 13), the values of the ``server_key`` and ``pre_shared_key`` extensions, and the
reference server's sealed ticket and its plaintext (VEL-RES-002). Field names match the
message dataclasses of the reference codec; ``dissect_messages`` splits CRYPTO data into
message layers and refuses bytes that do not read back as themselves."""

from __future__ import annotations

from typing import Any

from scapy.fields import (
    ByteField,
    FieldLenField,
    FieldListField,
    IntField,
    LongField,
    PacketListField,
    ShortField,
    StrField,
    StrFixedLenField,
    StrLenField,
    ThreeBytesField,
)
from scapy.packet import Packet

from harness.layers.fields import VarIntField, VarLenField

# extension types (spec section 13)
SERVER_NAME, TRANSPORT_PARAMETERS, SERVER_KEY, EARLY_DATA, PRE_SHARED_KEY = range(5)
_AUTO: Any = None  # a length that post_build fills in


def _vec(name: str) -> list[Any]:
    """``vec<varint>`` of bytes."""
    return [VarLenField(f"{name}_length", None, length_of=name),
            StrLenField(name, b"", length_from=lambda p: getattr(p, f"{name}_length"))]


def _vec8(name: str) -> list[Any]:
    """``vec<u8>`` of bytes."""
    return [FieldLenField(f"{name}_length", None, length_of=name, fmt="B"),
            StrLenField(name, b"", length_from=lambda p: getattr(p, f"{name}_length"),
                        max_length=255)]


def _list(name: str, item: Any) -> list[Any]:
    """``vec<varint>`` of ``item`` (a layer class, or a field for fixed-width integers)."""
    length = VarLenField(f"{name}_length", None, length_of=name)
    if isinstance(item, type):
        return [length, PacketListField(name, [], item,
                                        length_from=lambda p: getattr(p, f"{name}_length"))]
    return [length, FieldListField(name, [], item,
                                   length_from=lambda p: getattr(p, f"{name}_length"))]


class _Item(Packet):
    """An element of a list: whatever follows it belongs to the next element."""

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class VProtocol(_Item):
    name = "ALPN identifier"
    fields_desc = _vec8("protocol")


class VCertificateEntry(_Item):
    name = "certificate"
    fields_desc = _vec("der")


class VExtension(_Item):
    name = "extension"
    fields_desc = [VarIntField("type", 0), *_vec("value")]


def _extensions() -> list[Any]:
    return _list("extensions", VExtension)


class VMessage(Packet):
    """Base layer: ``msg_type (u8) || length (u24)``, then the body; dispatches on the type
    and fills ``length`` when it is left unset."""

    name = "Velocity handshake message"
    MSG_TYPE = 0
    fields_desc = [ByteField("msg_type", 0), ThreeBytesField("length", _AUTO)]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kwargs: Any) -> type:
        if _pkt:
            return MESSAGE_LAYERS.get(_pkt[0], cls)
        return cls

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.length is None:
            pkt = pkt[:1] + (len(pkt) - 4).to_bytes(3, "big") + pkt[4:]
        return pkt + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    def extension(self, ext_type: int) -> bytes | None:
        """The value of the extension of ``ext_type``, or None."""
        return next((e.value for e in self.extensions if e.type == ext_type), None)


def _header(msg_type: int) -> list[Any]:
    return [ByteField("msg_type", msg_type), ThreeBytesField("length", _AUTO)]


class VClientHello(VMessage):
    name = "CLIENT_HELLO"
    MSG_TYPE = 0x01
    fields_desc = [*_header(MSG_TYPE), StrFixedLenField("random", bytes(32), 32),
                   *_list("alpn", VProtocol), *_list("profiles", ShortField("", 0)),
                   *_list("aeads", ShortField("", 0)), ShortField("key_share_profile", 0),
                   *_vec("key_share"), *_extensions()]


class VHelloRetry(VMessage):
    name = "HELLO_RETRY"
    MSG_TYPE = 0x06
    fields_desc = [*_header(MSG_TYPE), ShortField("selected_profile", 0), *_extensions()]


class VServerHello(VMessage):
    name = "SERVER_HELLO"
    MSG_TYPE = 0x02
    fields_desc = [*_header(MSG_TYPE), StrFixedLenField("random", bytes(32), 32),
                   ShortField("selected_profile", 0), ShortField("selected_aead", 0),
                   *_vec("key_share"), ByteField("psk_status", 0),
                   ByteField("server_key_status", 0), *_extensions()]


class VEncryptedExtensions(VMessage):
    name = "ENCRYPTED_EXTENSIONS"
    MSG_TYPE = 0x08
    fields_desc = [*_header(MSG_TYPE), *_vec8("alpn"), ShortField("aead", 0), *_extensions()]


class VCertificate(VMessage):
    name = "CERTIFICATE"
    MSG_TYPE = 0x0B
    fields_desc = [*_header(MSG_TYPE), *_list("certificates", VCertificateEntry)]


class VKemCiphertext(VMessage):
    name = "KEM_CIPHERTEXT"
    MSG_TYPE = 0x1E
    fields_desc = [*_header(MSG_TYPE), *_vec("ciphertext")]


class VFinished(VMessage):
    name = "FINISHED"
    MSG_TYPE = 0x14
    fields_desc = [*_header(MSG_TYPE), StrLenField("verify_data", b"",
                                               length_from=lambda p: p.length)]


class VNewSessionTicket(VMessage):
    name = "NEW_SESSION_TICKET"
    MSG_TYPE = 0x04
    fields_desc = [*_header(MSG_TYPE), IntField("lifetime", 0), IntField("age_add", 0),
                   *_vec8("nonce"), *_vec("ticket"), IntField("max_early_data", 0),
                   *_extensions()]


class VFallback(VMessage):
    name = "FALLBACK"
    MSG_TYPE = 0x30
    fields_desc = [*_header(MSG_TYPE), *_vec8("alpn"), *_vec8("host"), ShortField("port", 443),
                   VarIntField("reason", 0), *_vec("reason_text"),
                   VarIntField("retry_after", 0), *_vec8("mac")]


MESSAGE_LAYERS: dict[int, type[VMessage]] = {
    layer.MSG_TYPE: layer
    for layer in (VClientHello, VHelloRetry, VServerHello, VEncryptedExtensions, VCertificate,
                  VKemCiphertext, VFinished, VNewSessionTicket, VFallback)
}


class VServerKey(Packet):
    """The ``server_key`` extension's value: the key id and the PDK ciphertext."""

    name = "server_key"
    fields_desc = [*_vec8("key_id"), *_vec("ciphertext")]


class VPreSharedKey(Packet):
    """The ``pre_shared_key`` extension's value (always the last extension)."""

    name = "pre_shared_key"
    fields_desc = [*_vec("identity"), IntField("obfuscated_age", 0), *_vec8("binder")]


class VSealedTicket(Packet):
    """A ticket as the reference server seals it: ``key_id || nonce(12) || ciphertext``."""

    name = "sealed ticket"
    fields_desc = [ByteField("key_id", 0), StrFixedLenField("nonce", bytes(12), 12),
                   StrField("ciphertext", b"")]


class VTicketState(Packet):
    """The plaintext of a sealed ticket (VEL-RES-002)."""

    name = "ticket state"
    fields_desc = [LongField("issued_ms", 0), ShortField("profile", 0), ShortField("aead", 0),
                   *_vec8("alpn"), IntField("max_early_data", 0), *_vec8("psk")]


def _consistent(packet: Packet) -> bool:
    """Whether every length field counts exactly the bytes of its vector, and every element
    of every list read as its layer (scapy cuts a vector short at the end of the data, and
    keeps an element it cannot read as ``Raw``, instead of failing)."""
    for fld in packet.fields_desc:
        target = getattr(fld, "length_of", None)
        if target is not None and packet.getfieldval(fld.name) != packet.get_field(
                target).i2len(packet, packet.getfieldval(target)):
            return False
        if isinstance(fld, PacketListField) and not all(
                type(item) is fld.cls and _consistent(item)
                for item in packet.getfieldval(fld.name)):
            return False
    return not isinstance(packet, VMessage) or packet.length == len(bytes(packet)) - 4


def read_exactly(layer: type[Packet], raw: bytes, what: str) -> Any:
    """``raw`` read as ``layer``; a ValueError naming ``what`` unless it reads back as the
    same bytes with nothing left over (scapy itself is lenient)."""
    try:
        parsed = layer(raw)
    except Exception as exc:  # scapy raises assorted types on malformed input
        raise ValueError(f"{what} does not decode: {exc}") from None
    if parsed.payload or bytes(parsed) != raw or not _consistent(parsed):
        raise ValueError(f"{what} does not decode as {layer.name}: truncated, trailing bytes "
                         "or a length or varint that does not read back")
    return parsed


def dissect_messages(data: bytes, what: str = "CRYPTO data") -> list[VMessage]:
    """Split in-order CRYPTO data into message layers; ValueError on an unknown type or bytes
    that are not whole messages."""
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise ValueError(f"{what}: {len(data) - pos} bytes left, too short for a header")
        end = pos + 4 + int.from_bytes(data[pos + 1 : pos + 4], "big")
        layer = MESSAGE_LAYERS.get(data[pos])
        if layer is None or end > len(data):
            raise ValueError(f"{what}: no whole message of a known type at offset {pos}")
        out.append(read_exactly(layer, data[pos:end], f"{what}: {layer.name} at offset {pos}"))
        pos = end
    return out
