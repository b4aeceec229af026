"""The error registry of Velocity/1 (spec section "Errors") and the exceptions that carry it.

Every error a peer can provoke is a ``ProtocolError`` whose class names its wire code, so the
one place that turns a peer's misbehaviour into CONNECTION_CLOSE only reads ``exc.code``.
Misuse of the API by the application raises ``UsageError`` instead, which never reaches the
wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import TypeVar

T = TypeVar("T")


class ErrorCode(IntEnum):
    """Wire codes: QUIC transport codes (RFC 9000 section 20) and the Velocity handshake range."""

    NO_ERROR = 0x00
    INTERNAL_ERROR = 0x01
    CONNECTION_REFUSED = 0x02
    FLOW_CONTROL_ERROR = 0x03
    STREAM_LIMIT_ERROR = 0x04
    STREAM_STATE_ERROR = 0x05
    FINAL_SIZE_ERROR = 0x06
    FRAME_ENCODING_ERROR = 0x07
    TRANSPORT_PARAMETER_ERROR = 0x08
    CONNECTION_ID_LIMIT_ERROR = 0x09
    PROTOCOL_VIOLATION = 0x0A
    INVALID_TOKEN = 0x0B
    APPLICATION_ERROR = 0x0C
    CRYPTO_BUFFER_EXCEEDED = 0x0D
    KEY_UPDATE_ERROR = 0x0E
    AEAD_LIMIT_REACHED = 0x0F
    NO_VIABLE_PATH = 0x10
    HANDSHAKE_FAILURE = 0x0100
    DECODE_ERROR = 0x0101
    ILLEGAL_PARAMETER = 0x0102
    KEM_KEY_REQUIRED = 0x0103
    STALE_KEM_KEY = 0x0104
    CERTIFICATE_INVALID = 0x0105
    PROFILE_POLICY_VIOLATION = 0x0106
    BAD_FINISHED = 0x0107
    NO_APPLICATION_PROTOCOL = 0x0108
    DOWNGRADE_DETECTED = 0x0109
    UNEXPECTED_MESSAGE = 0x010A
    BAD_BINDER = 0x010B


class UsageError(Exception):
    """The local application called the API wrongly; never sent to a peer."""


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """``table[name]``, or a ``UsageError`` that lists the valid choices."""
    try:
        return table[name]
    except KeyError:
        raise UsageError(f"unknown {what} {name!r}; choose one of "
                         f"{', '.join(sorted(table))}") from None


class ProtocolError(Exception):
    """A peer (or the wire) broke Velocity/1. ``code`` is the CONNECTION_CLOSE error code.

    ``field`` names the wire field at fault (for example ``"STREAM.offset"``) and
    ``frame_type`` the frame being decoded, when known.
    """

    code: ErrorCode = ErrorCode.PROTOCOL_VIOLATION

    def __init__(self, reason: str, *, field: str | None = None, frame_type: int = 0) -> None:
        self.reason = reason
        self.field = field
        self.frame_type = frame_type
        super().__init__(f"{self.code.name}: {field}: {reason}" if field else
                         f"{self.code.name}: {reason}")


class InternalError(ProtocolError):
    code = ErrorCode.INTERNAL_ERROR


class ConnectionRefused(ProtocolError):
    code = ErrorCode.CONNECTION_REFUSED


class FlowControlError(ProtocolError):
    code = ErrorCode.FLOW_CONTROL_ERROR


class StreamLimitError(ProtocolError):
    code = ErrorCode.STREAM_LIMIT_ERROR


class StreamStateError(ProtocolError):
    code = ErrorCode.STREAM_STATE_ERROR


class FinalSizeError(ProtocolError):
    code = ErrorCode.FINAL_SIZE_ERROR


class FrameEncodingError(ProtocolError):
    code = ErrorCode.FRAME_ENCODING_ERROR


class TransportParameterError(ProtocolError):
    code = ErrorCode.TRANSPORT_PARAMETER_ERROR


class ConnectionIdLimitError(ProtocolError):
    code = ErrorCode.CONNECTION_ID_LIMIT_ERROR


class ProtocolViolation(ProtocolError):
    code = ErrorCode.PROTOCOL_VIOLATION


class InvalidToken(ProtocolError):
    code = ErrorCode.INVALID_TOKEN


class CryptoBufferExceeded(ProtocolError):
    code = ErrorCode.CRYPTO_BUFFER_EXCEEDED


class KeyUpdateError(ProtocolError):
    code = ErrorCode.KEY_UPDATE_ERROR


class AeadLimitReached(ProtocolError):
    code = ErrorCode.AEAD_LIMIT_REACHED


class PacketDropped(ProtocolViolation):
    """A packet that the spec says to discard silently (bad AEAD tag, missing keys, bad
    fixed bit). It never closes the connection; the connection layer counts and drops it."""


class AuthenticationFailed(PacketDropped):
    """A packet failed AEAD authentication; counted against the integrity limit."""


class BufferReadError(ProtocolViolation):
    """A read ran past the end of its input. Decoders re-raise it naming the field."""


class HandshakeFailure(ProtocolError):
    code = ErrorCode.HANDSHAKE_FAILURE


class DecodeError(ProtocolError):
    code = ErrorCode.DECODE_ERROR


class IllegalParameter(ProtocolError):
    code = ErrorCode.ILLEGAL_PARAMETER


class KemKeyRequired(ProtocolError):
    code = ErrorCode.KEM_KEY_REQUIRED


class StaleKemKey(ProtocolError):
    code = ErrorCode.STALE_KEM_KEY


class CertificateInvalid(ProtocolError):
    code = ErrorCode.CERTIFICATE_INVALID


class ProfilePolicyViolation(ProtocolError):
    code = ErrorCode.PROFILE_POLICY_VIOLATION


class BadFinished(ProtocolError):
    code = ErrorCode.BAD_FINISHED


class NoApplicationProtocol(ProtocolError):
    code = ErrorCode.NO_APPLICATION_PROTOCOL


class DowngradeDetected(ProtocolError):
    code = ErrorCode.DOWNGRADE_DETECTED


class UnexpectedMessage(ProtocolError):
    code = ErrorCode.UNEXPECTED_MESSAGE


class BadBinder(ProtocolError):
    code = ErrorCode.BAD_BINDER
