"""Events a ``Connection`` emits, as frozen slotted dataclasses with past-tense names. The
handshake's own events (completion, fallback, learned key) pass through unchanged."""

from __future__ import annotations

from dataclasses import dataclass

from velocity.core.handshake.common import (
    FallbackDirected,
    HandshakeCompleted,
    ServerKeyLearned,
    SessionTicket,
)


@dataclass(frozen=True, slots=True)
class StreamDataReceived:
    stream_id: int
    data: bytes
    end_stream: bool


@dataclass(frozen=True, slots=True)
class StreamReset:
    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class StopSendingReceived:
    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class TicketReceived:
    """A session ticket and the server's transport parameters, to resume (and send 0-RTT)."""

    ticket: SessionTicket
    transport_parameters: bytes


@dataclass(frozen=True, slots=True)
class NewTokenReceived:
    token: bytes


@dataclass(frozen=True, slots=True)
class HandshakeConfirmed:
    pass


@dataclass(frozen=True, slots=True)
class ApplicationKeysInstalled:
    """Client: 1-RTT data may be sent from now on: with its FINISHED in discovery mode
    (before the server is authenticated, which HandshakeCompleted reports), at completion
    otherwise."""


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The connection is over: ``by_peer`` when the peer closed it, ``reason`` says why;
    ``application`` when the code is the application's (0x1d, or a local application close),
    not a transport code of the registry."""

    error_code: int
    frame_type: int
    reason: str
    by_peer: bool
    application: bool = False


@dataclass(frozen=True, slots=True)
class InternalErrorRaised:
    """A fault of this implementation (an exception that is no protocol error) ended the
    connection's processing; it was closed with INTERNAL_ERROR. The driver reports
    ``exception`` once (the core does no logging)."""

    exception: Exception


Event = (StreamDataReceived | StreamReset | StopSendingReceived | TicketReceived
         | NewTokenReceived | HandshakeConfirmed | ApplicationKeysInstalled
         | ConnectionTerminated | HandshakeCompleted | FallbackDirected | ServerKeyLearned
         | InternalErrorRaised)
