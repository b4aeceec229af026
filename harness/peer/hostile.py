"""Ready-made hostile inputs for the core's seams (velocity.core.seams), by the names
scenarios use: malformed client key shares and server_key blocks, CRYPTO policies and packet
mutators. The layouts are the spec's (section 9: ML-KEM first for the X25519 groups, the
P-384 point first for SecP384r1MLKEM1024; section 10.2: the server_key block), written here
from the spec, not taken from the core."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from velocity.core.buffer import Reader, Writer
from velocity.core.entropy import Entropy
from velocity.core.errors import UsageError
from velocity.core.handshake.messages import ClientHello, Message
from velocity.core.hybrid import ClientKeyShare, HybridSecret, Profile
from velocity.core.kem import KemBackend
from velocity.core.packet import Epoch
from velocity.core.seams import (
    ClientShareFactory,
    CryptoPolicy,
    MessageHook,
    PacketMutator,
    PlannedPacket,
)

ECDH_SIZES = {"x25519": 32, "p384": 97}


def _parts(profile: Profile, share: bytes) -> tuple[bytes, bytes]:
    """(ML-KEM encapsulation key, ECDH public value) of a client share."""
    ecdh = ECDH_SIZES[profile.ecdh]
    if profile.ecdh == "x25519":
        return share[:-ecdh], share[-ecdh:]
    return share[ecdh:], share[:ecdh]


def _join(profile: Profile, kem: bytes, ecdh: bytes) -> bytes:
    return kem + ecdh if profile.ecdh == "x25519" else ecdh + kem


def _coefficient_q(kem: bytes) -> bytes:
    """The first 12-bit coefficient of the encapsulation key set to 4095 (>= q = 3329): the
    FIPS 203 section 7.2 modulus check fails."""
    return bytes([0xFF, kem[1] | 0x0F]) + kem[2:]


def _off_curve(ecdh: bytes) -> bytes:
    """An uncompressed P-384 point with its y coordinate changed: not on the curve."""
    return ecdh[:-1] + bytes([ecdh[-1] ^ 0x01])


_EDITS: dict[str, Callable[[Profile, bytes], bytes]] = {
    "short": lambda profile, share: share[:-1],
    "long": lambda profile, share: share + b"\x00",
    "zero_ecdh": lambda profile, share: _join(profile, _parts(profile, share)[0],
                                              bytes(ECDH_SIZES[profile.ecdh])),
    "mlkem_coefficient_q": lambda profile, share: _join(
        profile, _coefficient_q(_parts(profile, share)[0]), _parts(profile, share)[1]),
    "p384_off_curve": lambda profile, share: _join(
        profile, _parts(profile, share)[0], _off_curve(_parts(profile, share)[1])),
}
KEY_SHARES = tuple(_EDITS)


class _EditedShare:
    """A real key share whose wire bytes were edited; it can still finish if the server
    answers (a server that accepted a bad share then fails the handshake)."""

    def __init__(self, real: ClientKeyShare, share: bytes) -> None:
        self.profile = real.profile
        self.share = share
        self._real = real

    def finish(self, server_share: bytes) -> HybridSecret:
        return self._real.finish(server_share)


def key_share(name: str) -> ClientShareFactory:
    """A client share factory by name (see KEY_SHARES). ``zero_ecdh`` sends the all-zero
    X25519 public value (the server's shared secret is all zero, VEL-PROF-006) or an all-zero
    P-384 point (not a point, VEL-PROF-005)."""
    if name not in _EDITS:
        raise UsageError(f"key share {name!r} is not one of {', '.join(KEY_SHARES)}")
    edit = _EDITS[name]

    def factory(profile: Profile, kem: KemBackend, entropy: Entropy) -> _EditedShare:
        real = ClientKeyShare(profile, kem, entropy)
        if name == "p384_off_curve" and profile.ecdh != "p384":
            raise UsageError("p384_off_curve needs the secure profile")
        return _EditedShare(real, edit(profile, real.share))

    return factory


SERVER_KEY_EXTENSION = 0x02  # spec section 13
SERVER_KEY_EDITS: dict[str, Callable[[bytes], bytes]] = {
    "short": lambda ciphertext: ciphertext[:-1],
    "long": lambda ciphertext: ciphertext + b"\x00",
}


def server_key_block(name: str) -> MessageHook:
    """A CLIENT_HELLO hook that rewrites the ciphertext of its server_key block
    (``vec<u8>(key_id) || vec<varint>(ciphertext)``, spec 10.2) one byte ``short`` or
    ``long``, the key id kept; other messages pass unchanged."""
    if name not in SERVER_KEY_EDITS:
        raise UsageError(f"server_key {name!r} is not one of {', '.join(SERVER_KEY_EDITS)}")
    edit = SERVER_KEY_EDITS[name]

    def hook(message: Message) -> Message:
        if not isinstance(message, ClientHello):
            return message
        block = message.extension(SERVER_KEY_EXTENSION)
        if block is None:
            return message
        reader = Reader(block)
        key_id, ciphertext = reader.pull_vec8(), reader.pull_vec_varint()
        writer = Writer()
        writer.push_vec8(key_id)
        writer.push_vec_varint(edit(ciphertext))
        extensions = tuple((t, writer.data() if t == SERVER_KEY_EXTENSION else v)
                           for t, v in message.extensions)
        return replace(message, extensions=extensions)

    return hook


def crypto_chunks(sizes: list[int], *, epochs: tuple[Epoch, ...] = (Epoch.INITIAL,),
                  order: str = "forward", overlap: int = 0,
                  duplicate: bool = False) -> CryptoPolicy:
    """Cut each first transmission in ``epochs`` into pieces of ``sizes`` (the last size
    repeats), each piece ``overlap`` bytes into the next, sent ``forward`` or ``reverse``,
    and with ``duplicate`` the first piece once more at the end; one datagram per piece."""
    if not sizes or any(size < 1 for size in sizes) or overlap < 0:
        raise UsageError("CRYPTO chunk sizes are positive and the overlap not negative")

    def policy(epoch: Epoch, offset: int, data: bytes) -> list[list[tuple[int, bytes]]]:
        if epoch not in epochs:
            return [[(offset, data)]]
        pieces, start, index = [], 0, 0
        while start < len(data):
            size = sizes[min(index, len(sizes) - 1)]
            pieces.append((offset + start, data[start : start + size + overlap]))
            start, index = start + size, index + 1
        if order == "reverse":
            pieces.reverse()
        if duplicate:
            pieces.append(pieces[0])
        return [[piece] for piece in pieces]

    return policy


def packet_mutator(*, drop: tuple[int, ...] = (), duplicate: tuple[int, ...] = (),
                   reorder: bool = False, epochs: tuple[Epoch, ...] | None = None,
                   payload: Callable[[bytes], bytes] | None = None) -> PacketMutator:
    """Counting the packets it sees (those of ``epochs``, all by default) from 0: drop the
    ``drop`` ones, send the ``duplicate`` ones twice, reverse each datagram's packets with
    ``reorder``, and rewrite payloads with ``payload``."""
    seen = [0]

    def mutate(packets: list[PlannedPacket]) -> list[PlannedPacket]:
        out: list[PlannedPacket] = []
        for packet in packets:
            if epochs is not None and packet.epoch not in epochs:
                out.append(packet)
                continue
            index, seen[0] = seen[0], seen[0] + 1
            if index in drop:
                continue
            sent = packet if payload is None else replace(packet,
                                                          payload=payload(packet.payload))
            out.extend([sent, sent] if index in duplicate else [sent])
        return list(reversed(out)) if reorder else out

    return mutate
