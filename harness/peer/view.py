"""What the scripted peer saw: one transcript (velocity.core.trace.Transcript) per
connection, with every datagram it sent or received (``quic:datagrams_sent`` /
``quic:datagrams_received``, the raw view beside the connection's own packet events), when
asked every packet payload it opened as received, and a way to wait for an event. This
module owns the recording and the waiting; the engine decides what to wait for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from velocity.core.errors import ProtocolError
from velocity.core.packet import PacketType, decode_version_negotiation, parse_header
from velocity.core.trace import QLOG_PACKET_TYPES, Transcript

Event = dict[str, Any]
PAYLOAD_BYTES = 128 * 1024
"""The payload bytes a View keeps at most (the first packets': a handshake and a response
several times over); judging them costs CPU in proportion, and a target sends what it likes."""
Predicate = Callable[[Event], bool]


def packet_types(datagram: bytes) -> list[str]:
    """The packet types a datagram carries, as its unprotected header bits and long headers'
    Length fields tell them (a short header runs to the end); ``unparsed`` for what
    cannot be read."""
    types: list[str] = []
    offset = 0
    while offset < len(datagram):
        try:
            header = parse_header(datagram, offset, short_dcid_length=0)
        except ProtocolError:
            return [*types, "unparsed"]
        types.append(QLOG_PACKET_TYPES[header.packet_type])
        offset = header.end
    return types


class View:
    """The harness's view of one connection: its transcript, and counters of datagrams."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transcript = Transcript()
        self._loop = loop
        self._changed = asyncio.Event()
        self.datagrams_sent = self.datagrams_received = 0
        self.bytes_sent = self.bytes_received = 0
        self.inbox: list[tuple[int, bytes]] = []  # (event index, datagram) as received
        self.outbox: list[tuple[int, bytes]] = []  # (event index, datagram) as sent
        # (packet type, packet number, payload) of each packet the connection opened, when
        # it was given ``opened`` as its payload observer
        self.payloads: list[tuple[PacketType, int, bytes]] = []
        self._payload_bytes = 0

    @property
    def events(self) -> list[Event]:
        return self.transcript.events

    def note(self, name: str, data: dict[str, Any]) -> None:
        """A ``harness:`` (or other) event at the loop's time."""
        self.transcript.event(self._loop.time(), name, data)
        self._changed.set()

    def sent(self, datagrams: list[bytes], *, origin: str | None = None) -> None:
        """Datagrams sent (kept, for ``replay``); ``origin``: ``harness`` for one written by
        hand, ``replay`` for one sent again, None for the connection's own."""
        if not datagrams:
            return
        sizes = [len(d) for d in datagrams]
        self.datagrams_sent += len(sizes)
        self.bytes_sent += sum(sizes)
        self.outbox.extend((len(self.transcript.events), d) for d in datagrams)
        data: dict[str, Any] = {"count": len(sizes), "raw": [{"length": n} for n in sizes]}
        if origin is not None:
            data["origin"] = origin
        self.note("quic:datagrams_sent", data)

    def received(self, datagram: bytes, source: str) -> None:
        self.datagrams_received += 1
        self.bytes_received += len(datagram)
        self.inbox.append((len(self.transcript.events), datagram))
        data: dict[str, Any] = {"count": 1, "raw": [{"length": len(datagram)}],
                                "from": source, "packet_types": packet_types(datagram)}
        if data["packet_types"] == ["version_negotiation"]:
            with contextlib.suppress(ProtocolError):  # a malformed list: no versions noted
                data["versions"] = [f"0x{v:08x}"
                                    for v in decode_version_negotiation(datagram).versions]
        self.note("quic:datagrams_received", data)

    def opened(self, packet_type: PacketType, packet_number: int, payload: bytes) -> None:
        """The connection's payload observer (velocity.core.seams.PayloadObserver): keeps
        payloads up to PAYLOAD_BYTES in all."""
        if self._payload_bytes + len(payload) <= PAYLOAD_BYTES:
            self._payload_bytes += len(payload)
            self.payloads.append((packet_type, packet_number, payload))

    def received_since(self, start: int) -> list[bytes]:
        """The datagrams received from event index ``start`` on (raw bytes)."""
        return [datagram for index, datagram in self.inbox if index >= start]

    def changed(self) -> None:
        """Wake waiters: the connection may have recorded events."""
        self._changed.set()

    async def wait_for(self, predicate: Predicate, *, start: int = 0,
                       timeout: float) -> tuple[int, Event] | None:
        """The first event from index ``start`` on that satisfies ``predicate`` (index,
        event), waiting up to ``timeout`` seconds; None when none came."""
        deadline = self._loop.time() + timeout
        index = start
        while True:
            events = self.transcript.events
            for position in range(index, len(events)):
                if predicate(events[position]):
                    return position, events[position]
            index = len(events)
            left = deadline - self._loop.time()
            if left <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                continue  # one last look at what came meanwhile

    async def quiet(self, seconds: float, *, start: int,
                    packet_types: list[str] | None = None) -> Event | None:
        """Wait ``seconds``; the first datagram received after ``start`` meanwhile, if any,
        or the first carrying a packet of one of ``packet_types`` (for expect_silence)."""
        found = await self.wait_for(
            lambda e: e["name"] == "quic:datagrams_received" and (
                packet_types is None or bool(set(packet_types) & set(e["data"]["packet_types"]))),
            start=start, timeout=seconds)
        return found[1] if found is not None else None
