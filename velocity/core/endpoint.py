"""The server side of many connections, sans-I/O: connection-ID demultiplexing, stateless
answers to datagrams that belong to no connection (Version Negotiation, Retry, refusal),
address-validation tokens, the session limit, the bounds on half-open connections and load
shedding (spec VEL-CONN-004, VEL-CONN-005, VEL-CONN-009, VEL-CONN-010, VEL-CONN-015,
VEL-VN-001, VEL-RTY-*). The asyncio server (``velocity.aio.server``) only moves bytes."""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from velocity.core.buffer import Writer
from velocity.core.connection import Address, Connection, ConnectionConfig
from velocity.core.entropy import Entropy
from velocity.core.errors import (
    ErrorCode,
    InvalidToken,
    PacketDropped,
    ProtocolError,
    UsageError,
)
from velocity.core.events import Event
from velocity.core.frames import ConnectionClose, NewToken, encode_frames
from velocity.core.packet import (
    MIN_INITIAL_DATAGRAM,
    VELOCITY_VERSION,
    LongHeader,
    PacketType,
    ProtectedHeader,
    VersionNegotiation,
    encode_retry_without_tag,
    encode_version_negotiation,
    parse_header,
    push_long_header,
)
from velocity.core.protection import initial_keys, retry_integrity_tag
from velocity.core.sender import MAX_DATAGRAMS_PER_CALL
from velocity.core.state import State
from velocity.core.trace import Tracer

RETRY_POLICIES = ("never", "always", "under-load")
NEW_TOKEN_LIFETIME_MS = 24 * 3600 * 1000
RESERVED_VERSION = 0x1A2A3A4A  # VEL-VN-005: keep clients tolerant of unknown versions
MIN_CLIENT_DCID = 8  # bytes of a client's first, unpredictable DCID (VEL-PKT-014)


class TokenSealer(Protocol):
    """Issues and validates address-validation tokens (``velocity.crypto.sealing``)."""

    def issue(self, address: str, port: int, original_dcid: bytes, *, now_ms: int,
              nonce: bytes) -> bytes: ...

    def validate(self, token: bytes, address: str, port: int, *, now_ms: int,
                 lifetime_ms: int | None = None) -> bytes | None: ...


@dataclass(frozen=True)
class EndpointConfig:
    connection: ConnectionConfig
    retry: str = "never"
    max_sessions: int = 10_000
    under_load: int = 64  # connections awaiting validation before Retry kicks in
    max_half_open_per_address: int = 32  # handshakes in progress from one IP (VEL-CONN-010)
    # seconds a datagram may have waited to be read before the server counts as behind and
    # starts no new connection (VEL-CONN-015)
    shed_after: float = 0.25

    def __post_init__(self) -> None:
        if self.retry not in RETRY_POLICIES:
            raise UsageError(f"retry policy must be one of {', '.join(RETRY_POLICIES)}")


class ServerEndpoint:
    """All of a server's connections behind one socket."""

    def __init__(self, config: EndpointConfig, *, entropy: Entropy,
                 tokens: TokenSealer | None = None,
                 tracers: Callable[[], Tracer] | None = None) -> None:
        if config.retry != "never" and tokens is None:
            raise UsageError("a Retry policy needs a token sealer")
        self.config = config
        self._entropy = entropy
        self._tokens = tokens
        self._tracers = tracers  # one Tracer per accepted connection, when transcripts are kept
        self.finished: deque[Connection] = deque()  # traced connections, once terminated
        # seam (velocity.core.seams): called with each new connection before its first
        # datagram, so a scripted peer can set its seams
        self.on_connection: Callable[[Connection], None] | None = None
        self._by_cid: dict[bytes, Connection] = {}
        self.connections: list[Connection] = []
        self._dirty: dict[Connection, None] = {}  # touched since the last send, in order
        self._timers: list[tuple[float, int, Connection]] = []  # heap; stale entries skipped
        self._deadline: dict[Connection, float | None] = {}
        self._sequence = 0
        self._stateless: deque[tuple[bytes, Address]] = deque()
        self._events: deque[tuple[Connection, Event]] = deque()
        # connections whose handshake is not complete, oldest first, and their hosts
        self._half_open: dict[Connection, str] = {}
        self._half_open_hosts: Counter[str] = Counter()
        self.retries_sent = 0
        self.refused = 0
        self.shed = 0  # Initials that would have opened a connection, dropped while behind

    # --- receiving ---------------------------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, *, now: float,
                         arrived: float | None = None) -> None:
        """One datagram from ``address``, read at ``now``; ``arrived`` is when it reached the
        host (same clock), where the driver knows it: the wait in between says whether the
        server is behind (VEL-CONN-015)."""
        cid_length = self.config.connection.cid_length
        try:
            header = parse_header(data, short_dcid_length=cid_length)
        except ProtocolError:
            return  # undecodable: drop, never create state (VEL-CONN-004)
        if header.packet_type == PacketType.INITIAL and len(data) < MIN_INITIAL_DATAGRAM:
            return  # VEL-PKT-012, for a connection's later Initials too
        connection = self._by_cid.get(header.dcid)
        if connection is not None:
            connection.receive_datagram(data, address, now=now)
            self._collect(connection)
            self.mark(connection)
            return
        if header.packet_type in (PacketType.ONE_RTT, PacketType.VERSION_NEGOTIATION):
            return
        if len(data) < MIN_INITIAL_DATAGRAM:
            return  # VEL-VN-002
        if header.version != VELOCITY_VERSION:
            self._version_negotiation(header, address)
            return
        if header.packet_type == PacketType.INITIAL:
            behind = arrived is not None and now - arrived > self.config.shed_after
            self._accept(header, data, address, now, behind)

    def _version_negotiation(self, header: ProtectedHeader, address: Address) -> None:
        packet = VersionNegotiation(header.scid, header.dcid,
                                    (VELOCITY_VERSION, RESERVED_VERSION),
                                    self._entropy.random(1)[0] & 0x7F)
        self._stateless.append((encode_version_negotiation(packet), address))

    def _accept(self, header: ProtectedHeader, data: bytes, address: Address,
                now: float, behind: bool) -> None:
        if not self._opens(header, data):
            return  # not an Initial of ours: no state, no answer, no eviction (VEL-CONN-004)
        now_ms = int(now * 1000)
        original_dcid, retry_scid, validated = header.dcid, None, False
        if header.token and self._tokens is not None:
            try:
                odcid = self._tokens.validate(header.token, *address, now_ms=now_ms,
                                              lifetime_ms=NEW_TOKEN_LIFETIME_MS)
            except InvalidToken:
                self._refuse(header, address, ErrorCode.INVALID_TOKEN, "invalid token")
                return
            validated = odcid is not None
            if odcid:  # a Retry token: the client's DCID is our Retry SCID
                original_dcid, retry_scid = odcid, header.dcid
        if retry_scid is None and len(header.dcid) < MIN_CLIENT_DCID:
            return  # VEL-PKT-014: only our own Retry SCID may be shorter
        if behind:  # VEL-CONN-015: no new handshake until the server has caught up
            if validated or self.config.retry == "never":
                self.shed += 1  # the client's next Initial, a PTO later, may find room
            else:
                self._retry(header, address, now_ms)
            return
        refusal = self._refusal(address)
        if refusal is not None:
            self.refused += 1
            self._refuse(header, address, ErrorCode.CONNECTION_REFUSED, refusal)
            return
        full = len(self.connections) >= self.config.max_sessions
        if not validated and (self._wants_retry() or (full and self.config.retry != "never")):
            # a full table asks an unvalidated client to prove its address rather than
            # evict a handshake for it: spoofed sources cannot answer (VEL-CONN-009)
            self._retry(header, address, now_ms)
            return
        if full:  # the oldest handshake whose address is not validated goes first
            self._evict(next((c for c in self._half_open if not c.address_validated),
                             next(iter(self._half_open))))
        connection = Connection(self.config.connection, entropy=self._entropy,
                                original_dcid=original_dcid, peer_cid=header.scid,
                                retry_scid=retry_scid, address_validated=validated,
                                tracer=self._tracers() if self._tracers else None)
        if self.on_connection is not None:
            self.on_connection(connection)
        if self._tokens is not None:
            token = self._tokens.issue(*address, b"", now_ms=now_ms,
                                       nonce=self._entropy.random(12))
            connection.queue_after_handshake(NewToken(token))
        self.connections.append(connection)
        self._deadline[connection] = None  # in the table until reaped
        self._half_open[connection] = address[0]
        self._half_open_hosts[address[0]] += 1
        for cid in (connection.host_cid, header.dcid):
            self._by_cid[cid] = connection
        connection.receive_datagram(data, address, now=now)
        self._collect(connection)
        self.mark(connection)

    @staticmethod
    def _opens(header: ProtectedHeader, data: bytes) -> bool:
        """Whether an Initial packet of the datagram (the first that opens: a bad one does not
        hide those delimited after it, VEL-PKT-006) opens under the Initial keys of the first
        one's DCID (the client's first DCID, or after Retry our Retry SCID): anyone can build
        such a packet, but a flood of random bytes then costs an AEAD check a packet and
        takes no slot."""
        _, receive = initial_keys(header.dcid, is_client=False)
        offset, packet = 0, header
        while True:
            if packet.packet_type == PacketType.INITIAL and packet.dcid == header.dcid:
                try:
                    receive.decrypt_packet(data[offset : packet.end], packet.pn_offset - offset,
                                           0)
                except PacketDropped:
                    pass
                else:
                    return True
            offset = packet.end
            if offset >= len(data) or packet.packet_type == PacketType.ONE_RTT:
                return False
            try:
                packet = parse_header(data, offset, short_dcid_length=0)
            except ProtocolError:
                return False

    def _refusal(self, address: Address) -> str | None:
        """Why a new connection from ``address`` is refused, if it is: too many handshakes
        in progress from its host (VEL-CONN-010), or a table full of connections past their
        handshakes, none of which can be evicted (VEL-CONN-005, VEL-CONN-009)."""
        if self._half_open_hosts[address[0]] >= self.config.max_half_open_per_address:
            return "too many handshakes from this address"
        if len(self.connections) >= self.config.max_sessions and not self._half_open:
            return "server is full"
        return None

    def _evict(self, connection: Connection) -> None:
        """Make room in a full table: the oldest half-open connection ends, silently."""
        connection.abandon("evicted: the server is full")
        self._collect(connection)
        self._reap(connection)

    def _wants_retry(self) -> bool:
        if self.config.retry == "always":
            return True
        if self.config.retry == "under-load":
            waiting = sum(1 for c in self.connections if not c.address_validated)
            return waiting >= self.config.under_load
        return False

    def _retry(self, header: ProtectedHeader, address: Address, now_ms: int) -> None:
        assert self._tokens is not None  # checked in __init__
        scid = self._entropy.random(self.config.connection.cid_length)
        token = self._tokens.issue(*address, header.dcid, now_ms=now_ms,
                                   nonce=self._entropy.random(12))
        packet = encode_retry_without_tag(VELOCITY_VERSION, header.scid, scid, token)
        self._stateless.append((packet + retry_integrity_tag(packet, header.dcid), address))
        self.retries_sent += 1

    def _refuse(self, header: ProtectedHeader, address: Address, code: int,
                reason: str) -> None:
        """A stateless Initial carrying CONNECTION_CLOSE (VEL-CONN-005, VEL-RTY-005)."""
        send, _ = initial_keys(header.dcid, is_client=False)
        payload = encode_frames([ConnectionClose(code, 0, reason.encode())])
        payload += bytes(max(0, 20 - len(payload)))
        writer = Writer()
        scid = self._entropy.random(self.config.connection.cid_length)
        push_long_header(writer, LongHeader(PacketType.INITIAL, VELOCITY_VERSION, header.scid,
                                            scid, 0, 2, 2 + len(payload) + 16))
        self._stateless.append((send.encrypt_packet(writer.data(), payload, 0), address))

    # --- sending, timers, events ---------------------------------------------------------

    def mark(self, connection: Connection) -> None:
        """``connection`` may have something to send (a datagram arrived, a timer fired, the
        application wrote): only marked connections are visited when sending."""
        self._dirty[connection] = None

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Address]]:
        out = list(self._stateless)
        self._stateless.clear()
        dirty, self._dirty = self._dirty, {}
        for connection in dirty:
            datagrams = connection.datagrams_to_send(now=now)
            if len(datagrams) >= MAX_DATAGRAMS_PER_CALL:
                self._dirty[connection] = None  # it stopped at the batch bound, not for want
            out.extend(datagrams)
            self._collect(connection)
            self._schedule(connection)
            self._reap(connection)
        return out

    def _schedule(self, connection: Connection) -> None:
        deadline = connection.get_timer()
        if deadline != self._deadline.get(connection):
            self._deadline[connection] = deadline
            if deadline is not None:
                self._sequence += 1
                heapq.heappush(self._timers, (deadline, self._sequence, connection))

    def _next_timer(self) -> tuple[float, Connection] | None:
        """The earliest live timer entry (entries whose deadline moved are dropped)."""
        while self._timers:
            deadline, _, connection = self._timers[0]
            if self._deadline.get(connection) == deadline:
                return deadline, connection
            heapq.heappop(self._timers)
        return None

    def get_timer(self) -> float | None:
        entry = self._next_timer()
        return entry[0] if entry is not None else None

    def handle_timer(self, *, now: float) -> None:
        while (entry := self._next_timer()) is not None and entry[0] <= now:
            heapq.heappop(self._timers)
            connection = entry[1]
            self._deadline[connection] = None
            connection.handle_timer(now=now)
            self._collect(connection)
            self.mark(connection)
            self._reap(connection)

    def _collect(self, connection: Connection) -> None:
        while (event := connection.next_event()) is not None:
            self._events.append((connection, event))
        if connection.handshake_complete:
            self._settle(connection)

    def _settle(self, connection: Connection) -> None:
        """``connection`` is half-open no more: its handshake completed, or it is gone."""
        host = self._half_open.pop(connection, None)
        if host is not None:
            self._half_open_hosts[host] -= 1
            if not self._half_open_hosts[host]:
                del self._half_open_hosts[host]

    def _reap(self, connection: Connection) -> None:
        """Forget ``connection`` once it has terminated (idle, drained or closed)."""
        if connection.state != State.TERMINATED or connection not in self._deadline:
            return
        self.connections.remove(connection)
        self._settle(connection)
        if connection.tracer is not None:
            self.finished.append(connection)
        self._deadline.pop(connection)
        self._dirty.pop(connection, None)
        for cid in (connection.host_cid, connection.original_dcid, connection.retry_scid):
            if cid is not None and self._by_cid.get(cid) is connection:
                del self._by_cid[cid]

    def compact(self) -> None:
        """Rebuild the per-connection maps at their present size: a dict keeps the room it
        grew to, so a table that held thousands of connections and drained would go on
        holding theirs (a driver calls this once its table has drained)."""
        self._by_cid = dict(self._by_cid)
        self._deadline = dict(self._deadline)
        self._half_open = dict(self._half_open)  # the order is kept: oldest first

    def next_event(self) -> tuple[Connection, Event] | None:
        return self._events.popleft() if self._events else None

    def close_all(self, *, now: float) -> None:
        """Graceful shutdown: every connection closes with NO_ERROR (VEL-CONN-007)."""
        for connection in self.connections:
            connection.close(ErrorCode.NO_ERROR, "server shutting down")
            self.mark(connection)

    def __iter__(self) -> Iterator[Connection]:
        return iter(self.connections)
