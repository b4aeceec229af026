"""Downgrade resistance without any secret on the attacker's side (spec VEL-FB-008 to
VEL-FB-011): the Initial space is readable by anyone, so a client that knows an origin
accepts only directives MACed under a key or PSK, and a stale key is never answered by an
unauthenticated directive."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.pair import PairSpec, make_pair, run_handshake, server_identity
from tests.core.handshake.helpers import closed_with, events_of, rewrite
from tests.core.handshake.test_resumption import SEALER, first_ticket
from velocity.core.errors import ErrorCode, ProtocolError
from velocity.core.handshake.client import PinnedServerKey
from velocity.core.handshake.common import FallbackDirected
from velocity.core.handshake.messages import (
    ClientHello,
    ExtensionType,
    Fallback,
    HelloRetry,
    MessageType,
    decode_message,
    encode_message,
)
from velocity.core.handshake.server import FallbackPolicy
from velocity.core.hybrid import BALANCED, LIGHT, PROFILES
from velocity.core.keyschedule import fallback_mac
from velocity.core.packet import Epoch

FALLBACK_ONLY = FallbackPolicy(mode="fallback-only")
FORGED = Fallback(b"h3", b"", 9443, 1, b"fallback-only mode", 0)


def _resuming(**server: object) -> tuple:  # type: ignore[type-arg]
    return make_pair(PairSpec(mode="discovery", seed="resume", client={
        "ticket": first_ticket(), "early_data": False}, server={
        "ticket_sealer": SEALER, **server}))


@pytest.mark.spec("VEL-FB-010")
def test_a_fallback_to_a_resuming_client_is_maced_under_the_psk() -> None:
    client, server = _resuming(fallback=FALLBACK_ONLY)
    run = run_handshake(client, server)
    (directive,) = events_of(run.client_events, FallbackDirected)
    assert directive.authenticated
    # recomputed from the wire: the CLIENT_HELLO as sent and the FALLBACK without its mac
    hello, answer = run.flights[0].messages[0], run.flights[1].messages[0]
    assert answer[0] == MessageType.FALLBACK
    body = answer[4:]
    ticket = client.config.ticket
    assert ticket is not None
    hash_name = PROFILES[ticket.profile].hash_name
    mac_length = len(fallback_mac(hash_name, b"", b"", b""))
    unsigned_body = body[: -(1 + mac_length)] + b"\x00"
    unsigned = bytes([answer[0]]) + len(unsigned_body).to_bytes(3, "big") + unsigned_body
    assert body[-mac_length:] == fallback_mac(hash_name, ticket.psk, hello, unsigned,
                                              keyed_by="resumption")


@pytest.mark.spec("VEL-FB-008", "VEL-FB-010")
@pytest.mark.parametrize("directive", ["forged", "stripped mac"])
def test_a_resuming_client_refuses_an_unauthenticated_fallback(directive: str) -> None:
    """Before the fix a resuming client sent no server_key block and followed any FALLBACK."""
    if directive == "forged":
        client, server = _resuming()
        tamper = rewrite(MessageType.SERVER_HELLO, lambda m: FORGED)
    else:
        client, server = _resuming(fallback=FALLBACK_ONLY)
        tamper = rewrite(MessageType.FALLBACK, lambda m: replace(m, mac=b""))
    closed_with(run_handshake(client, server, tamper=tamper), ErrorCode.DOWNGRADE_DETECTED,
                "client")


@pytest.mark.spec("VEL-FB-008", "VEL-FB-009")
def test_a_client_that_knows_the_origin_refuses_an_unauthenticated_fallback() -> None:
    """The rediscovery after a (forged) STALE_KEM_KEY carries no server_key block: the client
    still knows the origin speaks Velocity/1 and refuses an unauthenticated directive."""
    client, server = make_pair(PairSpec(mode="discovery", client={"known_origin": True}))
    run = run_handshake(client, server, tamper=rewrite(MessageType.SERVER_HELLO,
                                                       lambda m: FORGED))
    closed_with(run, ErrorCode.DOWNGRADE_DETECTED, "client")
    assert not events_of(run.client_events, FallbackDirected)
    # a client with no relationship treats the same directive as advisory
    client, server = make_pair(PairSpec(mode="discovery"))
    run = run_handshake(client, server, tamper=rewrite(MessageType.SERVER_HELLO,
                                                       lambda m: FORGED))
    (advisory,) = events_of(run.client_events, FallbackDirected)
    assert not advisory.authenticated


@pytest.mark.spec("VEL-FB-011", "VEL-AUTH-011")
def test_fallback_only_mode_answers_an_unknown_key_id_with_stale_kem_key() -> None:
    """Before the fix the server sent an unMACed FALLBACK, which the PDK client could only read
    as DOWNGRADE_DETECTED."""
    rotated = server_identity(BALANCED, seed=99)
    client, server = make_pair(PairSpec(mode="pdk", server={"fallback": FALLBACK_ONLY},
                                        client={"server_key": PinnedServerKey(
                                            BALANCED, rotated.encapsulation_key)}))
    closed_with(run_handshake(client, server), ErrorCode.STALE_KEM_KEY, "server")


@pytest.mark.spec("VEL-FB-010", "VEL-RES-004")
def test_a_hello_with_both_a_server_key_block_and_a_psk_is_illegal() -> None:
    pdk_client, _ = make_pair(PairSpec(mode="pdk", seed="block"))
    pdk_client.start(now_ms=0)
    pdk_hello = pdk_client.data_to_send(Epoch.INITIAL)
    parsed = decode_message(pdk_hello[0], pdk_hello[4:])
    assert isinstance(parsed, ClientHello)
    server_key = parsed.extension(ExtensionType.SERVER_KEY)
    assert server_key is not None

    def add_block(message: ClientHello) -> ClientHello:
        extensions = list(message.extensions)
        extensions.insert(0, (int(ExtensionType.SERVER_KEY), server_key))
        return replace(message, extensions=tuple(extensions))

    client, server = _resuming()
    run = run_handshake(client, server, tamper=rewrite(MessageType.CLIENT_HELLO, add_block))
    closed_with(run, ErrorCode.ILLEGAL_PARAMETER, "server")


@pytest.mark.spec("VEL-FB-003", "VEL-VAR-003")
def test_the_mac_covers_the_directive_as_received_even_with_non_minimal_varints() -> None:
    """A directive whose reason is a 2-byte varint (allowed, VEL-VAR-003), MACed over its
    own bytes: accepted. The client used to re-encode the fields minimally and cry attack."""
    client, _ = make_pair(PairSpec(mode="pdk", seed="varint"))
    client.start(now_ms=0)
    hello = client.data_to_send(Epoch.INITIAL)
    assert client.static_secret is not None and client.config.server_key is not None

    def fallback(mac: bytes) -> bytes:
        body = (b"\x02h3" + b"\x00" + (443).to_bytes(2, "big") + b"\x40\x01"
                + b"\x05other" + b"\x00" + bytes([len(mac)]) + mac)
        return bytes([MessageType.FALLBACK]) + len(body).to_bytes(3, "big") + body
    hash_name = client.config.server_key.profile.hash_name
    mac = fallback_mac(hash_name, client.static_secret, hello, fallback(b""))
    client.receive(Epoch.INITIAL, fallback(mac), now_ms=1)
    (directive,) = [e for e in iter(client.next_event, None) if isinstance(e, FallbackDirected)]
    assert directive.authenticated and directive.reason == 1


@pytest.mark.spec("VEL-FB-008", "VEL-FB-009", "VEL-HS-023")
def test_a_forged_hello_retry_that_drops_the_ticket_does_not_open_the_door() -> None:
    """HELLO_RETRY to another offered profile makes a resuming client drop its ticket; the
    client still knows the origin, so an unauthenticated FALLBACK after it is refused."""
    ticket = first_ticket()
    client, _ = make_pair(PairSpec(mode="discovery", seed="hrr", client={
        "ticket": ticket, "profiles": (BALANCED, LIGHT)}))
    client.start(now_ms=3_000)
    client.data_to_send(Epoch.INITIAL)
    client.receive(Epoch.INITIAL, encode_message(HelloRetry(LIGHT.code)), now_ms=3_001)
    assert client.data_to_send(Epoch.INITIAL)  # the second CLIENT_HELLO, without the PSK
    with pytest.raises(ProtocolError) as refused:
        client.receive(Epoch.INITIAL, encode_message(FORGED), now_ms=3_002)
    assert refused.value.code == ErrorCode.DOWNGRADE_DETECTED


@pytest.mark.spec("VEL-AUTH-013")
def test_a_server_key_ciphertext_of_the_wrong_length_is_illegal() -> None:
    def shorten(message: ClientHello) -> ClientHello:
        """The PDK ciphertext one byte short, its length field saying so."""
        def short(value: bytes) -> bytes:
            key_id_len = value[0]
            key_id, ciphertext = value[1 : 1 + key_id_len], value[3 + key_id_len : -1]
            return (bytes([key_id_len]) + key_id
                    + bytes([0x40 | len(ciphertext) >> 8, len(ciphertext) & 0xFF]) + ciphertext)
        return replace(message, extensions=tuple(
            (t, short(v) if t == ExtensionType.SERVER_KEY else v) for t, v in message.extensions))
    client, server = make_pair(PairSpec(mode="pdk", seed="ct-length"))
    run = run_handshake(client, server, tamper=rewrite(MessageType.CLIENT_HELLO, shorten))
    closed_with(run, ErrorCode.ILLEGAL_PARAMETER, "server")
