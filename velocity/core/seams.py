"""The designed seams through which the conformance harness's scripted peer sends what a
normal peer never would, and sees what a normal peer never shows: frames in any
packet-number space (``Connection.send_frames``), a packet mutator between planning and
sealing, a CRYPTO policy for the first transmission of handshake bytes, a hook on every
handshake message before it is encoded and hashed, factories for the hybrid key shares,
and an observer of every packet payload as it was opened, byte for byte. This module owns
their types. Each seam is off (None) by default, the reference endpoint never sets one,
and an unused seam costs one attribute test on its path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from velocity.core.entropy import Entropy
from velocity.core.handshake.messages import Message
from velocity.core.hybrid import HybridSecret, Profile
from velocity.core.kem import KemBackend
from velocity.core.packet import Epoch, PacketType


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    """Header fields a packet mutator writes instead of the sender's (None: the sender's),
    under header protection like the real ones: the two reserved bits, the packet-number
    length (1..4 bytes, the number truncated to it), the connection IDs, the version, the
    Initial token and the long header's Length value."""

    reserved_bits: int = 0
    pn_length: int | None = None
    dcid: bytes | None = None
    scid: bytes | None = None
    version: int | None = None
    token: bytes | None = None
    length: int | None = None


NO_EDITS = HeaderEdits()


@dataclass(frozen=True, slots=True)
class PlannedPacket:
    """A packet as planned, before padding and protection: its frames, encoded, and the
    header edits a packet mutator asks for (none by default)."""

    epoch: Epoch
    packet_type: PacketType
    packet_number: int
    payload: bytes
    header: HeaderEdits = NO_EDITS


PacketMutator = Callable[[list[PlannedPacket]], list[PlannedPacket]]
"""Called with the packets planned for one datagram; returns the packets to seal into it, in
order: rewrite a payload or header fields (``HeaderEdits``), drop a packet (it stays
recorded as sent, so loss recovery resends its frames), repeat one (the same packet number
twice), reorder them. A returned packet must carry the epoch and packet number of a planned
one."""

CryptoPolicy = Callable[[Epoch, int, bytes], list[list[tuple[int, bytes]]]]
"""The first transmission of handshake bytes: ``(epoch, offset, data)`` as the handshake
produced them -> packets, each a list of CRYPTO ``(offset, data)`` pieces (any sizes, order,
overlaps and repeats, pieces of one packet in one CRYPTO frame each). Every packet goes in a
datagram of its own. Loss recovery retransmits the data as usual."""

PayloadObserver = Callable[[PacketType, int, bytes], None]
"""Every packet this endpoint opened and did not drop as a duplicate: its type, its packet
number and its decrypted payload, as received, before its frames are decoded (the frames
keep no trace of how their fields were encoded)."""

MessageHook = Callable[[Message], "Message | None"]
"""Every handshake message this endpoint sends, before it is encoded and added to the
transcript: return it changed (any field; another message type), or None to send nothing.
The transcript hashes what was actually sent."""


class KeyShare(Protocol):
    """The client's ephemeral hybrid key share as the handshake uses it."""

    profile: Profile
    share: bytes

    def finish(self, server_share: bytes) -> HybridSecret:
        """Combine with the server's share."""
        ...


ClientShareFactory = Callable[[Profile, KemBackend, Entropy], KeyShare]
"""Makes the client's key share (default ``hybrid.ClientKeyShare``): wrong lengths, an
all-zero or off-curve ECDH part, ML-KEM coefficients of q or more."""

ServerShareFactory = Callable[[Profile, KemBackend, bytes, Entropy],
                              tuple[bytes, HybridSecret]]
"""Answers the client's share (default ``hybrid.server_key_share``): (server share,
combined secret)."""


@dataclass
class ConnectionSeams:
    """The connection-level seams, all off."""

    packet_mutator: PacketMutator | None = None
    crypto_policy: CryptoPolicy | None = None
    payload_observer: PayloadObserver | None = None
    injecting: bool = False  # send_frames was used: the sender looks for injected packets
