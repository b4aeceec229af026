"""Handshake messages (spec section 7) and their extensions (section 13): frozen dataclasses
with pull/push codecs. Decoding is strict: truncation, trailing bytes or a bad value raise
``DecodeError`` / ``IllegalParameter`` naming the field (``CLIENT_HELLO.alpn`` ...)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from velocity.core.buffer import Reader, Writer
from velocity.core.errors import BufferReadError, DecodeError, IllegalParameter, UnexpectedMessage

T = TypeVar("T")


class MessageType(IntEnum):
    CLIENT_HELLO = 0x01
    SERVER_HELLO = 0x02
    NEW_SESSION_TICKET = 0x04
    HELLO_RETRY = 0x06
    ENCRYPTED_EXTENSIONS = 0x08
    CERTIFICATE = 0x0B
    FINISHED = 0x14
    KEM_CIPHERTEXT = 0x1E
    FALLBACK = 0x30


class ExtensionType(IntEnum):
    SERVER_NAME = 0x00
    TRANSPORT_PARAMETERS = 0x01
    SERVER_KEY = 0x02
    EARLY_DATA = 0x03
    PRE_SHARED_KEY = 0x04


KNOWN_EXTENSIONS = frozenset(int(e) for e in ExtensionType)


def is_grease(ext_type: int) -> bool:
    return ext_type >= 27 and (ext_type - 27) % 31 == 0


Extensions = tuple[tuple[int, bytes], ...]


class _Fields:
    """A reader over one message body that names the field a failure happened in."""

    __slots__ = ("msg", "reader")

    def __init__(self, msg: str, body: bytes) -> None:
        self.msg = msg
        self.reader = Reader(body)

    def pull(self, field: str, fn: Callable[[Reader], T]) -> T:
        try:
            return fn(self.reader)
        except BufferReadError as exc:
            raise DecodeError(f"truncated ({exc.reason})", field=f"{self.msg}.{field}") from None

    def fixed(self, field: str, size: int) -> bytes:
        return self.pull(field, lambda r: r.pull_bytes(size))

    def u8(self, field: str) -> int:
        return self.pull(field, Reader.pull_uint8)

    def u16(self, field: str) -> int:
        return self.pull(field, Reader.pull_uint16)

    def u32(self, field: str) -> int:
        return self.pull(field, Reader.pull_uint32)

    def varint(self, field: str) -> int:
        return self.pull(field, Reader.pull_varint)

    def vec(self, field: str) -> bytes:
        return self.pull(field, Reader.pull_vec_varint)

    def vec8(self, field: str) -> bytes:
        return self.pull(field, Reader.pull_vec8)

    def list_of(self, field: str, item: Callable[[Reader], T]) -> tuple[T, ...]:
        inner = _Fields(self.msg, self.vec(field))
        items = []
        while not inner.reader.eof():
            items.append(inner.pull(field, item))
        return tuple(items)

    def extensions(self, field: str = "extensions") -> Extensions:
        inner = _Fields(self.msg, self.vec(field))
        items: list[tuple[int, bytes]] = []
        seen: set[int] = set()
        while not inner.reader.eof():
            ext_type = inner.pull(f"{field}.type", Reader.pull_varint_minimal)
            value = inner.pull(f"{field}.0x{ext_type:x}", Reader.pull_vec_varint)
            if ext_type in seen:
                raise IllegalParameter(f"extension 0x{ext_type:x} appears twice",
                                       field=f"{self.msg}.{field}")
            seen.add(ext_type)
            items.append((ext_type, value))
        return tuple(items)

    def done(self) -> None:
        if not self.reader.eof():
            raise DecodeError(f"{self.reader.remaining} trailing bytes", field=self.msg)


def _push_list(writer: Writer, items: tuple[T, ...], push: Callable[[Writer, T], None]) -> None:
    inner = Writer()
    for item in items:
        push(inner, item)
    writer.push_vec_varint(inner.data())


def _push_extensions(writer: Writer, extensions: Extensions) -> None:
    inner = Writer()
    for ext_type, value in extensions:
        inner.push_varint(ext_type)
        inner.push_vec_varint(value)
    writer.push_vec_varint(inner.data())


def _pull_alpn(reader: Reader) -> bytes:
    value = reader.pull_vec8()
    if not value:
        raise BufferReadError("empty ALPN identifier")
    return value


def _check_nonempty_unique(msg: str, field: str, items: tuple[object, ...]) -> None:
    if not items:
        raise DecodeError("empty list", field=f"{msg}.{field}")
    if len(set(items)) != len(items):
        raise IllegalParameter("duplicate entries", field=f"{msg}.{field}")


def _allowed_extensions(msg: str, extensions: Extensions, allowed: frozenset[int]) -> None:
    for ext_type, _ in extensions:
        if ext_type in KNOWN_EXTENSIONS and ext_type not in allowed:
            raise IllegalParameter(f"extension 0x{ext_type:x} is not allowed here",
                                   field=f"{msg}.extensions")


def _check_server_name(value: bytes | None) -> None:
    """``server_name`` is a UTF-8 host name of 1..255 bytes (section 13)."""
    if value is None:
        return
    if not 1 <= len(value) <= 255:
        raise DecodeError(f"{len(value)} bytes, not 1..255", field="CLIENT_HELLO.server_name")
    try:
        value.decode()
    except UnicodeDecodeError:
        raise DecodeError("not UTF-8", field="CLIENT_HELLO.server_name") from None


@dataclass(frozen=True, slots=True)
class ClientHello:
    random: bytes
    alpn: tuple[bytes, ...]
    profiles: tuple[int, ...]
    aeads: tuple[int, ...]
    key_share_profile: int
    key_share: bytes
    extensions: Extensions = ()

    TYPE = MessageType.CLIENT_HELLO

    def extension(self, ext_type: int) -> bytes | None:
        return next((v for t, v in self.extensions if t == ext_type), None)

    def push_body(self, writer: Writer) -> None:
        writer.push_bytes(self.random)
        _push_list(writer, self.alpn, Writer.push_vec8)
        _push_list(writer, self.profiles, Writer.push_uint16)
        _push_list(writer, self.aeads, Writer.push_uint16)
        writer.push_uint16(self.key_share_profile)
        writer.push_vec_varint(self.key_share)
        _push_extensions(writer, self.extensions)

    @classmethod
    def pull_body(cls, f: _Fields) -> ClientHello:
        hello = cls(f.fixed("random", 32), f.list_of("alpn", _pull_alpn),
                    f.list_of("profiles", Reader.pull_uint16),
                    f.list_of("aeads", Reader.pull_uint16), f.u16("key_share_profile"),
                    f.vec("key_share"), f.extensions())
        for field in ("alpn", "profiles", "aeads"):
            _check_nonempty_unique(f.msg, field, getattr(hello, field))
        if hello.key_share_profile not in hello.profiles:
            raise IllegalParameter("not one of the offered profiles",
                                   field="CLIENT_HELLO.key_share_profile")
        _allowed_extensions(f.msg, hello.extensions, KNOWN_EXTENSIONS)
        _check_server_name(hello.extension(ExtensionType.SERVER_NAME))
        psk = [i for i, (t, _) in enumerate(hello.extensions) if t == ExtensionType.PRE_SHARED_KEY]
        if psk and psk[0] != len(hello.extensions) - 1:
            raise IllegalParameter("pre_shared_key is not the last extension",
                                   field="CLIENT_HELLO.extensions")
        return hello


@dataclass(frozen=True, slots=True)
class HelloRetry:
    selected_profile: int
    extensions: Extensions = ()

    TYPE = MessageType.HELLO_RETRY

    def push_body(self, writer: Writer) -> None:
        writer.push_uint16(self.selected_profile)
        _push_extensions(writer, self.extensions)

    @classmethod
    def pull_body(cls, f: _Fields) -> HelloRetry:
        retry = cls(f.u16("selected_profile"), f.extensions())
        _allowed_extensions(f.msg, retry.extensions, frozenset())
        return retry


@dataclass(frozen=True, slots=True)
class ServerHello:
    random: bytes
    selected_profile: int
    selected_aead: int
    key_share: bytes
    psk_status: int = 0
    server_key_status: int = 0
    extensions: Extensions = ()

    TYPE = MessageType.SERVER_HELLO

    def push_body(self, writer: Writer) -> None:
        writer.push_bytes(self.random)
        writer.push_uint16(self.selected_profile)
        writer.push_uint16(self.selected_aead)
        writer.push_vec_varint(self.key_share)
        writer.push_uint8(self.psk_status)
        writer.push_uint8(self.server_key_status)
        _push_extensions(writer, self.extensions)

    @classmethod
    def pull_body(cls, f: _Fields) -> ServerHello:
        hello = cls(f.fixed("random", 32), f.u16("selected_profile"), f.u16("selected_aead"),
                    f.vec("key_share"), f.u8("psk_status"), f.u8("server_key_status"),
                    f.extensions())
        for field in ("psk_status", "server_key_status"):
            if getattr(hello, field) > 1:
                raise IllegalParameter("must be 0 or 1", field=f"SERVER_HELLO.{field}")
        _allowed_extensions(f.msg, hello.extensions, frozenset())
        return hello


@dataclass(frozen=True, slots=True)
class EncryptedExtensions:
    alpn: bytes
    aead: int
    extensions: Extensions = ()

    TYPE = MessageType.ENCRYPTED_EXTENSIONS

    def extension(self, ext_type: int) -> bytes | None:
        return next((v for t, v in self.extensions if t == ext_type), None)

    def push_body(self, writer: Writer) -> None:
        writer.push_vec8(self.alpn)
        writer.push_uint16(self.aead)
        _push_extensions(writer, self.extensions)

    @classmethod
    def pull_body(cls, f: _Fields) -> EncryptedExtensions:
        ee = cls(f.vec8("alpn"), f.u16("aead"), f.extensions())
        _allowed_extensions(f.msg, ee.extensions, frozenset(
            {ExtensionType.TRANSPORT_PARAMETERS, ExtensionType.EARLY_DATA}))
        return ee


@dataclass(frozen=True, slots=True)
class Certificate:
    certificates: tuple[bytes, ...]

    TYPE = MessageType.CERTIFICATE

    def push_body(self, writer: Writer) -> None:
        _push_list(writer, self.certificates, Writer.push_vec_varint)

    @classmethod
    def pull_body(cls, f: _Fields) -> Certificate:
        chain = f.list_of("certificates", Reader.pull_vec_varint)
        if not chain:
            raise DecodeError("empty chain", field="CERTIFICATE.certificates")
        return cls(chain)


@dataclass(frozen=True, slots=True)
class KemCiphertext:
    ciphertext: bytes

    TYPE = MessageType.KEM_CIPHERTEXT

    def push_body(self, writer: Writer) -> None:
        writer.push_vec_varint(self.ciphertext)

    @classmethod
    def pull_body(cls, f: _Fields) -> KemCiphertext:
        return cls(f.vec("ciphertext"))


@dataclass(frozen=True, slots=True)
class Finished:
    verify_data: bytes

    TYPE = MessageType.FINISHED

    def push_body(self, writer: Writer) -> None:
        writer.push_bytes(self.verify_data)

    @classmethod
    def pull_body(cls, f: _Fields) -> Finished:
        return cls(f.pull("verify_data", Reader.pull_rest))


@dataclass(frozen=True, slots=True)
class NewSessionTicket:
    lifetime: int
    age_add: int
    nonce: bytes
    ticket: bytes
    max_early_data: int
    extensions: Extensions = ()

    TYPE = MessageType.NEW_SESSION_TICKET

    def push_body(self, writer: Writer) -> None:
        writer.push_uint32(self.lifetime)
        writer.push_uint32(self.age_add)
        writer.push_vec8(self.nonce)
        writer.push_vec_varint(self.ticket)
        writer.push_uint32(self.max_early_data)
        _push_extensions(writer, self.extensions)

    @classmethod
    def pull_body(cls, f: _Fields) -> NewSessionTicket:
        nst = cls(f.u32("lifetime"), f.u32("age_add"), f.vec8("nonce"), f.vec("ticket"),
                  f.u32("max_early_data"), f.extensions())
        if nst.lifetime > 604800:
            raise IllegalParameter("longer than 7 days", field="NEW_SESSION_TICKET.lifetime")
        if not nst.ticket:
            raise DecodeError("empty ticket", field="NEW_SESSION_TICKET.ticket")
        _allowed_extensions(f.msg, nst.extensions, frozenset())  # max_early_data says it all
        return nst


@dataclass(frozen=True, slots=True)
class Fallback:
    alpn: bytes
    host: bytes
    port: int
    reason: int
    reason_text: bytes
    retry_after: int
    mac: bytes = b""

    TYPE = MessageType.FALLBACK

    def push_body(self, writer: Writer) -> None:
        writer.push_vec8(self.alpn)
        writer.push_vec8(self.host)
        writer.push_uint16(self.port)
        writer.push_varint(self.reason)
        writer.push_vec_varint(self.reason_text)
        writer.push_varint(self.retry_after)
        writer.push_vec8(self.mac)

    @classmethod
    def pull_body(cls, f: _Fields) -> Fallback:
        return cls(f.vec8("alpn"), f.vec8("host"), f.u16("port"), f.varint("reason"),
                   f.vec("reason_text"), f.varint("retry_after"), f.vec8("mac"))


Message = (ClientHello | HelloRetry | ServerHello | EncryptedExtensions | Certificate
           | KemCiphertext | Finished | NewSessionTicket | Fallback)
MESSAGE_CLASSES: dict[int, type[Message]] = {
    cls.TYPE: cls for cls in (ClientHello, HelloRetry, ServerHello, EncryptedExtensions,
                              Certificate, KemCiphertext, Finished, NewSessionTicket, Fallback)
}
MAX_MESSAGE = 65535


def encode_message(message: Message) -> bytes:
    body = Writer()
    message.push_body(body)
    data = body.data()
    return bytes([message.TYPE]) + len(data).to_bytes(3, "big") + data


def decode_message(msg_type: int, body: bytes) -> Message:
    cls = MESSAGE_CLASSES.get(msg_type)
    if cls is None:
        raise UnexpectedMessage(f"unknown message type 0x{msg_type:02x}", field="msg_type")
    fields = _Fields(MessageType(msg_type).name, body)
    message = cls.pull_body(fields)
    fields.done()
    return message


class MessageReader:
    """Splits an in-order byte stream (one packet-number space) into whole messages."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes, bytes]]:
        """Return (type, body, raw message bytes) for every message completed by ``data``."""
        self._buffer += data
        out = []
        while len(self._buffer) >= 4:
            length = int.from_bytes(self._buffer[1:4], "big")
            if length > MAX_MESSAGE:
                raise DecodeError(f"message of {length} bytes exceeds {MAX_MESSAGE}",
                                  field="length")
            if len(self._buffer) < 4 + length:
                break
            raw = self._buffer[: 4 + length]
            self._buffer = self._buffer[4 + length :]
            out.append((raw[0], raw[4:], raw))
        return out

    @property
    def pending(self) -> int:
        return len(self._buffer)
