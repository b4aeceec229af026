"""The independent check of vectors/handshakes/*.json. It reads the recorded flights with the
scapy layers (``harness.layers.messages``), recomputes every secret from the recorded private
inputs and the wire shares with kyber-py and ``cryptography`` (X25519, P-384, AES-GCM) used
directly, runs the key schedule of spec section 11 with ``hmac``/``hashlib``
(``harness.vectors.generate_crypto``), and checks the wire against it: the client key
shares, every KEM ciphertext, both FINISHED MACs, each PSK binder, the FALLBACK MAC and the
sealed tickets. It imports nothing of ``velocity``: a reference that got a secret wrong in
both endpoints alike still fails here, where the regeneration check cannot see it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyasn1.codec.der import decoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc5280

from harness.layers.messages import (
    EARLY_DATA,
    PRE_SHARED_KEY,
    SERVER_KEY,
    VPreSharedKey,
    VSealedTicket,
    VServerKey,
    VTicketState,
    dissect_messages,
    read_exactly,
)
from harness.vectors.generate_crypto import (
    PROFILES,
    ecdh_exchange,
    ecdh_key,
    expand_label,
    extract,
    fallback_mac,
    finished,
    schedule_steps,
)

Result = tuple[str, object, object]  # (what, recomputed, recorded)
TICKET_AAD = b"velocity1 ticket"
MESSAGE_HASH = 0xFE


@dataclass(frozen=True)
class Suite:
    """One row of the profile table (spec section 9), for recomputing."""

    name: str
    code: int
    kem: Any  # a kyber-py ML_KEM instance
    ecdh: str
    hash_name: str

    @property
    def size(self) -> int:
        return hashlib.new(self.hash_name).digest_size

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.hash_name, data).digest()

    def join(self, kem_part: bytes, ecdh_part: bytes) -> bytes:
        """X25519 layouts put ML-KEM first, SecP384r1MLKEM1024 puts ECDH first."""
        return kem_part + ecdh_part if self.ecdh == "x25519" else ecdh_part + kem_part

    def split(self, share: bytes, ecdh_size: int) -> tuple[bytes, bytes]:
        """(kem part, ecdh part) of a share."""
        if self.ecdh == "x25519":
            return share[:-ecdh_size], share[-ecdh_size:]
        return share[ecdh_size:], share[:ecdh_size]


SUITES = {row[1]: Suite(*row) for row in PROFILES}
SUITES_BY_NAME = {suite.name: suite for suite in SUITES.values()}


def suite_of(code: int, what: str) -> Suite:
    suite = SUITES.get(code)
    if suite is None:
        raise ValueError(f"{what} 0x{code:04x} is no profile")
    return suite
ECDH_PUBLIC = {"x25519": 32, "p384": 97}


def key_id(suite: Suite, encapsulation_key: bytes) -> bytes:
    """VEL-AUTH-002."""
    return hashlib.sha256(suite.code.to_bytes(2, "big") + encapsulation_key).digest()[:8]


def show(value: bytes | None) -> str | None:
    """Bytes as hex, or for long values their length and a SHA-256 prefix."""
    if value is None or len(value) <= 64:
        return None if value is None else value.hex()
    return f"{len(value)} bytes, SHA-256 {hashlib.sha256(value).hexdigest()[:16]}"


@dataclass
class Msg:
    sender: str
    layer: Any
    raw: bytes

    @property
    def name(self) -> str:
        return str(self.layer.name)


@dataclass
class Issued:
    """A ticket the checked handshake issued, with the PSK the checker derived for it."""

    ticket: bytes
    psk: bytes
    suite: Suite


@dataclass
class Handshake:
    """The state of checking one recorded handshake."""

    messages: list[Msg]
    inputs: dict[str, Any]
    identity: dict[str, str]
    static_suite: Suite
    earlier: list[Issued]  # tickets an earlier handshake issued, for a PSK offer
    results: list[Result] = field(default_factory=list)
    suite: Suite | None = None
    secrets: dict[str, bytes] = field(default_factory=dict)
    values: dict[str, bytes] = field(default_factory=dict)  # key schedule steps
    psk: Issued | None = None
    server_key_held: bool = False
    issued: list[Issued] = field(default_factory=list)
    _taken: dict[str, int] = field(default_factory=dict)

    def expect(self, what: str, recomputed: object, recorded: object) -> None:
        self.results.append((what, recomputed, recorded))

    def of(self, name: str) -> list[Msg]:
        return [m for m in self.messages if m.name == name]

    def one(self, name: str) -> Msg:
        """The first ``name`` message; a ValueError when the flights have none."""
        found = self.of(name)
        if not found:
            raise ValueError(f"the flights have a SERVER_HELLO but no {name}")
        return found[0]

    def secret(self, name: str) -> bytes:
        if name not in self.secrets:
            raise ValueError(f"the flights do not give {name}")
        return self.secrets[name]

    def take(self, side: str, kind: str) -> bytes:
        """The next recorded input of ``kind`` for ``side``, in the order it was drawn."""
        values, index = self.inputs[side][kind], self._taken.get(f"{side} {kind}", 0)
        if index >= len(values):
            raise ValueError(f"inputs.{side}.{kind} has {len(values)} entries; the flights "
                             f"need more")
        self._taken[f"{side} {kind}"] = index + 1
        return bytes.fromhex(values[index])

    def before(self, message: Msg) -> bytes:
        """The transcript bytes before ``message`` (VEL-HS-104: no NEW_SESSION_TICKET or
        FALLBACK), with the HELLO_RETRY substitution of VEL-HS-022 once one was sent."""
        index = next(i for i, m in enumerate(self.messages) if m is message)
        covered = [m.raw for m in self.messages[:index]
                   if m.name not in ("NEW_SESSION_TICKET", "FALLBACK")]
        retry = next((m for m in self.messages[:index] if m.name == "HELLO_RETRY"), None)
        if retry is not None and self.messages[0].name == "CLIENT_HELLO":
            suite = suite_of(retry.layer.selected_profile, "HELLO_RETRY selected_profile")
            digest = suite.digest(covered[0])
            covered[0] = bytes([MESSAGE_HASH]) + len(digest).to_bytes(3, "big") + digest
        return b"".join(covered)

    def through(self, message: Msg) -> bytes:
        assert self.suite is not None
        return self.suite.digest(self.before(message) + message.raw)

    def unused_inputs(self) -> list[str]:
        return [f"inputs.{side}.{kind}" for side in ("client", "server")
                for kind, values in self.inputs[side].items()
                if len(values) != self._taken.get(f"{side} {kind}", 0)]


def read_flights(flights: list[dict[str, Any]]) -> list[Msg]:
    messages = []
    for index, flight in enumerate(flights):
        for raw in map(bytes.fromhex, flight["messages"]):
            what = f"flight {index + 1} ({flight['sender']}, {flight['epoch']})"
            (layer,) = dissect_messages(raw, what)
            messages.append(Msg(flight["sender"], layer, raw))
    return messages


# --- key shares and KEM secrets --------------------------------------------------------


def check_client_shares(hs: Handshake) -> list[tuple[Any, Any, bytes]]:
    """Recompute each CLIENT_HELLO's share from its ML-KEM seed d || z and ECDH key:
    (ML-KEM decapsulation key, ECDH private key) per CLIENT_HELLO."""
    keys = []
    for number, hello in enumerate(hs.of("CLIENT_HELLO"), 1):
        suite = suite_of(hello.layer.key_share_profile, f"CLIENT_HELLO {number} key_share_profile")
        ek, dk = suite.kem.key_derive(hs.take("client", "kem_keygen"))
        private, public = ecdh_key(suite.ecdh, hs.take("client", "ecdh"))
        hs.expect(f"CLIENT_HELLO {number} key_share",
                  show(suite.join(ek, public)), show(hello.layer.key_share))
        keys.append((dk, private, ek))
    return keys


def check_server_share(hs: Handshake, keys: list[tuple[Any, Any, bytes]],
                       hello: Msg) -> None:
    """ss_eph: ML-KEM decapsulation of the wire ciphertext and ECDH with the wire public key;
    the ciphertext must also be the encapsulation the server's recorded m gives."""
    suite = hs.suite
    assert suite is not None
    dk, private, ek = keys[-1]
    ciphertext, peer = suite.split(hello.layer.key_share, ECDH_PUBLIC[suite.ecdh])
    shared, expected = suite.kem._encaps_internal(ek, hs.take("server", "encapsulations"))
    hs.expect("SERVER_HELLO ML-KEM ciphertext", show(expected),
              show(ciphertext))
    ss_kem = suite.kem.decaps(dk, ciphertext)
    hs.expect("ML-KEM shared secret", show(ss_kem),
              show(shared))
    try:
        ss_ecdh = ecdh_exchange(private, peer)
    except ValueError as exc:
        raise ValueError(f"SERVER_HELLO key_share: ECDH public key rejected: {exc}") from None
    hs.secrets["ss_eph"] = suite.join(ss_kem, ss_ecdh)


def _static_key(hs: Handshake, seed_hex: str) -> tuple[bytes, bytes]:
    ek, dk = hs.static_suite.kem.key_derive(bytes.fromhex(seed_hex))
    return ek, dk


def check_server_key_block(hs: Handshake) -> None:
    """PDK (spec 10.2): the block's key id and ciphertext are those of the pinned key and
    the client's recorded m; a held key id gives ss_static = Decaps(static dk, ciphertext)."""
    blocks = [h.layer.extension(SERVER_KEY) for h in hs.of("CLIENT_HELLO")]
    block = next((b for b in blocks if b is not None), None)
    if block is None:
        return
    seed = hs.inputs["server_key_seed"]
    if seed is None:
        raise ValueError("a CLIENT_HELLO carries server_key but inputs.server_key_seed is null")
    value = read_exactly(VServerKey, block, "server_key extension")
    pinned, _ = _static_key(hs, seed)
    hs.expect("server_key key id", key_id(hs.static_suite, pinned).hex(),
              value.key_id.hex())
    shared, ciphertext = hs.static_suite.kem._encaps_internal(
        pinned, hs.take("client", "encapsulations"))
    hs.expect("server_key ciphertext", show(ciphertext),
              show(value.ciphertext))
    static_ek, static_dk = _static_key(hs, hs.identity["kem_seed"])
    hs.secrets["client_ss_static"] = shared
    hs.server_key_held = value.key_id == key_id(hs.static_suite, static_ek)
    if hs.server_key_held:
        hs.secrets["ss_static"] = hs.static_suite.kem.decaps(static_dk, value.ciphertext)
        hs.expect("static-KEM secret of server_key",
                  show(hs.secrets["ss_static"]), show(shared))


def leaf_public_key(der: bytes) -> bytes:
    """The subjectPublicKey bits of a certificate: for a Velocity leaf, the ML-KEM
    encapsulation key (VEL-CERT-001)."""
    try:
        certificate, _ = decoder.decode(der, asn1Spec=rfc5280.Certificate())
    except PyAsn1Error as exc:
        raise ValueError(f"CERTIFICATE leaf is no X.509 certificate: {exc}") from None
    key: bytes = certificate["tbsCertificate"]["subjectPublicKeyInfo"][
        "subjectPublicKey"].asOctets()
    return key


def check_kem_ciphertext(hs: Handshake) -> None:
    """Discovery (spec 10.3): the leaf carries the static key; KEM_CIPHERTEXT is the
    encapsulation to it with the client's recorded m, and ss_static its decapsulation."""
    certificates, ciphertexts = hs.of("CERTIFICATE"), hs.of("KEM_CIPHERTEXT")
    if not ciphertexts:
        return
    static_ek, static_dk = _static_key(hs, hs.identity["kem_seed"])
    if certificates:
        if not certificates[0].layer.certificates:
            raise ValueError("CERTIFICATE has an empty chain")
        leaf = certificates[0].layer.certificates[0].der
        hs.expect("CERTIFICATE leaf", show(leaf),
                  show(bytes.fromhex(hs.identity["leaf_der"])))
        leaf_key = leaf_public_key(leaf)
        hs.expect("CERTIFICATE leaf key", show(leaf_key), show(static_ek))
    wire = ciphertexts[0].layer.ciphertext
    shared, expected = hs.static_suite.kem._encaps_internal(
        static_ek, hs.take("client", "encapsulations"))
    hs.expect("KEM_CIPHERTEXT", show(expected), show(wire))
    hs.secrets["client_ss_static"] = shared
    hs.secrets["ss_static"] = hs.static_suite.kem.decaps(static_dk, wire)
    hs.expect("static-KEM secret of KEM_CIPHERTEXT",
              show(hs.secrets["ss_static"]), show(shared))


# --- PSK, key schedule and MACs --------------------------------------------------------


def check_psk_offers(hs: Handshake) -> None:
    """VEL-RES-003: each PSK offer names a ticket the earlier handshake issued, and its
    binder covers the transcript before it and the CLIENT_HELLO truncated before the
    binder's vec<u8> (after HELLO_RETRY: message_hash(CH1) || HELLO_RETRY || CH2...).
    The PSK of the last CLIENT_HELLO is the one the server may accept."""
    for number, hello in enumerate(hs.of("CLIENT_HELLO"), 1):
        value = hello.layer.extension(PRE_SHARED_KEY)
        hs.psk = None
        if value is None:
            continue
        offer = read_exactly(VPreSharedKey, value, f"CLIENT_HELLO {number} pre_shared_key")
        issued = next((i for i in hs.earlier if i.ticket == offer.identity), None)
        tickets = [show(i.ticket) for i in hs.earlier]
        hs.expect(f"CLIENT_HELLO {number} PSK identity",
                  show(issued.ticket) if issued else f"one of the tickets issued: {tickets}",
                  show(offer.identity))
        if issued is None:
            continue
        hs.psk = issued
        suite = issued.suite
        early = extract(suite.hash_name, bytes(suite.size), issued.psk)
        binder_key = expand_label(suite.hash_name, early, b"res binder", suite.digest(b""),
                                  suite.size)
        hs.values = {"early_secret": early, "binder_key": binder_key}  # the schedule so far
        truncated = hello.raw[: -(1 + len(offer.binder))]
        hs.expect(f"CLIENT_HELLO {number} PSK binder",
                  finished(suite.hash_name, binder_key, hs.before(hello) + truncated).hex(),
                  offer.binder.hex())


def _mode(hs: Handshake, hello: Msg) -> str:
    """The mode the wire shows, with SERVER_HELLO's status bytes checked (VEL-HS-032)."""
    hs.expect("SERVER_HELLO psk_status", int(hs.psk is not None), hello.layer.psk_status)
    hs.expect("SERVER_HELLO server_key_status", int(hs.server_key_held),
              hello.layer.server_key_status)
    if hs.psk is not None:
        return "resumption"
    return "pdk" if hs.server_key_held else "discovery"


def check_schedule(hs: Handshake, mode: str, server_hello: Msg) -> None:
    """Spec section 11 over the wire transcript; then both FINISHED MACs (VEL-HS-070,
    VEL-KS-003, VEL-KS-004)."""
    suite = hs.suite
    assert suite is not None
    finished_msgs = hs.of("FINISHED")
    client_finished = next((m for m in finished_msgs if m.sender == "client"), None)
    server_finished = next((m for m in finished_msgs if m.sender == "server"), None)
    if client_finished is None or server_finished is None:
        raise ValueError("the handshake has a SERVER_HELLO but not both FINISHED messages")
    inputs = {"ss_eph": hs.secret("ss_eph"), "th_server_hello": hs.through(server_hello),
              "th_application": hs.through(client_finished if mode == "discovery"
                                           else server_finished),
              "th_client_finished": hs.through(client_finished)}
    hello = hs.of("CLIENT_HELLO")[-1]
    if hs.psk is not None:
        inputs["psk"] = hs.psk.psk
        if hello.layer.extension(EARLY_DATA) is not None:
            inputs["th_client_hello"] = hs.through(hello)
    if mode != "resumption":
        inputs["ss_static"] = hs.secret("ss_static")
    if mode == "discovery":
        inputs["th_kem_ciphertext"] = hs.through(hs.one("KEM_CIPHERTEXT"))
    steps = schedule_steps(suite.hash_name, mode, inputs)
    hs.values = dict(steps)
    base = "ahs" if mode == "discovery" else "hs"
    for message in (server_finished, client_finished):
        key = hs.values[f"{message.sender}_{base}_secret"]
        hs.expect(f"{message.sender} FINISHED",
                  finished(suite.hash_name, key, hs.before(message)).hex(),
                  message.layer.verify_data.hex())


def check_tickets(hs: Handshake, server_hello: Msg) -> None:
    """Each NEW_SESSION_TICKET opens under the ticket key (AES-256-GCM, AAD "velocity1
    ticket", VEL-RES-002) and seals the PSK of VEL-RES-001 derived from the checker's own
    resumption secret, with the handshake's profile, AEAD and ALPN."""
    suite = hs.suite
    assert suite is not None
    alpn = hs.one("ENCRYPTED_EXTENSIONS").layer.alpn
    aead = AESGCM(bytes.fromhex(hs.inputs["ticket_key"]))
    for number, message in enumerate(hs.of("NEW_SESSION_TICKET"), 1):
        nst = message.layer
        sealed = read_exactly(VSealedTicket, nst.ticket, f"NEW_SESSION_TICKET {number} ticket")
        try:
            plaintext = aead.decrypt(sealed.nonce, sealed.ciphertext, TICKET_AAD)
        except InvalidTag:
            hs.expect(f"NEW_SESSION_TICKET {number} opens", False, True)
            continue
        state = read_exactly(VTicketState, plaintext, f"NEW_SESSION_TICKET {number} plaintext")
        psk = expand_label(suite.hash_name, hs.values["resumption_secret"], b"resumption",
                           nst.nonce, suite.size)
        hs.expect(f"NEW_SESSION_TICKET {number} PSK", psk.hex(), state.psk.hex())
        hs.expect(f"NEW_SESSION_TICKET {number} contents",
                  [suite.code, server_hello.layer.selected_aead, alpn.hex(),
                   nst.max_early_data],
                  [state.profile, state.aead, state.alpn.hex(), state.max_early_data])
        hs.expect(f"NEW_SESSION_TICKET {number} lifetime at most 7 days (VEL-HS-080)", True,
                  nst.lifetime <= 604800)
        hs.issued.append(Issued(nst.ticket, psk, suite))


def check_fallback(hs: Handshake) -> None:
    """The FALLBACK MAC: under ss_static when the CLIENT_HELLO's server_key names a held key
    (VEL-FB-003), under the PSK ("res fallback") when the client resumed without one, empty
    (advisory) otherwise."""
    for index, message in enumerate(hs.messages):
        if message.name != "FALLBACK":
            continue
        hello = next((m for m in reversed(hs.messages[:index]) if m.name == "CLIENT_HELLO"),
                     None)
        if hello is None:
            raise ValueError("a FALLBACK answers no CLIENT_HELLO")
        without_mac = message.layer.copy()
        without_mac.mac, without_mac.mac_length, without_mac.length = b"", None, None
        if hs.server_key_held:
            expected = fallback_mac(hs.static_suite.hash_name, hs.secret("ss_static"),
                                    hello.raw, bytes(without_mac))
        elif hs.psk is not None:
            expected = fallback_mac(hs.psk.suite.hash_name, hs.psk.psk, hello.raw,
                                    bytes(without_mac), label=b"res fallback")
        else:
            expected = b""
        hs.expect("FALLBACK mac", expected.hex(), message.layer.mac.hex())


def check_outcome(hs: Handshake, error: dict[str, str] | None) -> None:
    """A server_key naming a key the server does not hold ends in STALE_KEM_KEY from the
    server, with no SERVER_HELLO or FALLBACK (VEL-AUTH-011); the others end without error."""
    stale = (not hs.server_key_held and bool(hs.inputs["server_key_seed"])
             and not hs.of("SERVER_HELLO") and not hs.of("FALLBACK"))
    hs.expect("outcome", {"side": "server", "code": "STALE_KEM_KEY"} if stale else None, error)


def check_handshake(hs: Handshake, error: dict[str, str] | None) -> None:
    """Every check of one handshake, in wire order; each recorded input must be used."""
    if not hs.messages or hs.messages[0].name != "CLIENT_HELLO":
        raise ValueError("the flights do not open with a CLIENT_HELLO")
    keys = check_client_shares(hs)
    check_server_key_block(hs)
    check_psk_offers(hs)
    check_fallback(hs)
    check_outcome(hs, error)
    hellos = hs.of("SERVER_HELLO")
    if hellos:
        check_server_flights(hs, keys, hellos[0])
    hs.expect("unused inputs", hs.unused_inputs(), [])


def check_server_flights(hs: Handshake, keys: list[tuple[Any, Any, bytes]],
                         hello: Msg) -> None:
    """From SERVER_HELLO on: ss_eph, ss_static, the key schedule, FINISHED and tickets."""
    hs.suite = suite_of(hello.layer.selected_profile, "SERVER_HELLO selected_profile")
    check_server_share(hs, keys, hello)
    check_kem_ciphertext(hs)
    check_schedule(hs, _mode(hs, hello), hello)
    check_tickets(hs, hello)


def _recorded(value: str | None) -> str | None:
    return None if value is None else show(bytes.fromhex(value))


def _compare_recorded(hs: Handshake, secrets: dict[str, Any]) -> None:
    """The recorded secrets of the reference against the recomputed ones, so that a failure
    also names the first secret that differs."""
    hs.expect("recorded hybrid shared secret", show(hs.secrets.get("ss_eph")),
              _recorded(secrets["hybrid_shared_secret"]))
    hs.expect("recorded static-KEM secret", show(hs.secrets.get("client_ss_static")),
              _recorded(secrets["static_secret"]))
    hs.expect("recorded PSK", show(hs.psk.psk) if hs.psk else None, _recorded(secrets["psk"]))
    steps = [[n, v.hex()] for n, v in hs.values.items()]
    for side in ("client", "server"):
        recorded = dict(map(tuple, secrets[f"{side}_schedule"]))
        mine = {n: v for n, v in steps if n in recorded}
        differing = [n for n in recorded if mine.get(n) != recorded[n]]
        hs.expect(f"recorded {side} key schedule", differing, [])


def check(document: dict[str, Any]) -> list[Result]:
    """(what, recomputed, recorded) for every independent check of one handshake vector;
    a ValueError for a file whose flights or inputs do not fit together."""
    static_suite = SUITES_BY_NAME[document["profile"]]
    results: list[Result] = []
    earlier: list[Issued] = []
    first = document["ticket_handshake"]
    if first is not None:
        hs = Handshake(read_flights(first["flights"]), first["inputs"], document["identity"],
                       static_suite, [])
        check_handshake(hs, None)
        results += [(f"ticket handshake: {w}", a, b) for w, a, b in hs.results]
        earlier = hs.issued
    hs = Handshake(read_flights(document["flights"]), document["inputs"],
                   document["identity"], static_suite, earlier)
    check_handshake(hs, document["error"])
    _compare_recorded(hs, document["secrets"])
    return results + hs.results
