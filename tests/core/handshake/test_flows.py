"""Client/server handshakes in memory: every profile, AEAD and backend pairing, both
authentication modes, HELLO_RETRY, fallback and downgrade, stale and missing keys."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from harness.pair import NOW, PairSpec, make_pair, run_handshake, server_identity
from tests.core.handshake.helpers import (
    assert_keys_agree,
    closed_with,
    completed,
    events_of,
    rewrite,
    set_field,
)
from velocity.core.entropy import SeededEntropy
from velocity.core.errors import ErrorCode
from velocity.core.handshake.client import ClientConfig, PinnedServerKey
from velocity.core.handshake.common import AuthMode, FallbackDirected, ServerKeyLearned
from velocity.core.handshake.messages import (
    ClientHello,
    ExtensionType,
    Fallback,
    MessageType,
    decode_message,
)
from velocity.core.handshake.server import FallbackPolicy, ServerConfig
from velocity.core.hybrid import BALANCED, LIGHT, PROFILES, SECURE, Profile
from velocity.core.packet import Epoch
from velocity.core.protection import Aead
from velocity.crypto.identity import ServerIdentity
from velocity.crypto.kem import BACKENDS, kem_backend
from velocity.crypto.keyring import KeyRing
from velocity.crypto.sealing import ticket_sealer

PAIRS = list(itertools.product(BACKENDS, BACKENDS))


@pytest.mark.spec("VEL-HS-100", "VEL-HS-102", "VEL-KS-001", "VEL-AUTH-001", "VEL-AUTH-012",
                  "VEL-PROF-002", "VEL-PROF-003", "VEL-PROF-004")
@pytest.mark.parametrize(("client_backend", "server_backend"), PAIRS)
@pytest.mark.parametrize("profile", PROFILES.values(), ids=lambda p: p.name)
@pytest.mark.parametrize("aead", list(Aead), ids=lambda a: a.name)
@pytest.mark.parametrize("mode", ["pdk", "discovery"])
def test_every_profile_aead_and_backend_pairing(profile: Profile, aead: Aead,
                                                client_backend: str, server_backend: str,
                                                mode: str) -> None:
    client, server = make_pair(PairSpec(profile, mode, client_backend, server_backend,
                                        aeads=(aead,)))
    run = run_handshake(client, server)
    client_done, server_done = completed(run)
    assert client_done.aead == server_done.aead == aead.name
    assert client_done.mode == server_done.mode == AuthMode(mode)
    assert client_done.profile == server_done.profile == profile.name
    assert client_done.key_id == server_done.key_id == server_identity(profile).key_id
    assert client_done.kem_backend == kem_backend(client_backend).name_for(profile.kem)
    assert server_done.kem_backend == kem_backend(server_backend).name_for(profile.kem)
    assert_keys_agree(run)


@pytest.mark.spec("VEL-PROT-006", "VEL-HS-031", "VEL-KS-002")
@pytest.mark.parametrize("aead", list(Aead), ids=lambda a: a.name)
@pytest.mark.parametrize("profile", PROFILES.values(), ids=lambda p: p.name)
def test_every_aead_with_every_profile(profile: Profile, aead: Aead) -> None:
    client, server = make_pair(PairSpec(profile, aeads=(aead,)))
    run = run_handshake(client, server)
    client_done, server_done = completed(run)
    assert client_done.aead == server_done.aead == aead.name


@pytest.mark.spec("VEL-HS-101", "VEL-HS-050", "VEL-AUTH-020", "VEL-AUTH-021", "VEL-AUTH-022",
                  "VEL-AUTH-023", "VEL-KS-003", "VEL-KS-004")
def test_discovery_flight_order_and_learned_key() -> None:
    client, server = make_pair(PairSpec(mode="discovery"))
    run = run_handshake(client, server)
    completed(run)
    order = [(f.sender, f.epoch, [m[0] for m in f.messages]) for f in run.flights]
    assert order == [
        ("client", Epoch.INITIAL, [MessageType.CLIENT_HELLO]),
        ("server", Epoch.INITIAL, [MessageType.SERVER_HELLO]),
        ("server", Epoch.HANDSHAKE, [MessageType.ENCRYPTED_EXTENSIONS, MessageType.CERTIFICATE]),
        ("client", Epoch.HANDSHAKE, [MessageType.KEM_CIPHERTEXT, MessageType.FINISHED]),
        ("server", Epoch.HANDSHAKE, [MessageType.FINISHED]),
        ("server", Epoch.APPLICATION, [MessageType.NEW_SESSION_TICKET]),
    ]
    (learned,) = events_of(run.client_events, ServerKeyLearned)
    assert learned.key_id == server_identity(BALANCED).key_id
    assert learned.encapsulation_key == server_identity(BALANCED).encapsulation_key


@pytest.mark.spec("VEL-HS-012", "VEL-HS-013", "VEL-SIZE-001", "VEL-SIZE-003")
def test_pdk_flight_order_and_sizes() -> None:
    client, server = make_pair(PairSpec(mode="pdk"))
    run = run_handshake(client, server)
    completed(run)
    hello = run.flights[0].messages[0]
    parsed = decode_message(hello[0], hello[4:])
    assert isinstance(parsed, ClientHello)
    assert len(parsed.key_share) == 1216
    assert parsed.extension(ExtensionType.SERVER_NAME) == b"localhost"
    assert parsed.extension(ExtensionType.TRANSPORT_PARAMETERS) is not None
    block = parsed.extension(ExtensionType.SERVER_KEY)
    assert block is not None and len(block) == 1 + 8 + 2 + 1088
    assert len(hello) < 4096
    assert [m[0] for m in run.flights[2].messages] == [MessageType.ENCRYPTED_EXTENSIONS,
                                                       MessageType.FINISHED]
    server_hello = run.flights[1].messages[0]
    assert 1120 < len(server_hello) < 1200


@pytest.mark.spec("VEL-HS-020", "VEL-HS-021", "VEL-HS-022")
def test_hello_retry_to_the_servers_profile() -> None:
    spec = PairSpec(BALANCED, client={"profiles": (LIGHT, BALANCED)},
                    server={"profiles": (BALANCED,)})
    client, server = make_pair(spec)
    run = run_handshake(client, server)
    client_done, _ = completed(run)
    assert client_done.profile == "balanced"
    assert [m[0] for m in run.flights[1].messages] == [MessageType.HELLO_RETRY]
    first, second = (decode_message(f.messages[0][0], f.messages[0][4:])
                     for f in (run.flights[0], run.flights[2]))
    assert isinstance(first, ClientHello) and isinstance(second, ClientHello)
    assert (first.key_share_profile, second.key_share_profile) == (LIGHT.code, BALANCED.code)
    assert first.random == second.random
    assert client.transcript.messages[0][0] == 0xFE


def test_hello_retry_that_cannot_be_honoured_is_illegal() -> None:
    spec = PairSpec(BALANCED, client={"profiles": (LIGHT, BALANCED)},
                    server={"profiles": (BALANCED,)})
    client, server = make_pair(spec)
    run = run_handshake(client, server, tamper=set_field(MessageType.HELLO_RETRY,
                                                         selected_profile=SECURE.code))
    closed_with(run, ErrorCode.ILLEGAL_PARAMETER, "client")


@pytest.mark.spec("VEL-FB-002", "VEL-FB-005", "VEL-HS-090", "VEL-HS-091")
@pytest.mark.parametrize(("server_mode", "reason"), [("fallback-only", 1), ("maintenance", 2)])
def test_fallback_is_advisory_without_a_pinned_key(server_mode: str, reason: int) -> None:
    policy = FallbackPolicy(host="h3.example", port=8443, mode=server_mode, retry_after=30)
    client, server = make_pair(PairSpec(mode="discovery", server={"fallback": policy}))
    run = run_handshake(client, server)
    assert run.error is None
    (directive,) = events_of(run.client_events, FallbackDirected)
    assert (directive.alpn, directive.host, directive.port, directive.reason,
            directive.retry_after, directive.authenticated) == (
        "h3", "h3.example", 8443, reason, 30, False)
    assert events_of(run.server_events, FallbackDirected)


@pytest.mark.spec("VEL-FB-003", "VEL-FB-004")
def test_fallback_is_authenticated_with_a_pinned_key() -> None:
    policy = FallbackPolicy(mode="fallback-only")
    client, server = make_pair(PairSpec(mode="pdk", server={"fallback": policy}))
    run = run_handshake(client, server)
    (directive,) = events_of(run.client_events, FallbackDirected)
    assert directive.authenticated


@pytest.mark.spec("VEL-FB-001", "VEL-HS-091")
def test_client_without_velocity_gets_fallback_reason_0() -> None:
    client, server = make_pair(PairSpec(mode="discovery", client={"alpn": (b"h3",)}))
    run = run_handshake(client, server)
    (directive,) = events_of(run.client_events, FallbackDirected)
    assert directive.reason == 0


@pytest.mark.spec("VEL-HS-040", "VEL-HS-091")
def test_server_selects_its_preferred_protocol_from_the_offer() -> None:
    served = (b"velocity/1-exp", b"velocity/1")
    client, server = make_pair(PairSpec(mode="pdk", server={"alpn": served},
                                        client={"alpn": (b"velocity/1", b"velocity/1-exp")}))
    client_done, server_done = completed(run_handshake(client, server))
    assert client_done.alpn == server_done.alpn == "velocity/1-exp"
    client, server = make_pair(PairSpec(mode="pdk", server={"alpn": (b"velocity/1-exp",)},
                                        client={"alpn": (b"velocity/1", b"h3")}))
    (directive,) = events_of(run_handshake(client, server).client_events, FallbackDirected)
    assert directive.reason == 0 and directive.authenticated


@pytest.mark.spec("VEL-FB-004", "VEL-FB-007")
def test_stripped_velocity_alpn_is_detected() -> None:
    """An attacker removes velocity/1 from the CLIENT_HELLO; the server's MAC covers what it
    received, the client checks it over what it sent."""
    client, server = make_pair(PairSpec(mode="pdk", client={"alpn": (b"velocity/1", b"h3")}))
    strip = rewrite(MessageType.CLIENT_HELLO,
                    lambda m: ClientHello(m.random, (b"h3",), m.profiles, m.aeads,
                                          m.key_share_profile, m.key_share, m.extensions))
    closed_with(run_handshake(client, server, tamper=strip), ErrorCode.DOWNGRADE_DETECTED,
                "client")


@pytest.mark.spec("VEL-FB-004")
def test_forged_and_replayed_directives_are_detected() -> None:
    forged = Fallback(b"h3", b"evil.example", 443, 1, b"fallback-only mode", 0)
    client, server = make_pair(PairSpec(mode="pdk"))
    run = run_handshake(client, server, tamper=rewrite(MessageType.SERVER_HELLO,
                                                       lambda m: forged))
    closed_with(run, ErrorCode.DOWNGRADE_DETECTED, "client")

    policy = FallbackPolicy(mode="fallback-only")
    client, server = make_pair(PairSpec(mode="pdk", seed="first", server={"fallback": policy}))
    first = run_handshake(client, server)
    recorded = first.flights[1].messages[0]
    assert recorded[0] == MessageType.FALLBACK
    replayed = decode_message(recorded[0], recorded[4:])
    client, server = make_pair(PairSpec(mode="pdk", seed="second"))
    run = run_handshake(client, server, tamper=rewrite(MessageType.SERVER_HELLO,
                                                       lambda m: replayed))
    closed_with(run, ErrorCode.DOWNGRADE_DETECTED, "client")


@pytest.mark.spec("VEL-PROF-008")
def test_no_common_profile() -> None:
    client, server = make_pair(PairSpec(LIGHT, client={"alpn": (b"velocity/1",)},
                                        server={"profiles": (BALANCED,)}))
    closed_with(run_handshake(client, server), ErrorCode.PROFILE_POLICY_VIOLATION, "server")
    client, server = make_pair(PairSpec(LIGHT, client={"alpn": (b"velocity/1", b"h3")},
                                        server={"profiles": (BALANCED,)}))
    run = run_handshake(client, server)
    (directive,) = events_of(run.client_events, FallbackDirected)
    assert directive.reason == 3


@pytest.mark.spec("VEL-AUTH-011")
def test_unknown_key_id_is_stale_kem_key() -> None:
    rotated = server_identity(BALANCED, seed=99)
    client, server = make_pair(PairSpec(mode="pdk", client={
        "server_key": PinnedServerKey(BALANCED, rotated.encapsulation_key)}))
    closed_with(run_handshake(client, server), ErrorCode.STALE_KEM_KEY, "server")


@pytest.mark.spec("VEL-AUTH-020")
def test_server_that_does_not_publish_requires_the_key() -> None:
    client, server = make_pair(PairSpec(mode="discovery", server={"publish_key": False}))
    closed_with(run_handshake(client, server), ErrorCode.KEM_KEY_REQUIRED, "server")
    client, server = make_pair(PairSpec(mode="pdk", server={"publish_key": False}))
    completed(run_handshake(client, server))


@pytest.mark.spec("VEL-CERT-005")
def test_previous_key_is_accepted_during_the_overlap() -> None:
    old = server_identity(BALANCED)
    new = ServerIdentity.create(BALANCED, entropy=SeededEntropy("rotated"), names=("localhost",),
                                now=NOW, ca=(old.ca_key, old.ca_certificate))
    kem = kem_backend("cryptography")
    ring = KeyRing(overlap_ms=1000)
    ring.add(old.static_key(kem))
    ring.rotate(new.static_key(kem), now_ms=0)
    during = {"static_keys": ring.active(now_ms=500)}
    client, server = make_pair(PairSpec(mode="pdk", server=during))
    completed(run_handshake(client, server))
    client, server = make_pair(PairSpec(mode="discovery", server=during))
    learned = events_of(run_handshake(client, server).client_events, ServerKeyLearned)
    assert learned[0].key_id == new.key_id
    after = {"static_keys": ring.active(now_ms=1500)}
    client, server = make_pair(PairSpec(mode="pdk", server=after))
    closed_with(run_handshake(client, server), ErrorCode.STALE_KEM_KEY, "server")


@pytest.mark.spec("VEL-EXT-001", "VEL-EXT-003")
def test_grease_is_sent_and_ignored() -> None:
    client, server = make_pair(PairSpec())
    extra = rewrite(MessageType.CLIENT_HELLO, lambda m: ClientHello(
        m.random, m.alpn, m.profiles, m.aeads, m.key_share_profile, m.key_share,
        (*m.extensions, (0x1234, b"unknown"))))
    run = run_handshake(client, server, tamper=extra)
    # the rewritten CLIENT_HELLO differs from what the client hashed, so FINISHED fails;
    # what matters is that the server accepted the unknown extension and answered
    assert run.error is not None and run.error.code == ErrorCode.BAD_FINISHED
    client, server = make_pair(PairSpec())
    run = run_handshake(client, server)
    completed(run)
    for flight, index in ((run.flights[0], 0), (run.flights[2], 0)):
        raw = flight.messages[index]
        message = decode_message(raw[0], raw[4:])
        types = [t for t, _ in message.extensions]  # type: ignore[union-attr]
        assert any(t >= 27 and (t - 27) % 31 == 0 for t in types), types


@pytest.mark.spec("VEL-HS-001", "VEL-HS-100")
def test_message_in_the_wrong_space_or_state_is_unexpected() -> None:
    client, server = make_pair(PairSpec())
    client.start(now_ms=0)
    finished = bytes([MessageType.FINISHED, 0, 0, 48]) + bytes(48)
    with pytest.raises(Exception) as info:
        server.receive(Epoch.INITIAL, finished, now_ms=0)
    assert getattr(info.value, "code", None) == ErrorCode.UNEXPECTED_MESSAGE
    with pytest.raises(Exception) as info:
        server.receive(Epoch.HANDSHAKE, client.data_to_send(Epoch.INITIAL), now_ms=0)
    assert getattr(info.value, "code", None) == ErrorCode.UNEXPECTED_MESSAGE


@pytest.mark.spec("VEL-AUTH-002")
def test_key_id_is_sha256_of_profile_and_key() -> None:
    ident = server_identity(BALANCED)
    expected = hashlib.sha256(b"\x11\xec" + ident.encapsulation_key).digest()[:8]
    assert ident.key_id == expected


@pytest.mark.spec("VEL-AUTH-010")
def test_pdk_key_of_another_profile_than_the_key_share() -> None:
    light, balanced = server_identity(LIGHT), server_identity(BALANCED)
    kem = kem_backend("cryptography")
    client, server = make_pair(PairSpec(BALANCED, "pdk", client={
        "server_key": PinnedServerKey(LIGHT, light.encapsulation_key)}, server={
        "static_keys": (balanced.static_key(kem), light.static_key(kem))}))
    client_done, server_done = completed(run_handshake(client, server))
    assert client_done.profile == "balanced" and client_done.mode == AuthMode.PDK
    assert server_done.key_id == light.key_id


@pytest.mark.spec("VEL-HS-033", "VEL-PROF-009", "VEL-PROF-010")
def test_defaults_and_aead_choice_by_client_order() -> None:
    assert ClientConfig(kem=kem_backend()).profiles == (BALANCED,)
    assert ServerConfig(kem=kem_backend()).profiles[0] == BALANCED
    assert ClientConfig(kem=kem_backend()).aeads[0] == Aead.AES_128_GCM
    order = (Aead.CHACHA20_POLY1305, Aead.AES_128_GCM)
    client_done, _ = completed(run_handshake(*make_pair(PairSpec(aeads=order))))
    assert client_done.aead == "CHACHA20_POLY1305"


@pytest.mark.spec("VEL-HS-060")
def test_kem_ciphertext_of_the_wrong_length_is_illegal() -> None:
    client, server = make_pair(PairSpec(mode="discovery"))
    shorten = rewrite(MessageType.KEM_CIPHERTEXT,
                      lambda m: type(m)(m.ciphertext[:-1]))
    closed_with(run_handshake(client, server, tamper=shorten), ErrorCode.ILLEGAL_PARAMETER,
                "server")


@pytest.mark.spec("VEL-SIZE-002")
def test_discovery_server_flight_fits_three_times_two_client_datagrams() -> None:
    client, server = make_pair(PairSpec(mode="discovery"))
    run = run_handshake(client, server)
    first_flight = sum(len(m) for f in run.flights[1:3] for m in f.messages)
    packet_overhead = 6 * (1 + 4 + 1 + 20 + 1 + 8 + 2 + 4 + 16 + 8)  # headers, tags, frames
    assert first_flight + packet_overhead <= 3 * 2 * 1200, first_flight


@pytest.mark.spec("VEL-KS-006")
def test_client_drops_its_ephemeral_key_once_combined() -> None:
    client, server = make_pair(PairSpec())
    completed(run_handshake(client, server))
    assert client._share is None


@pytest.mark.spec("VEL-KS-006")
@pytest.mark.parametrize("mode", ["pdk", "discovery"])
def test_a_completed_handshake_keeps_no_schedule_secret(mode: str) -> None:
    """Once complete, neither side holds shared secrets, stage secrets, FINISHED base keys
    or the schedule's steps; the client keeps only its resumption secret, for tickets."""
    client, server = make_pair(PairSpec(mode=mode, server={"ticket_sealer": ticket_sealer(
        bytes(32))}))
    completed(run_handshake(client, server))
    for side in (client, server):
        assert side._secrets == {} and side.schedule is None
        assert side.hybrid is None and side.static_secret is None
    assert client._share is None and client._resumption


@pytest.mark.spec("VEL-PROF-011", "VEL-HS-091")
def test_no_common_aead() -> None:
    """No AEAD in common: HANDSHAKE_FAILURE naming the field when the client offered only
    what the server serves over Velocity/1, FALLBACK reason 4 when it also offered h3."""
    only_chacha = {"aeads": (Aead.CHACHA20_POLY1305,)}
    client, server = make_pair(PairSpec(mode="pdk", client={**only_chacha},
                                        server={"aeads": (Aead.AES_128_GCM,)}))
    run = run_handshake(client, server)
    closed_with(run, ErrorCode.HANDSHAKE_FAILURE, "server")
    assert run.error is not None and run.error.field == "CLIENT_HELLO.aeads"
    client, server = make_pair(PairSpec(mode="pdk", client={
        **only_chacha, "alpn": (b"velocity/1", b"h3")}, server={"aeads": (Aead.AES_128_GCM,)}))
    (directive,) = events_of(run_handshake(client, server).client_events, FallbackDirected)
    assert directive.reason == 4 and directive.authenticated
