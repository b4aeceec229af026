"""Packet protection: the same code under QUIC v1's constants reproduces RFC 9001's
Appendix A and interoperates with aioquic; under Velocity's constants it round-trips and
discards what the spec says to discard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import get_retry_integrity_tag
from hypothesis import given
from hypothesis import strategies as st

from velocity.core.buffer import Writer
from velocity.core.errors import PacketDropped, UsageError
from velocity.core.packet import (
    LongHeader,
    PacketType,
    encode_retry_without_tag,
    push_long_header,
)
from velocity.core.protection import (
    Aead,
    PacketKeys,
    WireParams,
    initial_keys,
    initial_secrets,
    next_secret,
    retry_integrity_tag,
)

QUIC_V1 = WireParams(
    version=1, initial_salt=bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    label_prefix=b"tls13 ", label_client_in=b"client in", label_server_in=b"server in",
    label_key=b"quic key", label_iv=b"quic iv", label_hp=b"quic hp", label_ku=b"quic ku",
    retry_key=bytes.fromhex("be0c690b9f66575a1d766b54e368c84e"),
    retry_nonce=bytes.fromhex("461599d35d632bf2239825bb"))
DCID = bytes.fromhex("8394c8f03e515708")


@pytest.mark.spec("VEL-PROT-001", "VEL-PROT-003", "VEL-PROT-005")
def test_rfc9001_a1_initial_keys(shared_vectors: Path) -> None:
    a1 = json.loads((shared_vectors / "rfc" / "rfc_kdf_x25519_quic.json").read_text())[
        "rfc9001_appendix_a1_quic_v1_initial"]
    client, server = initial_secrets(bytes.fromhex(a1["client_dcid"]), QUIC_V1)
    assert (client.hex(), server.hex()) == (a1["client_initial_secret"],
                                            a1["server_initial_secret"])
    send, receive = initial_keys(bytes.fromhex(a1["client_dcid"]), is_client=True,
                                 params=QUIC_V1)
    for keys, side in ((send, "client"), (receive, "server")):
        assert (keys.material.key.hex(), keys.material.iv.hex(), keys.material.hp.hex()) == (
            a1[f"{side}_key"], a1[f"{side}_iv"], a1[f"{side}_hp"])


@pytest.mark.spec("VEL-PROT-007", "VEL-PROT-008", "VEL-PROT-011")
def test_rfc9001_a5_chacha20_short_header() -> None:
    """RFC 9001 Appendix A.5, transcribed: a 1-RTT PING under ChaCha20-Poly1305."""
    secret = bytes.fromhex("9ac312a7f877468ebe69422748ad00a15443f18203a07d6060f688f30f21632b")
    keys = PacketKeys(secret, Aead.CHACHA20_POLY1305, "sha256", QUIC_V1)
    assert keys.material.key.hex() == (
        "c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8")
    assert keys.material.iv.hex() == "e0459b3474bdd0e44a41c144"
    assert keys.material.hp.hex() == (
        "25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4")
    assert next_secret(secret, "sha256", QUIC_V1).hex() == (
        "1223504755036d556342ee9361d253421a826c9ecdf3c7148684b36b714881f9")
    packet = keys.encrypt_packet(bytes.fromhex("4200bff4"), b"\x01", 654360564)
    assert packet.hex() == "4cfe4189655e5cd55c41f69080575d7999c25a5bfb"
    assert keys.decrypt_packet(packet, 1, 654360564) == (bytes.fromhex("4200bff4"), b"\x01",
                                                         654360564)


def _initial_header(pn: int, payload_length: int) -> bytes:
    writer = Writer()
    push_long_header(writer, LongHeader(PacketType.INITIAL, 1, DCID, b"\x01\x02", pn, 2,
                                        2 + payload_length + 16))
    return writer.data()


@pytest.mark.spec("VEL-PROT-004", "VEL-PROT-007", "VEL-PROT-008")
@given(st.integers(0, 0xFFFF), st.binary(min_size=4, max_size=300))
def test_initial_packets_interoperate_with_aioquic(pn: int, payload: bytes) -> None:
    header = _initial_header(pn, len(payload))
    ours, _ = initial_keys(DCID, is_client=True, params=QUIC_V1)
    theirs = CryptoPair()
    theirs.setup_initial(cid=DCID, is_client=True, version=1)
    assert ours.encrypt_packet(header, payload, pn) == theirs.encrypt_packet(header, payload, pn)
    server = CryptoPair()
    server.setup_initial(cid=DCID, is_client=False, version=1)
    sealed = server.encrypt_packet(header, payload, pn)
    _, receive = initial_keys(DCID, is_client=True, params=QUIC_V1)
    assert receive.decrypt_packet(sealed, len(header) - 2, pn) == (header, payload, pn)


@pytest.mark.spec("VEL-RTY-001")
@given(st.binary(min_size=1, max_size=60))
def test_retry_tag_matches_aioquic(token: bytes) -> None:
    retry = encode_retry_without_tag(1, b"\x05" * 4, b"\x06" * 8, token)
    assert retry_integrity_tag(retry, DCID, QUIC_V1) == get_retry_integrity_tag(retry, DCID, 1)


@pytest.mark.spec("VEL-PROT-006", "VEL-PROT-010")
@pytest.mark.parametrize("aead", list(Aead))
@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_round_trip_and_tamper_under_every_aead(aead: Aead, hash_name: str) -> None:
    secret = bytes(range(48))
    sender = PacketKeys(secret, aead, hash_name)
    receiver = PacketKeys(secret, aead, hash_name)
    header = bytes.fromhex("41") + b"\xaa" * 8 + b"\x07\x08"
    packet = sender.encrypt_packet(header, b"payload bytes", 0x0708)
    assert receiver.decrypt_packet(packet, 9, 0x0700) == (header, b"payload bytes", 0x0708)
    for index in (0, 9, len(packet) - 1):
        tampered = bytearray(packet)
        tampered[index] ^= 0x01
        with pytest.raises(PacketDropped):
            receiver.decrypt_packet(bytes(tampered), 9, 0x0700)


@pytest.mark.spec("VEL-PROT-009", "VEL-PROT-010")
def test_short_packets_are_dropped_and_unsamplable_payloads_refused() -> None:
    keys = PacketKeys(bytes(32), Aead.AES_128_GCM, "sha256")
    with pytest.raises(PacketDropped) as info:
        keys.decrypt_packet(bytes(15), 9, 0)
    assert info.value.field == "payload"
    with pytest.raises(UsageError):
        keys.encrypt_packet(b"\x40" + bytes(8) + b"\x00", b"\x01\x00", 0)


@pytest.mark.spec("VEL-PROT-002")
def test_velocity_initial_keys_differ_from_quic_v1() -> None:
    assert initial_secrets(DCID) != initial_secrets(DCID, QUIC_V1)
