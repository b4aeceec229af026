"""The client side of the Velocity/1 handshake (spec sections 7-14) as a table-driven,
sans-I/O state machine: it emits CRYPTO bytes per packet-number space and events (keys,
completion, fallback, learned server key, tickets)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from velocity.core.buffer import Writer
from velocity.core.entropy import Entropy
from velocity.core.errors import (
    BadFinished,
    DowngradeDetected,
    HandshakeFailure,
    IllegalParameter,
    NoApplicationProtocol,
)
from velocity.core.handshake.common import (
    ALPN_VELOCITY,
    AuthMode,
    CertificateVerifier,
    FallbackDirected,
    HandshakeBase,
    HandshakeCompleted,
    KeysReady,
    ServerKeyLearned,
    SessionTicket,
    TicketIssued,
    key_id_for,
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
from velocity.core.hybrid import BALANCED, PROFILES, ClientKeyShare, Profile
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
from velocity.core.seams import ClientShareFactory, KeyShare

GREASE_BASE = 27


def _without_mac(raw: bytes, mac_length: int) -> bytes:
    """A received FALLBACK (header included) as the MAC covers it: the same bytes with its
    ``mac`` vector emptied (VEL-FB-003), not a re-encoding of the decoded fields."""
    body = raw[4 : len(raw) - 1 - mac_length] + b"\x00"
    return raw[:1] + len(body).to_bytes(3, "big") + body


@dataclass(frozen=True)
class PinnedServerKey:
    """A server's static ML-KEM key known in advance (PDK mode)."""

    profile: Profile
    encapsulation_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id_for(self.profile.code, self.encapsulation_key)


@dataclass(frozen=True)
class ClientConfig:
    kem: KemBackend
    alpn: tuple[bytes, ...] = (ALPN_VELOCITY,)
    profiles: tuple[Profile, ...] = (BALANCED,)
    aeads: tuple[Aead, ...] = (Aead.AES_128_GCM, Aead.AES_256_GCM, Aead.CHACHA20_POLY1305)
    server_name: str | None = None
    server_key: PinnedServerKey | None = None
    verifier: CertificateVerifier | None = None
    ticket: SessionTicket | None = None
    early_data: bool = False
    grease: bool = True
    # the client has an authenticated relationship with this origin (a cached or pinned key,
    # a trust-on-first-use pin, a ticket) even if it sends no server_key block or PSK now
    # (rediscovery after STALE_KEM_KEY): an unauthenticated FALLBACK is then DOWNGRADE_DETECTED
    # (VEL-FB-008); a server_key block or a ticket implies it
    known_origin: bool = False


class ClientState(Enum):
    START = auto()
    WAIT_SH = auto()
    WAIT_EE = auto()
    WAIT_CERT = auto()
    WAIT_SF = auto()
    WAIT_SF_DISCOVERY = auto()
    CONNECTED = auto()
    FALLBACK = auto()


_I, _H, _A = Epoch.INITIAL, Epoch.HANDSHAKE, Epoch.APPLICATION
S = ClientState


class ClientHandshake(HandshakeBase):
    IS_CLIENT = True
    TRANSITIONS = {
        S.WAIT_SH: {(_I, MessageType.SERVER_HELLO): "_on_server_hello",
                    (_I, MessageType.HELLO_RETRY): "_on_hello_retry",
                    (_I, MessageType.FALLBACK): "_on_fallback"},
        S.WAIT_EE: {(_H, MessageType.ENCRYPTED_EXTENSIONS): "_on_encrypted_extensions"},
        S.WAIT_CERT: {(_H, MessageType.CERTIFICATE): "_on_certificate"},
        S.WAIT_SF: {(_H, MessageType.FINISHED): "_on_server_finished"},
        S.WAIT_SF_DISCOVERY: {(_H, MessageType.FINISHED): "_on_server_finished_discovery"},
        S.CONNECTED: {(_A, MessageType.NEW_SESSION_TICKET): "_on_new_session_ticket"},
    }
    MOVES = {
        S.START: frozenset({S.WAIT_SH}),
        S.WAIT_SH: frozenset({S.WAIT_SH, S.WAIT_EE, S.FALLBACK}),
        S.WAIT_EE: frozenset({S.WAIT_CERT, S.WAIT_SF}),
        S.WAIT_CERT: frozenset({S.WAIT_SF_DISCOVERY}),
        S.WAIT_SF: frozenset({S.CONNECTED}),
        S.WAIT_SF_DISCOVERY: frozenset({S.CONNECTED}),
    }

    def __init__(self, config: ClientConfig, *, entropy: Entropy,
                 transport_parameters: bytes) -> None:
        super().__init__(entropy=entropy, transport_parameters=transport_parameters)
        self.state = S.START
        self.config = config
        self._share: KeyShare | None = None
        self.key_share_factory: ClientShareFactory | None = None  # seam: velocity.core.seams
        self._ticket = config.ticket
        self._early_data = bool(config.ticket and config.early_data
                                and config.ticket.max_early_data > 0)
        self._retried = False
        self._client_hello = b""
        self._random = b""
        self._key_id: bytes | None = None
        self._pdk_ciphertext = b""
        self._through_client_finished = b""
        self._resumption = b""
        self._alpn = b""  # the server's selection from our offer
        # VEL-FB-008: fixed at the start, so a forged HELLO_RETRY that makes the client drop
        # its ticket does not make an unauthenticated directive acceptable
        self._known_origin = bool(config.known_origin or config.server_key or config.ticket)

    # --- CLIENT_HELLO ------------------------------------------------------------------

    def _offered_profiles(self) -> tuple[Profile, ...]:
        profiles = self.config.profiles
        if self._ticket is not None:
            first = PROFILES[self._ticket.profile]
            profiles = (first, *(p for p in profiles if p != first))
        return profiles

    def start(self, *, now_ms: int) -> None:
        self.now_ms = now_ms
        self._random = self._entropy.random(32)
        profiles = self._offered_profiles()
        self._send_client_hello(profiles, profiles[0])
        self._transition(S.WAIT_SH)

    def _extensions(self) -> list[tuple[int, bytes]]:
        config = self.config
        ext: list[tuple[int, bytes]] = []
        if config.server_name:
            ext.append((ExtensionType.SERVER_NAME, config.server_name.encode()))
        ext.append((ExtensionType.TRANSPORT_PARAMETERS, self._transport_parameters))
        if config.server_key is not None and self._sent_pdk():
            if self.static_secret is None:
                ciphertext, self.static_secret = config.kem.encapsulate(
                    config.server_key.profile.kem, config.server_key.encapsulation_key,
                    self._entropy.random(32))
                self._trace_kem("encapsulate", "static", config.server_key.profile.kem)
                self._pdk_ciphertext = ciphertext
            block = Writer()
            block.push_vec8(config.server_key.key_id)
            block.push_vec_varint(self._pdk_ciphertext)
            ext.append((ExtensionType.SERVER_KEY, block.data()))
        if self._early_data:
            ext.append((ExtensionType.EARLY_DATA, b""))
        if config.grease:
            n = self._entropy.random(1)[0]
            ext.append((31 * n + GREASE_BASE, self._entropy.random(n % 17)))
        return ext

    def _send_client_hello(self, profiles: tuple[Profile, ...], share_profile: Profile) -> None:
        config = self.config
        self._share = (self.key_share_factory or ClientKeyShare)(share_profile, config.kem,
                                                                  self._entropy)
        ext = self._extensions()
        ticket = self._ticket
        if ticket is not None:
            hash_length = PROFILES[ticket.profile].hash_length
            age = (self.now_ms - ticket.issued_ms + ticket.age_add) % (1 << 32)
            identity = Writer()
            identity.push_vec_varint(ticket.ticket)
            identity.push_uint32(age)
            identity.push_vec8(bytes(hash_length))
            ext.append((ExtensionType.PRE_SHARED_KEY, identity.data()))
        hello: Message = ClientHello(self._random, config.alpn, tuple(p.code for p in profiles),
                                     tuple(int(a) for a in config.aeads),
                                     self._share.profile.code, self._share.share, tuple(ext))
        if self.message_hook is not None:
            hooked = self.message_hook(hello)
            if hooked is None:
                return
            hello = hooked
        raw = encode_message(hello)
        if ticket is not None:
            raw = self._bind_psk(raw, ticket)
        self._trace_sent(Epoch.INITIAL, hello, raw)
        self.transcript.add(raw)
        self._pending.crypto[Epoch.INITIAL] += raw
        self._client_hello = raw
        if ticket is not None and self._early_data:
            assert self.schedule is not None  # set by _bind_psk
            early = self.schedule.client_early_secret(
                self.transcript.digest(self.schedule.hash_name))
            self._emit(KeysReady(Epoch.APPLICATION, True, early, Aead(ticket.aead),
                                 self.schedule.hash_name, early=True,
                                 early_limit=ticket.max_early_data))

    def _bind_psk(self, raw: bytes, ticket: SessionTicket) -> bytes:
        """Replace the placeholder binder (the message's last H bytes) by the real one."""
        profile = PROFILES[ticket.profile]
        self.schedule = KeySchedule(profile.hash_name, ticket.psk)
        truncated = raw[: -(1 + profile.hash_length)]
        prior = b"".join(self.transcript.messages)
        binder = finished_mac(profile.hash_name, self.schedule.binder_key(),
                              transcript_digest(profile.hash_name, prior + truncated))
        return truncated + bytes([len(binder)]) + binder

    # --- Initial space -----------------------------------------------------------------

    def _on_hello_retry(self, message: Message, raw: bytes) -> None:
        assert isinstance(message, HelloRetry)
        offered = self._offered_profiles()
        chosen = PROFILES.get(message.selected_profile)
        if self._retried or chosen is None or chosen not in offered or (
                self._share is not None and chosen == self._share.profile):
            raise IllegalParameter("HELLO_RETRY cannot be honoured",
                                   field="HELLO_RETRY.selected_profile")
        self._retried = True
        if self._ticket is not None and self._ticket.profile != chosen.code:
            self._ticket = None
            self.schedule = None
        self._early_data = False
        self.transcript.replace_with_message_hash(chosen.hash_name)
        self.transcript.add(raw)
        self._send_client_hello(offered, chosen)
        self._transition(S.WAIT_SH)

    def _on_fallback(self, message: Message, raw: bytes) -> None:
        """VEL-FB-004, VEL-FB-008, VEL-FB-010: a client that sent a server_key block or a PSK
        accepts only a directive MACed over its CLIENT_HELLO as sent; one that knows the
        origin accepts no unauthenticated directive."""
        assert isinstance(message, Fallback)
        unsigned = _without_mac(raw, len(message.mac))
        expected: bytes | None = None
        if self._sent_pdk() and self.static_secret is not None:
            assert self.config.server_key is not None
            expected = fallback_mac(self.config.server_key.profile.hash_name,
                                    self.static_secret, self._client_hello, unsigned)
        elif self._ticket is not None:
            expected = fallback_mac(PROFILES[self._ticket.profile].hash_name, self._ticket.psk,
                                    self._client_hello, unsigned, keyed_by="resumption")
        if expected is not None and not macs_equal(message.mac, expected):
            raise DowngradeDetected("FALLBACK is not authenticated by the server's key or "
                                    "the session's PSK", field="FALLBACK.mac")
        if expected is None and self._known_origin:
            raise DowngradeDetected("unauthenticated FALLBACK from an origin known to speak "
                                    "Velocity/1", field="FALLBACK.mac")
        self._emit(FallbackDirected(message.alpn.decode(errors="replace"),
                                    message.host.decode(errors="replace"), message.port,
                                    message.reason,
                                    message.reason_text.decode(errors="replace"),
                                    message.retry_after, expected is not None))
        self._transition(S.FALLBACK)

    def _forget_psk(self) -> None:
        self._ticket = None  # its PSK (the configuration keeps what the caller passed)

    def _sent_pdk(self) -> bool:
        """Whether the CLIENT_HELLO carried a server_key block (never beside a PSK)."""
        return self.config.server_key is not None and self._ticket is None

    def _on_server_hello(self, message: Message, raw: bytes) -> None:
        assert isinstance(message, ServerHello) and self._share is not None
        profile = self._share.profile
        if message.selected_profile != profile.code:
            raise IllegalParameter("differs from the key share's profile",
                                   field="SERVER_HELLO.selected_profile")
        if message.selected_aead not in self.config.aeads:
            raise IllegalParameter("not offered", field="SERVER_HELLO.selected_aead")
        sent_pdk = self._sent_pdk()
        if message.psk_status and self._ticket is None:
            raise IllegalParameter("PSK accepted but none was offered",
                                   field="SERVER_HELLO.psk_status")
        if message.server_key_status != int(sent_pdk):
            raise IllegalParameter("does not match the server_key block the client sent",
                                   field="SERVER_HELLO.server_key_status")
        self.transcript.add(raw)
        self.profile, self.aead = profile, Aead(message.selected_aead)
        self.hybrid = self._share.finish(message.key_share)
        self._trace_kem("decapsulate", "ephemeral", profile.kem)
        self._trace_hybrid(self.hybrid, profile.client_share_size, len(message.key_share))
        self._share = None  # the ephemeral private keys are no longer needed (VEL-KS-006)
        if message.psk_status:
            self.mode = AuthMode.RESUMPTION
        elif sent_pdk:
            self.mode = AuthMode.PDK
        else:
            self.mode = AuthMode.DISCOVERY
            self.schedule = None
        if self.schedule is None:
            self.schedule = KeySchedule(profile.hash_name)
        ikm = self.hybrid.shared_secret
        if self.mode is AuthMode.PDK:
            assert self.static_secret is not None
            ikm += self.static_secret
        self.schedule.enter_handshake(ikm)
        client_hs, server_hs = self.schedule.handshake_secrets(self._digest())
        self._secrets.update(client_hs=client_hs, server_hs=server_hs)
        self._install_keys(Epoch.HANDSHAKE, client_hs, server_hs)
        self._transition(S.WAIT_EE)

    # --- Handshake space ---------------------------------------------------------------

    def _on_encrypted_extensions(self, message: Message, raw: bytes) -> None:
        assert isinstance(message, EncryptedExtensions)
        if message.alpn not in self.config.alpn:
            raise NoApplicationProtocol("server selected an ALPN the client did not offer",
                                        field="ENCRYPTED_EXTENSIONS.alpn")
        self._alpn = message.alpn
        if message.aead != self.aead:
            raise IllegalParameter("differs from SERVER_HELLO", field="ENCRYPTED_EXTENSIONS.aead")
        params = message.extension(ExtensionType.TRANSPORT_PARAMETERS)
        if params is None:
            raise HandshakeFailure("missing", field="ENCRYPTED_EXTENSIONS.transport_parameters")
        self.peer_transport_parameters = params
        early = message.extension(ExtensionType.EARLY_DATA)
        if early is not None and (not self._early_data or early not in (b"\x00", b"\x01")):
            raise IllegalParameter("early_data status without early data",
                                   field="ENCRYPTED_EXTENSIONS.early_data")
        self.early_data_accepted = early == b"\x01"
        self.transcript.add(raw)
        self._transition(S.WAIT_CERT if self.mode is AuthMode.DISCOVERY else S.WAIT_SF)

    def _on_certificate(self, message: Message, raw: bytes) -> None:
        assert isinstance(message, Certificate)
        assert self.profile is not None and self.schedule is not None and self.aead
        verifier = self.config.verifier
        if verifier is None:
            raise HandshakeFailure("the client has no way to validate a certificate",
                                   field="CERTIFICATE")
        self.transcript.add(raw)
        profile = self.profile
        encapsulation_key = verifier.verify(message.certificates, profile,
                                            self.config.server_name)
        try:
            ciphertext, ss_static = self.config.kem.encapsulate(
                profile.kem, encapsulation_key, self._entropy.random(32))
        except ValueError as exc:
            raise IllegalParameter(f"leaf key rejected: {exc}", field="CERTIFICATE") from None
        self._trace_kem("encapsulate", "static", profile.kem)
        self._emit(ServerKeyLearned(key_id_for(profile.code, encapsulation_key), profile.code,
                                    encapsulation_key, message.certificates))
        self._key_id = key_id_for(profile.code, encapsulation_key)
        self._send(Epoch.HANDSHAKE, KemCiphertext(ciphertext))
        self.static_secret = ss_static
        self.schedule.enter_authenticated(ss_static)
        client_ahs, server_ahs = self.schedule.authenticated_secrets(self._digest())
        self._secrets.update(client_ahs=client_ahs, server_ahs=server_ahs)
        self._send_client_finished("client_ahs")
        # 1-RTT data may leave with this FINISHED (KEMTLS); what the server sends is read
        # only once its FINISHED verifies (VEL-HS-101)
        client_ap, self._secrets["server_ap"] = self._application_secrets()
        self._emit(KeysReady(Epoch.APPLICATION, True, client_ap, self.aead,
                             self.profile.hash_name))
        self._transition(S.WAIT_SF_DISCOVERY)

    def _send_client_finished(self, base: str) -> None:
        """Send FINISHED; the resumption secret later covers the transcript up to here."""
        assert self.profile is not None
        self._send(Epoch.HANDSHAKE, Finished(finished_mac(
            self.profile.hash_name, self._secrets[base], self._digest())))
        self._through_client_finished = self._digest()

    def _verify_server_finished(self, message: Message, base: str) -> None:
        assert isinstance(message, Finished) and self.profile is not None
        expected = finished_mac(self.profile.hash_name, self._secrets[base], self._digest())
        if not macs_equal(message.verify_data, expected):
            raise BadFinished("server FINISHED does not verify", field="FINISHED.verify_data")

    def _on_server_finished(self, message: Message, raw: bytes) -> None:
        assert self.profile is not None and self.schedule is not None
        self._verify_server_finished(message, "server_hs")
        self.transcript.add(raw)
        self._install_application()
        self._send_client_finished("client_hs")
        if self.mode is AuthMode.PDK and self.config.server_key is not None:
            self._key_id = self.config.server_key.key_id
        self._complete()

    def _on_server_finished_discovery(self, message: Message, raw: bytes) -> None:
        assert self.profile is not None and self.aead is not None
        self._verify_server_finished(message, "server_ahs")
        self.transcript.add(raw)
        self._emit(KeysReady(Epoch.APPLICATION, False, self._secrets["server_ap"], self.aead,
                             self.profile.hash_name))
        self._complete()

    def _complete(self) -> None:
        """Both FINISHED exchanged; the resumption secret covers ..client FINISHED."""
        assert self.schedule is not None and self.profile is not None and self.aead
        assert self.mode is not None
        self._resumption = self.schedule.resumption_secret(self._through_client_finished)
        self._emit(HandshakeCompleted(self._alpn.decode(), self.profile.name,
                                      self.aead.name, self.mode, self.early_data_accepted,
                                      self._key_id,
                                      self.peer_transport_parameters,
                                      self.config.kem.name_for(self.profile.kem)))
        self._transition(S.CONNECTED)
        self._erase_secrets()  # the resumption secret stays, for NEW_SESSION_TICKETs

    # --- 1-RTT ---------------------------------------------------------------------------

    def _on_new_session_ticket(self, message: Message, raw: bytes) -> None:
        assert isinstance(message, NewSessionTicket)
        assert self.profile is not None and self.aead is not None
        psk = resumption_psk(self.profile.hash_name, self._resumption, message.nonce)
        self._emit(TicketIssued(SessionTicket(
            message.ticket, psk, self.profile.code, int(self.aead), self._alpn,
            message.age_add, message.lifetime, self.now_ms, message.max_early_data,
            self.config.server_name)))

