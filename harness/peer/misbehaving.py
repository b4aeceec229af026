"""What the harness's server does that a conforming server would not, to test how a client
takes it: a HELLO_RETRY in place of its answer to a CLIENT_HELLO (``hello_retry_hook``),
session tickets it cannot honour later (``BadTickets``), and hand-written Retry and Version
Negotiation packets sent before (or instead of) what its endpoint answers to a client's
Initial (``StatelessAnswers``, a ``ServerPeer.answer``). Packets are built with the
reference codecs; what is wrong in them is chosen here."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from velocity.core.connection import Address
from velocity.core.entropy import Entropy
from velocity.core.errors import PacketDropped, ProtocolError
from velocity.core.handshake.common import TicketSealer, TicketState
from velocity.core.handshake.messages import HelloRetry, Message, ServerHello
from velocity.core.packet import (
    VELOCITY_VERSION,
    PacketType,
    VersionNegotiation,
    encode_retry_without_tag,
    encode_version_negotiation,
    parse_header,
)
from velocity.core.protection import retry_integrity_tag
from velocity.core.seams import MessageHook
from velocity.crypto.sealing import RotatingSealer

RETRIES = ("valid", "bad_tag", "empty_token", "late", "twice")
VERSION_NEGOTIATIONS = ("ours", "others", "late")
TICKETS = ("valid", "garbage", "wrong_aad", "expired", "future", "stale_age")
OTHER_VERSIONS = (0x1A2A3A4A, 0x00000001)  # versions no Velocity/1 client speaks


def hello_retry_hook(profile: int, count: int) -> MessageHook:
    """The server's answers to the first ``count`` CLIENT_HELLOs (SERVER_HELLO, or its own
    HELLO_RETRY) become HELLO_RETRY selecting ``profile``."""
    answered = 0

    def hook(message: Message) -> Message | None:
        nonlocal answered
        if not isinstance(message, ServerHello | HelloRetry):
            return message
        answered += 1
        return HelloRetry(profile) if answered <= count else message
    return hook


def chain(*hooks: MessageHook | None) -> MessageHook | None:
    """One message hook applying ``hooks`` in order (None: none of them)."""
    present = [h for h in hooks if h is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def hook(message: Message) -> Message | None:
        current: Message | None = message
        for one in present:
            if current is None:
                return None
            current = one(current)
        return current
    return hook


class BadTickets:
    """A ticket sealer whose tickets this server will not honour as a client expects:
    ``garbage`` (random bytes), ``wrong_aad`` (sealed under other associated data: it never
    opens), ``expired`` (issued longer ago than its lifetime), ``future`` (issued a minute
    ahead of the server's clock), ``stale_age`` (issued 30 s before it was: the PSK is
    taken, its early data refused, VEL-RES-005). ``valid`` seals as the server does."""

    def __init__(self, sealer: RotatingSealer, kind: str, *, key: bytes, lifetime_s: int,
                 entropy: Entropy) -> None:
        self._sealer, self.kind, self._entropy = sealer, kind, entropy
        self._other = RotatingSealer(key, aad=b"velocity1 tickex")
        self._shift = {"expired": -(lifetime_s + 60) * 1000, "future": 60_000,
                       "stale_age": -30_000}.get(kind, 0)

    def seal(self, plaintext: bytes, nonce: bytes) -> bytes:
        if self.kind == "garbage":
            return self._entropy.random(len(plaintext) + 29)
        if self.kind == "wrong_aad":
            return self._other.seal(plaintext, nonce)
        state = TicketState.decode(plaintext)
        if self._shift and state is not None:
            plaintext = dataclasses.replace(
                state, issued_ms=max(0, state.issued_ms + self._shift)).encode()
        return self._sealer.seal(plaintext, nonce)

    def open(self, ticket: bytes) -> bytes | None:
        return self._sealer.open(ticket)


def sealer_for(kind: str, sealer: RotatingSealer, *, key: bytes, lifetime_s: int,
               entropy: Entropy) -> TicketSealer:
    return sealer if kind == "valid" else BadTickets(sealer, kind, key=key,
                                                     lifetime_s=lifetime_s, entropy=entropy)


class StatelessAnswers:
    """Answers to a client's Initials before the endpoint's: a ``retry`` (``bad_tag``: its
    integrity tag corrupted, ``empty_token``, ``late``: a valid one after the endpoint's
    answer, ``twice``: a second valid Retry answering the Initial that followed the
    endpoint's own, which then needs the endpoint's Retry policy ``always``) or a
    ``version_negotiation`` (``ours``: listing the client's version, ``others``: only other
    versions, the datagram then kept from the endpoint, ``late``: only other versions after
    the endpoint's answer). ``valid`` leaves Retry to the endpoint."""

    def __init__(self, send: Callable[[bytes, Address], None], entropy: Entropy, *,
                 retry: str | None = None, version_negotiation: str | None = None) -> None:
        self._send, self._entropy = send, entropy
        self.retry, self.version_negotiation = retry, version_negotiation
        self._first_dcid: dict[Address, bytes] = {}  # the client's first DCID per address
        self._answered: set[Address] = set()

    def __call__(self, data: bytes, address: Address) -> bool:
        try:
            header = parse_header(data, short_dcid_length=0)
        except (PacketDropped, ProtocolError):
            return True
        if header.packet_type != PacketType.INITIAL or address in self._answered:
            return True
        first = self._first_dcid.setdefault(address, header.dcid)
        if self.retry == "twice":
            if header.dcid == first:
                return True  # the endpoint's own Retry answers it
            self._answered.add(address)
            self._send(self._retry(header.scid, first, token=self._entropy.random(24)), address)
            return True
        self._answered.add(address)
        now, later = self._answers(header.scid, header.dcid)
        for packet in now:
            self._send(packet, address)
        if later:
            # right behind the endpoint's answer, which leaves once this read is handled
            asyncio.get_running_loop().call_soon(lambda: [self._send(p, address) for p in later])
        return self.version_negotiation != "others"

    def _answers(self, scid: bytes, dcid: bytes) -> tuple[list[bytes], list[bytes]]:
        """(packets sent before the endpoint sees the datagram, packets sent after)."""
        token = self._entropy.random(24)
        packets: dict[str | None, tuple[list[bytes], list[bytes]]] = {
            "bad_tag": ([self._retry(scid, dcid, token=token, corrupt=True)], []),
            "empty_token": ([self._retry(scid, dcid, token=b"")], []),
            "late": ([], [self._retry(scid, dcid, token=token)]),
        }
        before, after = packets.get(self.retry, ([], []))
        versions = {"ours": (VELOCITY_VERSION, *OTHER_VERSIONS), "others": OTHER_VERSIONS,
                    "late": OTHER_VERSIONS}.get(self.version_negotiation or "")
        if versions is not None:
            packet = encode_version_negotiation(VersionNegotiation(scid, dcid, versions))
            (after if self.version_negotiation == "late" else before).append(packet)
        return before, after

    def _retry(self, scid: bytes, original_dcid: bytes, *, token: bytes,
               corrupt: bool = False) -> bytes:
        packet = encode_retry_without_tag(VELOCITY_VERSION, scid, self._entropy.random(8),
                                          token)
        tag = retry_integrity_tag(packet, original_dcid)
        return packet + (bytes(b ^ 0xFF for b in tag) if corrupt else tag)
