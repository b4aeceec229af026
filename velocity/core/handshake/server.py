"""The server side of the Velocity/1 handshake (spec sections 7-14) as a table-driven,
sans-I/O state machine: ALPN and fallback decisions, profile/AEAD selection with
HELLO_RETRY, PDK, discovery and PSK resumption with 0-RTT, and ticket issue."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum, auto

from velocity.core.buffer import Reader
from velocity.core.entropy import Entropy
from velocity.core.errors import (
    BadBinder,
    BadFinished,
    BufferReadError,
    DecodeError,
    HandshakeFailure,
    IllegalParameter,
    KemKeyRequired,
    ProfilePolicyViolation,
    StaleKemKey,
)
from velocity.core.handshake.common import (
    ALPN_VELOCITY,
    AuthMode,
    FallbackDirected,
    HandshakeBase,
    HandshakeCompleted,
    KeysReady,
    ReplayFilter,
    StaticKey,
    TicketSealer,
    TicketState,
)
from velocity.core.handshake.messages import (
    Certificate,
    ClientHello,
    EncryptedExtensions,
    ExtensionType,
    Fallback,
    Finished,
    HelloRetry,
    KemCiphertext,
    Message,
    MessageType,
    NewSessionTicket,
    ServerHello,
    encode_message,
)
from velocity.core.hybrid import (
    BALANCED,
    LIGHT,
    PROFILES,
    SECURE,
    Profile,
    server_key_share,
)
from velocity.core.kem import KemBackend
from velocity.core.keyschedule import (
    KeySchedule,
    fallback_mac,
    finished_mac,
    macs_equal,
    resumption_psk,
    transcript_digest,
)
from velocity.core.packet import Epoch
from velocity.core.protection import Aead
from velocity.core.seams import ServerShareFactory

FALLBACK_REASONS = {0: "no Velocity/1 protocol offered", 1: "fallback-only mode", 2: "maintenance",
                    3: "no common profile under policy", 4: "no common AEAD", 5: "overload"}
EARLY_DATA_AGE_TOLERANCE_MS = 10_000


@dataclass(frozen=True)
class FallbackPolicy:
    """Where FALLBACK sends clients, and whether the server is in fallback-only or
    maintenance mode (``mode``: "off", "fallback-only", "maintenance")."""

    alpn: bytes = b"h3"
    host: str = ""
    port: int = 443
    mode: str = "off"
    retry_after: int = 0


@dataclass(frozen=True)
class ServerConfig:
    kem: KemBackend
    static_keys: tuple[StaticKey, ...] = ()
    profiles: tuple[Profile, ...] = (BALANCED, SECURE, LIGHT)
    aeads: tuple[Aead, ...] = (Aead.AES_128_GCM, Aead.AES_256_GCM, Aead.CHACHA20_POLY1305)
    publish_key: bool = True
    fallback: FallbackPolicy = field(default_factory=FallbackPolicy)
    ticket_sealer: TicketSealer | None = None
    replay_filter: ReplayFilter | None = None
    # seconds; at most the ticket-key rotation interval times (keys kept - 1), so a ticket
    # never outlives the key that opens it (VEL-RES-002)
    ticket_lifetime: int = 43200
    max_early_data: int = 65536
    grease: bool = True
    alpn: tuple[bytes, ...] = (ALPN_VELOCITY,)  # served over Velocity/1, preference order

    def current_key(self, profile: Profile) -> StaticKey | None:
        """The key CERTIFICATE publishes: the first one held for ``profile``."""
        return next((k for k in self.static_keys if k.profile == profile), None)

    def key_by_id(self, key_id: bytes) -> StaticKey | None:
        return next((k for k in self.static_keys if k.key_id == key_id), None)


class ServerState(Enum):
    START = auto()
    WAIT_CH2 = auto()
    WAIT_KEM_CT = auto()
    WAIT_CF = auto()
    WAIT_CF_DISCOVERY = auto()
    CONNECTED = auto()
    FALLBACK = auto()


_I, _H = Epoch.INITIAL, Epoch.HANDSHAKE
S = ServerState


@dataclass(frozen=True)
class _PskOffer:
    identity: bytes
    obfuscated_age: int
    binder: bytes


def _pull_psk(value: bytes) -> _PskOffer:
    reader = Reader(value)
    try:
        offer = _PskOffer(reader.pull_vec_varint(), reader.pull_uint32(), reader.pull_vec8())
    except BufferReadError as exc:
        raise DecodeError(f"truncated ({exc.reason})", field="CLIENT_HELLO.pre_shared_key") \
            from None
    if not reader.eof():
        raise DecodeError("trailing bytes", field="CLIENT_HELLO.pre_shared_key")
    return offer


def _pull_server_key(value: bytes) -> tuple[bytes, bytes]:
    reader = Reader(value)
    try:
        key_id, ciphertext = reader.pull_vec8(), reader.pull_vec_varint()
    except BufferReadError as exc:
        raise DecodeError(f"truncated ({exc.reason})", field="CLIENT_HELLO.server_key") from None
    if not reader.eof():
        raise DecodeError("trailing bytes", field="CLIENT_HELLO.server_key")
    return key_id, ciphertext


class ServerHandshake(HandshakeBase):
    IS_CLIENT = False
    TRANSITIONS = {
        S.START: {(_I, MessageType.CLIENT_HELLO): "_on_client_hello"},
        S.WAIT_CH2: {(_I, MessageType.CLIENT_HELLO): "_on_client_hello"},
        S.WAIT_KEM_CT: {(_H, MessageType.KEM_CIPHERTEXT): "_on_kem_ciphertext"},
        S.WAIT_CF: {(_H, MessageType.FINISHED): "_on_client_finished"},
        S.WAIT_CF_DISCOVERY: {(_H, MessageType.FINISHED): "_on_client_finished_discovery"},
    }
    MOVES = {
        S.START: frozenset({S.WAIT_CH2, S.WAIT_KEM_CT, S.WAIT_CF, S.FALLBACK}),
        S.WAIT_CH2: frozenset({S.WAIT_KEM_CT, S.WAIT_CF, S.FALLBACK}),
        S.WAIT_KEM_CT: frozenset({S.WAIT_CF_DISCOVERY}),
        S.WAIT_CF: frozenset({S.CONNECTED}),
        S.WAIT_CF_DISCOVERY: frozenset({S.CONNECTED}),
    }

    def __init__(self, config: ServerConfig, *, entropy: Entropy,
                 transport_parameters: bytes) -> None:
        super().__init__(entropy=entropy, transport_parameters=transport_parameters)
        self.state = S.START
        self.config = config
        self.static_key: StaticKey | None = None
        self._first_random = b""
        self._alpn = b""  # selected from the client's offer
        self._early_requested = False
        self._ticket_state: TicketState | None = None
        self._psk_offer: _PskOffer | None = None
        self.server_share_factory: ServerShareFactory | None = None  # velocity.core.seams

    # --- CLIENT_HELLO ------------------------------------------------------------------

    def _select(self, hello: ClientHello) -> tuple[Profile | None, Aead | None, int | None]:
        """(profile, aead, fallback reason or None)."""
        config = self.config
        profile = next((PROFILES[c] for c in hello.profiles
                        if c in PROFILES and PROFILES[c] in config.profiles), None)
        aead = next((Aead(a) for a in hello.aeads if a in config.aeads), None)
        reason: int | None = None
        self._alpn = next((a for a in config.alpn if a in hello.alpn), b"")
        if not self._alpn:
            reason = 0
        elif config.fallback.mode == "fallback-only":
            reason = 1
        elif config.fallback.mode == "maintenance":
            reason = 2
        elif profile is None:
            reason = 3
        elif aead is None:
            reason = 4
        if reason in (3, 4) and all(a in config.alpn for a in hello.alpn):
            if reason == 3:
                raise ProfilePolicyViolation("no offered profile is acceptable",
                                             field="CLIENT_HELLO.profiles")
            raise HandshakeFailure("no offered AEAD is acceptable", field="CLIENT_HELLO.aeads")
        return profile, aead, reason

    def _static_secret(self, hello: ClientHello) -> tuple[StaticKey | None, bytes | None]:
        """Decapsulate a PDK block: (key, ss_static), (None, None) without a block; a key id
        this server does not hold is STALE_KEM_KEY (VEL-AUTH-011)."""
        block = hello.extension(ExtensionType.SERVER_KEY)
        if block is None:
            return None, None
        key_id, ciphertext = _pull_server_key(block)
        key = self.config.key_by_id(key_id)
        if key is None:
            raise StaleKemKey("key id unknown to this server", field="CLIENT_HELLO.server_key")
        try:
            secret = key.key.decapsulate(ciphertext)
        except ValueError as exc:
            raise IllegalParameter(str(exc), field="CLIENT_HELLO.server_key") from None
        self._trace_kem("decapsulate", "static", key.profile.kem)
        return key, secret

    def _on_client_hello(self, message: Message, raw: bytes) -> None:
        assert isinstance(message, ClientHello)
        hello = message
        if self.state is S.WAIT_CH2 and hello.random != self._first_random:
            raise IllegalParameter("second CLIENT_HELLO changed its random",
                                   field="CLIENT_HELLO.random")
        self._first_random = hello.random
        params = hello.extension(ExtensionType.TRANSPORT_PARAMETERS)
        if params is None:
            raise HandshakeFailure("missing", field="CLIENT_HELLO.transport_parameters")
        self.peer_transport_parameters = params
        if (hello.extension(ExtensionType.SERVER_KEY) is not None
                and hello.extension(ExtensionType.PRE_SHARED_KEY) is not None):
            raise IllegalParameter("a resuming CLIENT_HELLO carries no server_key block",
                                   field="CLIENT_HELLO.server_key")
        # VEL-FB-011: the key check comes before any fallback decision, so that a client
        # holding a rotated-out key hears STALE_KEM_KEY, not an unauthenticated directive
        static_key, ss_static = self._static_secret(hello)
        profile, aead, reason = self._select(hello)
        if reason is not None:
            self._send_fallback(hello, raw, reason, static_key, ss_static)
            return
        assert profile is not None and aead is not None
        if hello.key_share_profile != profile.code:
            if self.state is S.WAIT_CH2:
                raise IllegalParameter("second CLIENT_HELLO ignored HELLO_RETRY",
                                       field="CLIENT_HELLO.key_share_profile")
            self.transcript.add(raw)
            self.transcript.replace_with_message_hash(profile.hash_name)
            self._send(Epoch.INITIAL, HelloRetry(profile.code))
            self._transition(S.WAIT_CH2)
            return
        self.profile, self.aead = profile, aead
        # VEL-HS-041: an early-data offer gets an answer, 0 when the PSK was not taken
        self._early_requested = hello.extension(ExtensionType.EARLY_DATA) is not None
        psk = self._accept_psk(hello, raw, profile)
        self.transcript.add(raw)
        if psk is not None:
            self.mode = AuthMode.RESUMPTION
            self._accept_early_data(hello, psk)
        elif static_key is not None:
            self.mode, self.static_key = AuthMode.PDK, static_key
        else:
            self.static_key = self.config.current_key(profile)
            if not self.config.publish_key or self.static_key is None:
                raise KemKeyRequired("this server does not publish its key; the client must "
                                     "supply it", field="CLIENT_HELLO.server_key")
            self.mode = AuthMode.DISCOVERY
        self._send_server_flight(hello, ss_static if self.mode is AuthMode.PDK else None)

    def _send_fallback(self, hello: ClientHello, client_hello: bytes, reason: int,
                       static_key: StaticKey | None, ss_static: bytes | None) -> None:
        """FALLBACK, MACed under the static-KEM secret of a PDK block (VEL-FB-003) or under
        the PSK of a resuming client (VEL-FB-010), advisory otherwise."""
        policy = self.config.fallback
        directive = Fallback(policy.alpn, policy.host.encode(), policy.port, reason,
                             FALLBACK_REASONS[reason].encode(), policy.retry_after)
        unsigned = encode_message(directive)
        if static_key is not None and ss_static is not None:
            directive = replace(directive, mac=fallback_mac(
                static_key.profile.hash_name, ss_static, client_hello, unsigned))
        elif (resumed := self._fallback_psk(hello, client_hello)) is not None:
            hash_name, psk = resumed
            directive = replace(directive, mac=fallback_mac(
                hash_name, psk, client_hello, unsigned, keyed_by="resumption"))
        self._send(Epoch.INITIAL, directive, record=False)
        self._emit(FallbackDirected(policy.alpn.decode(), policy.host, policy.port, reason,
                                    FALLBACK_REASONS[reason], policy.retry_after,
                                    bool(directive.mac)))
        self._transition(S.FALLBACK)

    def _fallback_psk(self, hello: ClientHello, raw: bytes) -> tuple[str, bytes] | None:
        """(hash, PSK) of an offered ticket this server can open, its binder verified under
        the ticket's profile; None when there is no such ticket."""
        opened = self._open_ticket(hello)
        if opened is None:
            return None
        offer, state = opened
        profile = PROFILES.get(state.profile)
        if profile is None:
            return None
        self._verify_binder(profile, state.psk, offer, raw)
        return profile.hash_name, state.psk

    def _open_ticket(self, hello: ClientHello) -> tuple[_PskOffer, TicketState] | None:
        """The offered PSK identity and the state its ticket seals, for a ticket this server
        issued that is within its lifetime; None otherwise (a full handshake follows)."""
        value = hello.extension(ExtensionType.PRE_SHARED_KEY)
        sealer = self.config.ticket_sealer
        if value is None or sealer is None:
            return None
        offer = _pull_psk(value)
        plaintext = sealer.open(offer.identity)
        state = TicketState.decode(plaintext) if plaintext is not None else None
        age = self.now_ms - state.issued_ms if state is not None else 0
        if state is None or age > self.config.ticket_lifetime * 1000 or (
                age < -EARLY_DATA_AGE_TOLERANCE_MS):  # issued in this server's future
            return None
        return offer, state

    def _verify_binder(self, profile: Profile, psk: bytes, offer: _PskOffer,
                       raw: bytes) -> KeySchedule:
        """VEL-RES-003: the binder over the transcript so far and the truncated message."""
        schedule = KeySchedule(profile.hash_name, psk)
        truncated = raw[: -(1 + len(offer.binder))]
        prior = b"".join(self.transcript.messages)
        expected = finished_mac(profile.hash_name, schedule.binder_key(),
                                transcript_digest(profile.hash_name, prior + truncated))
        if not macs_equal(offer.binder, expected):
            raise BadBinder("PSK binder does not verify", field="CLIENT_HELLO.pre_shared_key")
        return schedule

    def _accept_psk(self, hello: ClientHello, raw: bytes, profile: Profile) -> bytes | None:
        """The PSK of a ticket this server issued for this profile and ALPN, binder
        verified."""
        opened = self._open_ticket(hello)
        if opened is None:
            return None
        offer, state = opened
        if state.profile != profile.code or state.alpn != self._alpn:
            return None
        self.schedule = self._verify_binder(profile, state.psk, offer, raw)
        self._ticket_state, self._psk_offer = state, offer
        return state.psk

    def _forget_psk(self) -> None:
        self._ticket_state = self._psk_offer = None

    def _accept_early_data(self, hello: ClientHello, psk: bytes) -> None:
        """0-RTT only for a fresh, unreplayed first CLIENT_HELLO (VEL-RES-005, VEL-RES-007)."""
        if not self._early_requested:
            return
        state, offer = self._ticket_state, self._psk_offer
        assert state is not None and offer is not None  # set by _accept_psk
        client_age = (offer.obfuscated_age - self._ticket_age_add(state)) % (1 << 32)
        fresh = abs((self.now_ms - state.issued_ms) - client_age) <= EARLY_DATA_AGE_TOLERANCE_MS
        # the same CLIENT_HELLO stays fresh until this server time: the filter keeps its
        # binder until then (VEL-RES-007)
        fresh_until = state.issued_ms + client_age + EARLY_DATA_AGE_TOLERANCE_MS
        replay = self.config.replay_filter
        if (self.state is S.START and state.max_early_data > 0 and fresh
                and replay is not None
                and replay.accept(offer.binder, self.now_ms, fresh_until)):
            assert self.schedule is not None
            self.early_data_accepted = True
            early = self.schedule.client_early_secret(self.transcript.digest(
                self.schedule.hash_name))
            self._emit(KeysReady(Epoch.APPLICATION, False, early, Aead(state.aead),
                                 self.schedule.hash_name, early=True,
                                 early_limit=state.max_early_data))

    @staticmethod
    def _ticket_age_add(state: TicketState) -> int:
        """age_add is derived from the PSK so the ticket need not carry it."""
        return int.from_bytes(transcript_digest("sha256", b"age_add" + state.psk)[:4], "big")

    # --- the server's first flight -----------------------------------------------------

    def _send_server_flight(self, hello: ClientHello, ss_static: bytes | None) -> None:
        profile, aead = self.profile, self.aead
        assert profile is not None and aead is not None and self.mode is not None
        share, hybrid = (self.server_share_factory or server_key_share)(
            profile, self.config.kem, hello.key_share, self._entropy)
        self._trace_kem("encapsulate", "ephemeral", profile.kem)
        self._trace_hybrid(hybrid, len(hello.key_share), len(share))
        self.hybrid = hybrid
        self._send(Epoch.INITIAL, ServerHello(
            self._entropy.random(32), profile.code, int(aead), share,
            int(self.mode is AuthMode.RESUMPTION), int(self.mode is AuthMode.PDK)))
        self.transcript.settle(profile.hash_name)
        if self.schedule is None:
            self.schedule = KeySchedule(profile.hash_name)
        self.schedule.enter_handshake(hybrid.shared_secret + (ss_static or b""))
        client_hs, server_hs = self.schedule.handshake_secrets(self._digest())
        self._secrets.update(client_hs=client_hs, server_hs=server_hs)
        self._install_keys(Epoch.HANDSHAKE, client_hs, server_hs)
        extensions = [(int(ExtensionType.TRANSPORT_PARAMETERS), self._transport_parameters)]
        if self._early_requested:
            extensions.append((ExtensionType.EARLY_DATA,
                               b"\x01" if self.early_data_accepted else b"\x00"))
        if self.config.grease:
            n = self._entropy.random(1)[0]
            extensions.append((31 * n + 27, self._entropy.random(n % 17)))
        self._send(Epoch.HANDSHAKE, EncryptedExtensions(self._alpn, int(aead),
                                                        tuple(extensions)))
        if self.mode is AuthMode.DISCOVERY:
            assert self.static_key is not None
            self._send(Epoch.HANDSHAKE, Certificate(self.static_key.certificate_chain),
                       encoded=self.static_key.certificate_message)
            self._transition(S.WAIT_KEM_CT)
            return
        self._send(Epoch.HANDSHAKE, Finished(finished_mac(profile.hash_name, server_hs,
                                                          self._digest())))
        self._install_application()
        self._transition(S.WAIT_CF)

    # --- Handshake space ---------------------------------------------------------------

    def _on_kem_ciphertext(self, message: Message, raw: bytes) -> None:
        assert isinstance(message, KemCiphertext)
        assert self.static_key is not None and self.schedule is not None
        key = self.static_key.key
        if len(message.ciphertext) != key.params.sizes.ciphertext:
            raise IllegalParameter(f"{len(message.ciphertext)} bytes, expected "
                                   f"{key.params.sizes.ciphertext}",
                                   field="KEM_CIPHERTEXT.ciphertext")
        self.transcript.add(raw)
        self.schedule.enter_authenticated(key.decapsulate(message.ciphertext))
        self._trace_kem("decapsulate", "static", key.params)
        client_ahs, server_ahs = self.schedule.authenticated_secrets(self._digest())
        self._secrets.update(client_ahs=client_ahs, server_ahs=server_ahs)
        self._transition(S.WAIT_CF_DISCOVERY)

    def _verify_client_finished(self, message: Message, raw: bytes, base: str) -> None:
        assert isinstance(message, Finished) and self.profile is not None
        expected = finished_mac(self.profile.hash_name, self._secrets[base], self._digest())
        if not macs_equal(message.verify_data, expected):
            raise BadFinished("client FINISHED does not verify", field="FINISHED.verify_data")
        self.transcript.add(raw)

    def _on_client_finished(self, message: Message, raw: bytes) -> None:
        self._verify_client_finished(message, raw, "client_hs")
        self._complete()

    def _on_client_finished_discovery(self, message: Message, raw: bytes) -> None:
        assert self.profile is not None
        self._verify_client_finished(message, raw, "client_ahs")
        self._install_application()
        through_client_finished = self._digest()
        self._send(Epoch.HANDSHAKE, Finished(finished_mac(
            self.profile.hash_name, self._secrets["server_ahs"], through_client_finished)))
        self._complete(through_client_finished)

    def _complete(self, through_client_finished: bytes | None = None) -> None:
        assert self.schedule is not None and self.profile is not None and self.aead
        assert self.mode is not None
        resumption = self.schedule.resumption_secret(through_client_finished or self._digest())
        self._emit(HandshakeCompleted(
            self._alpn.decode(), self.profile.name, self.aead.name, self.mode,
            self.early_data_accepted, self.static_key.key_id if self.static_key else None,
            self.peer_transport_parameters, self.config.kem.name_for(self.profile.kem)))
        self._transition(S.CONNECTED)
        if self.config.ticket_sealer is not None:
            self._issue_ticket(resumption)
        self._erase_secrets()

    def _issue_ticket(self, resumption: bytes) -> None:
        assert self.profile is not None and self.aead is not None
        sealer = self.config.ticket_sealer
        assert sealer is not None
        nonce = self._entropy.random(8)
        psk = resumption_psk(self.profile.hash_name, resumption, nonce)
        state = TicketState(self.now_ms, self.profile.code, int(self.aead), self._alpn,
                            self.config.max_early_data, psk)
        ticket = sealer.seal(state.encode(), self._entropy.random(12))
        self._send(Epoch.APPLICATION, NewSessionTicket(
            self.config.ticket_lifetime, self._ticket_age_add(state), nonce, ticket,
            self.config.max_early_data), record=False)
