"""What the client and server handshakes share: the transcript, the events they emit, the
interfaces they need from outside the core (certificate validation, ticket sealing), the
anti-replay filter, and the table-driven state machine base."""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, Protocol

from velocity.core.buffer import Reader, Writer
from velocity.core.entropy import Entropy
from velocity.core.errors import BufferReadError, InternalError, UnexpectedMessage
from velocity.core.handshake.messages import (
    Certificate,
    Message,
    MessageReader,
    MessageType,
    decode_message,
    encode_message,
)
from velocity.core.hybrid import HybridSecret, Profile
from velocity.core.kem import KemKey, KemParams
from velocity.core.keyschedule import KeySchedule
from velocity.core.packet import EPOCHS, Epoch
from velocity.core.protection import Aead
from velocity.core.seams import MessageHook
from velocity.core.trace import describe, digest

ALPN_VELOCITY = b"velocity/1"
MESSAGE_HASH = 0xFE


class Transcript:
    """The transcript of one handshake (spec VEL-HS-104): the messages, and a running hash
    per hash function asked for, so each digest costs only the new bytes. Once the
    handshake's hash is settled (``settle``) only its running hash is kept, not the
    messages: a half-open connection does not hold its ClientHello and ServerHello twice."""

    def __init__(self) -> None:
        self._messages: list[bytes] | None = []
        self._running: dict[str, Any] = {}

    def add(self, raw: bytes) -> None:
        if self._messages is not None:
            self._messages.append(raw)
        for running in self._running.values():
            running.update(raw)

    def digest(self, hash_name: str) -> bytes:
        running = self._running.get(hash_name)
        if running is None:
            running = self._running[hash_name] = hashlib.new(hash_name,
                                                             b"".join(self._kept()))
        digest: bytes = running.copy().digest()
        return digest

    def settle(self, hash_name: str) -> None:
        """No other hash and no HELLO_RETRY rewrite can come: forget the messages."""
        self.digest(hash_name)
        self._running = {hash_name: self._running[hash_name]}
        self._messages = None

    def _kept(self) -> list[bytes]:
        if self._messages is None:
            raise InternalError("the transcript's messages were forgotten when its hash "
                                "was settled")
        return self._messages

    def replace_with_message_hash(self, hash_name: str) -> None:
        """After HELLO_RETRY: CLIENT_HELLO1 becomes 0xfe || u24 Hash.length || Hash(CH1)."""
        messages = self._kept()
        first = hashlib.new(hash_name, messages[0]).digest()
        messages[0] = bytes([MESSAGE_HASH]) + len(first).to_bytes(3, "big") + first
        self._running.clear()

    @property
    def messages(self) -> tuple[bytes, ...]:
        return tuple(self._kept())


class AuthMode(Enum):
    PDK = "pdk"
    DISCOVERY = "discovery"
    RESUMPTION = "resumption"


# --- events --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeysReady:
    """Packet keys for ``epoch`` in one direction (``send`` from this endpoint's view)."""

    epoch: Epoch
    send: bool
    secret: bytes
    aead: Aead
    hash_name: str
    early: bool = False
    early_limit: int = 0  # 0-RTT keys: the ticket's max_early_data (VEL-HS-081)


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    alpn: str
    profile: str
    aead: str
    mode: AuthMode
    early_data_accepted: bool
    key_id: bytes | None
    peer_transport_parameters: bytes
    kem_backend: str


@dataclass(frozen=True, slots=True)
class FallbackDirected:
    """The server sent FALLBACK; ``authenticated`` when its MAC verified (VEL-FB-004)."""

    alpn: str
    host: str
    port: int
    reason: int
    reason_text: str
    retry_after: int
    authenticated: bool


@dataclass(frozen=True, slots=True)
class ServerKeyLearned:
    """Discovery mode validated a certificate: the key a client caches for PDK next time."""

    key_id: bytes
    profile: int
    encapsulation_key: bytes
    certificate_chain: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SessionTicket:
    """A ticket as the client keeps it (spec section 14)."""

    ticket: bytes
    psk: bytes
    profile: int
    aead: int
    alpn: bytes
    age_add: int
    lifetime: int
    issued_ms: int
    max_early_data: int
    server_name: str | None


@dataclass(frozen=True, slots=True)
class TicketIssued:
    ticket: SessionTicket


HandshakeEvent = KeysReady | HandshakeCompleted | FallbackDirected | ServerKeyLearned | TicketIssued


# --- interfaces from outside the core ------------------------------------------------


class CertificateVerifier(Protocol):
    def verify(self, chain: Sequence[bytes], profile: Profile, server_name: str | None) -> bytes:
        """Validate a DER chain (leaf first); return the leaf's ML-KEM encapsulation key or
        raise ``CertificateInvalid``."""
        ...


class TicketSealer(Protocol):
    def seal(self, plaintext: bytes, nonce: bytes) -> bytes: ...

    def open(self, ticket: bytes) -> bytes | None:
        """The plaintext, or None for a ticket this server cannot open."""
        ...


@dataclass(frozen=True)
class StaticKey:
    """One static ML-KEM key a server holds, with its certificate chain (leaf first)."""

    profile: Profile
    key: KemKey
    key_id: bytes
    certificate_chain: tuple[bytes, ...] = ()

    @cached_property
    def certificate_message(self) -> bytes:
        """The encoded CERTIFICATE message of this key's chain, encoded once for every
        connection it is sent to (a flood of discovery handshakes encoded it for each). A
        rotated key is a new ``StaticKey``, with a cache of its own."""
        return encode_message(Certificate(self.certificate_chain))


def key_id_for(profile_code: int, encapsulation_key: bytes) -> bytes:
    """VEL-AUTH-002: SHA-256(u16 profile || encapsulation key)[0..8]."""
    return hashlib.sha256(profile_code.to_bytes(2, "big") + encapsulation_key).digest()[:8]


@dataclass(frozen=True)
class TicketState:
    """What a ticket seals (VEL-RES-002)."""

    issued_ms: int
    profile: int
    aead: int
    alpn: bytes
    max_early_data: int
    psk: bytes

    def encode(self) -> bytes:
        writer = Writer()
        writer.push_uint(self.issued_ms, 8)
        writer.push_uint16(self.profile)
        writer.push_uint16(self.aead)
        writer.push_vec8(self.alpn)
        writer.push_uint32(self.max_early_data)
        writer.push_vec8(self.psk)
        return writer.data()

    @classmethod
    def decode(cls, data: bytes) -> TicketState | None:
        reader = Reader(data)
        try:
            state = cls(reader.pull_uint(8), reader.pull_uint16(), reader.pull_uint16(),
                        reader.pull_vec8(), reader.pull_uint32(), reader.pull_vec8())
        except BufferReadError:
            return None
        return state if reader.eof() else None


class ReplayFilter:
    """Bounded anti-replay filter of PSK binders (VEL-RES-007): each binder is kept until the
    last moment at which its CLIENT_HELLO would still pass the freshness check
    (``expires_ms``, VEL-RES-005), so a replay is refused for as long as it could otherwise be
    accepted; when full, everything is refused until entries expire. Expired entries go at
    the next ``accept`` or ``expire``; a server calls ``expire`` now and then, so that entries
    made during a burst do not stay (each would pin the allocator's memory around it)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: dict[bytes, int] = {}
        self._expiry: list[tuple[int, bytes]] = []  # heap of (expires_ms, binder)
        self._high = 0  # entries held at most since the dict was last rebuilt

    def expire(self, now_ms: int) -> None:
        """Forget the binders whose CLIENT_HELLOs are no longer fresh at ``now_ms``; once
        at most a quarter of the high-water mark is left, the dict is rebuilt (a dict keeps
        the size it grew to)."""
        while self._expiry and self._expiry[0][0] < now_ms:
            _, old = heapq.heappop(self._expiry)
            self._seen.pop(old, None)
        if self._high and len(self._seen) <= self._high // 4:
            self._seen = dict(self._seen)
            self._high = len(self._seen)

    def accept(self, binder: bytes, now_ms: int, expires_ms: int) -> bool:
        if self._expiry and self._expiry[0][0] < now_ms:
            self.expire(now_ms)
        if binder in self._seen or len(self._seen) >= self.capacity:
            return False
        self._seen[binder] = expires_ms
        self._high = max(self._high, len(self._seen))
        heapq.heappush(self._expiry, (expires_ms, binder))
        return True


# --- state machine base --------------------------------------------------------------


Handler = Callable[[Message, bytes], None]


@dataclass
class _Pending:
    crypto: dict[Epoch, bytearray] = field(
        default_factory=lambda: {e: bytearray() for e in EPOCHS})
    events: deque[HandshakeEvent] = field(default_factory=deque)


class HandshakeBase:
    """Table-driven state machine: ``TRANSITIONS[state]`` maps (epoch, message type) to a
    handler method name, anything else being UNEXPECTED_MESSAGE (VEL-HS-001, VEL-HS-100);
    ``MOVES[state]`` lists the states a handler may move to, and ``_transition`` refuses the
    rest."""

    TRANSITIONS: dict[Enum, dict[tuple[Epoch, MessageType], str]] = {}
    MOVES: dict[Enum, frozenset[Enum]] = {}
    IS_CLIENT: bool

    def __init__(self, *, entropy: Entropy, transport_parameters: bytes) -> None:
        self.state: Enum
        self.transcript = Transcript()
        self._readers = {epoch: MessageReader() for epoch in EPOCHS}
        self._pending = _Pending()
        self._entropy = entropy
        self._transport_parameters = transport_parameters
        self.now_ms = 0
        self.profile: Profile | None = None
        self.aead: Aead | None = None
        self.mode: AuthMode | None = None
        self.schedule: KeySchedule | None = None
        self.early_data_accepted = False
        self.peer_transport_parameters = b""
        self._secrets: dict[str, bytes] = {}
        self.hybrid: HybridSecret | None = None
        self.static_secret: bytes | None = None
        self.trace: Callable[[str, dict[str, Any]], None] | None = None  # the connection's
        # known-answer vectors keep the schedule's steps and shared secrets to record them;
        # otherwise they are erased when the handshake completes (VEL-KS-006)
        self.keep_secrets = False
        self.message_hook: MessageHook | None = None  # seam: see velocity.core.seams

    def _trace_kem(self, operation: str, key: str, params: KemParams) -> None:
        if self.trace is not None:
            self.trace("velocity:kem_operation", {"operation": operation, "key": key,
                                                  "kem": params.value})

    def _trace_hybrid(self, hybrid: HybridSecret, client_share: int, server_share: int) -> None:
        """The hybrid secret's halves and the share sizes (VEL-PROF-002), as digests."""
        if self.trace is not None:
            assert self.profile is not None
            self.trace("velocity:key_share", {
                "profile": self.profile.name, "group": self.profile.group_name,
                "client_share_length": client_share, "server_share_length": server_share,
                "ecdh_secret": digest(hybrid.ecdh_secret),
                "kem_secret": digest(hybrid.kem_secret),
                "shared_secret": digest(hybrid.shared_secret)})
    def _digest(self) -> bytes:
        """The transcript hash so far under the negotiated profile's hash."""
        assert self.profile is not None  # only called once a profile is chosen
        return self.transcript.digest(self.profile.hash_name)

    def _install_keys(self, epoch: Epoch, client_secret: bytes, server_secret: bytes) -> None:
        """Emit this endpoint's send and receive keys for ``epoch``."""
        assert self.profile is not None and self.aead is not None
        mine, theirs = ((client_secret, server_secret) if self.IS_CLIENT
                        else (server_secret, client_secret))
        self._emit(KeysReady(epoch, True, mine, self.aead, self.profile.hash_name))
        self._emit(KeysReady(epoch, False, theirs, self.aead, self.profile.hash_name))

    def _application_secrets(self) -> tuple[bytes, bytes]:
        """Enter the master secret: (client_ap_secret, server_ap_secret) over the transcript
        so far."""
        assert self.schedule is not None
        self.schedule.enter_master()
        client_ap, server_ap, _ = self.schedule.application_secrets(self._digest())
        return client_ap, server_ap

    def _install_application(self) -> None:
        """Enter the master secret and install the 1-RTT keys over the transcript so far."""
        self._install_keys(Epoch.APPLICATION, *self._application_secrets())

    def _send(self, epoch: Epoch, message: Message, *, record: bool = True,
              encoded: bytes | None = None) -> bytes:
        """Queue ``message`` (``encoded``: its encoding, when already at hand) in ``epoch``;
        its bytes, as recorded in the transcript."""
        if self.message_hook is not None:
            hooked = self.message_hook(message)
            if hooked is None:
                return b""
            if hooked is not message:
                message, encoded = hooked, None
        raw = encode_message(message) if encoded is None else encoded
        self._trace_sent(epoch, message, raw)
        if record:
            self.transcript.add(raw)
        self._pending.crypto[epoch] += raw
        return raw

    def _erase_secrets(self) -> None:
        """VEL-KS-006: once the traffic and resumption secrets exist, forget what led to
        them (shared secrets, stage secrets, FINISHED base keys)."""
        if self.keep_secrets:
            return
        self._secrets.clear()
        self.hybrid = self.static_secret = None
        self._forget_psk()
        if self.schedule is not None:
            self.schedule.erase()
            self.schedule = None

    def _trace_sent(self, epoch: Epoch, message: Message, raw: bytes) -> None:
        if self.trace is not None:
            self.trace("velocity:message_sent", {"epoch": epoch.name.lower(), "length": len(raw),
                                                 **describe(message, kind="message_type")})

    def _forget_psk(self) -> None:
        """The resumed session's PSK, once the handshake no longer needs it."""

    def _emit(self, event: HandshakeEvent) -> None:
        self._pending.events.append(event)

    def receive(self, epoch: Epoch, data: bytes, *, now_ms: int) -> None:
        """Feed in-order CRYPTO data of ``epoch``; raises ``ProtocolError`` on any failure."""
        self.now_ms = now_ms
        for msg_type, body, raw in self._readers[epoch].feed(data):
            table = self.TRANSITIONS.get(self.state, {})
            try:
                handler_name = table[(epoch, MessageType(msg_type))]
            except (KeyError, ValueError):
                raise UnexpectedMessage(
                    f"message 0x{msg_type:02x} in {epoch.name} while {self.state.name}",
                    field="msg_type") from None
            handler: Handler = getattr(self, handler_name)
            message = decode_message(msg_type, body)
            if self.trace is not None:
                self.trace("velocity:message_received", {
                    "epoch": epoch.name.lower(), "length": len(raw),
                    **describe(message, kind="message_type")})
            handler(message, raw)

    def data_to_send(self, epoch: Epoch) -> bytes:
        data = bytes(self._pending.crypto[epoch])
        self._pending.crypto[epoch].clear()
        return data

    def next_event(self) -> HandshakeEvent | None:
        return self._pending.events.popleft() if self._pending.events else None

    def _transition(self, new_state: Enum) -> None:
        if new_state not in self.MOVES.get(self.state, frozenset()):
            raise InternalError(f"illegal move {self.state.name} -> {new_state.name}")
        self.state = new_state
