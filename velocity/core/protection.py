"""Packet protection (spec "Packet protection", RFC 9001 section 5 with Velocity labels):
Initial secrets from the client's first DCID, packet keys from traffic secrets, payload AEAD
(AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305), header protection, key update, and the Retry
integrity tag.

The wire constants (salt, labels, Retry key and nonce) are one ``WireParams`` value, so the
same code can be checked against QUIC v1's published vectors with QUIC's constants.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from velocity.core.buffer import SINGLE_BYTES
from velocity.core.errors import AuthenticationFailed, PacketDropped, UsageError
from velocity.core.keyschedule import LABEL_PREFIX, HmacKey, expand_label, extract
from velocity.core.packet import FORM_LONG, VELOCITY_VERSION, decode_packet_number

SAMPLE_LENGTH = 16
TAG_LENGTH = 16
IV_LENGTH = 12


class Aead(IntEnum):
    """AEAD identifiers (the HPKE AEAD registry, RFC 9180 section 7.3)."""

    AES_128_GCM = 0x0001
    AES_256_GCM = 0x0002
    CHACHA20_POLY1305 = 0x0003


KEY_LENGTH = {Aead.AES_128_GCM: 16, Aead.AES_256_GCM: 32, Aead.CHACHA20_POLY1305: 32}
# RFC 9001 section 6.6 (VEL-PROT-012): packets per key, and forged packets per connection
CONFIDENTIALITY_LIMIT = {Aead.AES_128_GCM: 1 << 23, Aead.AES_256_GCM: 1 << 23,
                         Aead.CHACHA20_POLY1305: 1 << 62}
INTEGRITY_LIMIT = {Aead.AES_128_GCM: 1 << 52, Aead.AES_256_GCM: 1 << 52,
                   Aead.CHACHA20_POLY1305: 1 << 36}


@dataclass(frozen=True, slots=True)
class WireParams:
    """The constants that tie packet protection to one wire version."""

    version: int
    initial_salt: bytes
    label_prefix: bytes
    label_client_in: bytes
    label_server_in: bytes
    label_key: bytes
    label_iv: bytes
    label_hp: bytes
    label_ku: bytes
    retry_key: bytes
    retry_nonce: bytes


VELOCITY_PARAMS = WireParams(
    version=VELOCITY_VERSION,
    initial_salt=bytes.fromhex("58fd01c07719a766e8ea79dcbb2700aaf3d0e177"),
    label_prefix=LABEL_PREFIX,
    label_client_in=b"client in",
    label_server_in=b"server in",
    label_key=b"key",
    label_iv=b"iv",
    label_hp=b"hp",
    label_ku=b"ku",
    retry_key=bytes.fromhex("12c855c49bcb755d3aa4c6dbfabd03be"),
    retry_nonce=bytes.fromhex("907b76b1fcc4eb1b2926559e"),
)


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """Key, IV and header-protection key derived from one traffic secret."""

    key: bytes
    iv: bytes
    hp: bytes


def derive_key_material(secret: bytes, aead: Aead, hash_name: str,
                        params: WireParams = VELOCITY_PARAMS) -> KeyMaterial:
    size = KEY_LENGTH[aead]
    prefix = params.label_prefix
    prk = HmacKey(hash_name, secret)
    return KeyMaterial(
        key=prk.expand_label(params.label_key, b"", size, prefix),
        iv=prk.expand_label(params.label_iv, b"", IV_LENGTH, prefix),
        hp=prk.expand_label(params.label_hp, b"", size, prefix),
    )


def initial_secrets(dcid: bytes, params: WireParams = VELOCITY_PARAMS) -> tuple[bytes, bytes]:
    """(client_initial_secret, server_initial_secret) for the client's first DCID."""
    initial = HmacKey("sha256", extract("sha256", params.initial_salt, dcid))
    prefix = params.label_prefix
    return (initial.expand_label(params.label_client_in, b"", 32, prefix),
            initial.expand_label(params.label_server_in, b"", 32, prefix))


def next_secret(secret: bytes, hash_name: str, params: WireParams = VELOCITY_PARAMS) -> bytes:
    """The traffic secret after a key update."""
    return expand_label(hash_name, secret, params.label_ku, b"", len(secret),
                        params.label_prefix)


class PacketKeys:
    """Protection for one direction of one packet-number space under one traffic secret.
    The key, IV and header-protection key, and the cipher contexts, are set up on first use:
    a server's 1-RTT keys exist from its first flight on but protect nothing until the
    client's FINISHED, and that flight should not wait for them."""

    __slots__ = ("_aead", "_ecb", "_hp_key", "_iv", "_material", "_params", "aead",
                 "encrypted", "hash_name", "secret")

    def __init__(self, secret: bytes, aead: Aead, hash_name: str,
                 params: WireParams = VELOCITY_PARAMS, *, hp_key: bytes | None = None) -> None:
        self.secret = secret
        self.aead = aead
        self.hash_name = hash_name
        self._params = params
        self.encrypted = 0  # packets sealed under this key (the confidentiality limit)
        self._material: KeyMaterial | None = None
        self._hp_key = hp_key  # a key update keeps the first HP key
        self._aead: AESGCM | ChaCha20Poly1305 | None = None
        self._ecb: Any = None
        self._iv = 0

    @property
    def material(self) -> KeyMaterial:
        if self._material is None:
            self._set_up()
        return cast(KeyMaterial, self._material)

    def _set_up(self) -> AESGCM | ChaCha20Poly1305:
        """Derive the key material and make the cipher contexts; answers the AEAD."""
        material = self._material = derive_key_material(self.secret, self.aead,
                                                        self.hash_name, self._params)
        self._iv = int.from_bytes(material.iv, "big")
        self._hp_key = self._hp_key or material.hp
        aead: AESGCM | ChaCha20Poly1305
        if self.aead == Aead.CHACHA20_POLY1305:
            aead = ChaCha20Poly1305(material.key)
        else:
            aead = AESGCM(material.key)
            self._ecb = Cipher(algorithms.AES(self._hp_key), modes.ECB()).encryptor()
        self._aead = aead
        return aead

    def next_generation(self) -> PacketKeys:
        """The keys after a key update (VEL-PROT-011): next secret, same header protection."""
        if self._aead is None:
            self._set_up()
        return PacketKeys(next_secret(self.secret, self.hash_name, self._params), self.aead,
                          self.hash_name, self._params, hp_key=self._hp_key)

    def _chacha_mask(self, sample: bytes) -> bytes:
        """ChaCha20 header protection's mask (AES's is one ECB block, taken in line)."""
        hp_key = self._hp_key
        assert hp_key is not None  # set up by the caller
        encryptor = Cipher(algorithms.ChaCha20(hp_key, sample), None).encryptor()
        return encryptor.update(b"\x00" * 5)

    def encrypt_packet(self, plain_header: bytes, payload: bytes, packet_number: int) -> bytes:
        """Seal ``payload`` under ``plain_header`` (which ends with the packet number) and
        apply header protection. ``packet_number`` is the full packet number."""
        pn_length = (plain_header[0] & 0x03) + 1
        if pn_length + len(payload) < 4:
            raise UsageError("payload too short for a header-protection sample; pad it")
        aead = self._aead or self._set_up()
        protected = aead.encrypt((self._iv ^ packet_number).to_bytes(IV_LENGTH, "big"), payload,
                                 plain_header)
        self.encrypted += 1
        pn_offset = len(plain_header) - pn_length
        sample_at = 4 - pn_length
        sample = protected[sample_at : sample_at + SAMPLE_LENGTH]
        mask = self._ecb.update(sample) if self._ecb is not None else self._chacha_mask(sample)
        first = plain_header[0] ^ (mask[0] & (0x0F if plain_header[0] & FORM_LONG else 0x1F))
        pn = (int.from_bytes(plain_header[pn_offset:], "big")
              ^ int.from_bytes(mask[1 : 1 + pn_length], "big")).to_bytes(pn_length, "big")
        return b"".join((first.to_bytes(1, "big"), plain_header[1:pn_offset], pn, protected))

    def decrypt_packet(self, packet: bytes, pn_offset: int,
                       expected_packet_number: int) -> tuple[bytes, bytes, int]:
        """Remove header protection and open the payload of ``packet`` (one packet, already
        cut from its datagram). Returns (plain header, payload, full packet number).

        Raises ``PacketDropped`` when the packet is too short to sample or fails
        authentication: the spec says such packets are discarded."""
        header, packet_number = self.remove_header_protection(packet, pn_offset,
                                                              expected_packet_number)
        return header, self.open_payload(packet, header, packet_number), packet_number

    def open_payload(self, packet: bytes, header: bytes, packet_number: int) -> bytes:
        """AEAD-open the payload that follows the unprotected ``header``."""
        aead = self._aead or self._set_up()
        try:
            return aead.decrypt((self._iv ^ packet_number).to_bytes(IV_LENGTH, "big"),
                                memoryview(packet)[len(header) :], header)
        except InvalidTag:
            raise AuthenticationFailed("AEAD authentication failed", field="payload") from None

    def remove_header_protection(self, packet: bytes, pn_offset: int,
                                 expected_packet_number: int) -> tuple[bytes, int]:
        """(plain header, full packet number) of ``packet``."""
        sample = packet[pn_offset + 4 : pn_offset + 4 + SAMPLE_LENGTH]
        if len(sample) < SAMPLE_LENGTH:
            raise PacketDropped("too short for a header-protection sample", field="payload")
        if self._aead is None:
            self._set_up()
        mask = self._ecb.update(sample) if self._ecb is not None else self._chacha_mask(sample)
        first = packet[0] ^ (mask[0] & (0x0F if packet[0] & FORM_LONG else 0x1F))
        pn_length = (first & 0x03) + 1
        truncated = (int.from_bytes(packet[pn_offset : pn_offset + pn_length], "big")
                     ^ int.from_bytes(mask[1 : 1 + pn_length], "big"))
        header = SINGLE_BYTES[first] + packet[1:pn_offset] + truncated.to_bytes(pn_length, "big")
        return header, decode_packet_number(truncated, pn_length, expected_packet_number)


def initial_keys(dcid: bytes, *, is_client: bool,
                 params: WireParams = VELOCITY_PARAMS) -> tuple[PacketKeys, PacketKeys]:
    """(send, receive) Initial keys for an endpoint; both use AES-128-GCM and SHA-256."""
    client, server = initial_secrets(dcid, params)
    send, receive = (client, server) if is_client else (server, client)
    return (PacketKeys(send, Aead.AES_128_GCM, "sha256", params),
            PacketKeys(receive, Aead.AES_128_GCM, "sha256", params))


def retry_tag_valid(retry: bytes, original_dcid: bytes,
                    params: WireParams = VELOCITY_PARAMS) -> bool:
    """Whether a received Retry packet's tag verifies for ``original_dcid`` (VEL-RTY-002)."""
    expected = retry_integrity_tag(retry[:-16], original_dcid, params)
    return hmac.compare_digest(expected, retry[-16:])


def retry_integrity_tag(retry_without_tag: bytes, original_dcid: bytes,
                        params: WireParams = VELOCITY_PARAMS) -> bytes:
    """The Retry integrity tag: AES-128-GCM over the Retry pseudo-packet, empty plaintext."""
    pseudo = bytes([len(original_dcid)]) + original_dcid + retry_without_tag
    return AESGCM(params.retry_key).encrypt(params.retry_nonce, b"", pseudo)
