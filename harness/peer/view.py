"""What the scripted peer saw: one transcript (velocity.core.trace.Transcript) per
connection, with every datagram it sent or received (``quic:datagrams_sent`` /
``quic:datagrams_received``, the raw view beside the connection's own packet events), and a
way to wait for an event. This module owns the recording and the waiting; the engine decides
what to wait for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from velocity.core.trace import Transcript

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


class View:
    """The harness's view of one connection: its transcript, and counters of datagrams."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transcript = Transcript()
        self._loop = loop
        self._changed = asyncio.Event()
        self.datagrams_sent = self.datagrams_received = 0
        self.bytes_sent = self.bytes_received = 0
        self.inbox: list[tuple[int, bytes]] = []  # (event index, datagram) as received

    @property
    def events(self) -> list[Event]:
        return self.transcript.events

    def note(self, name: str, data: dict[str, Any]) -> None:
        """A ``harness:`` (or other) event at the loop's time."""
        self.transcript.event(self._loop.time(), name, data)
        self._changed.set()

    def sent(self, sizes: list[int], *, raw: bool = False) -> None:
        if not sizes:
            return
        self.datagrams_sent += len(sizes)
        self.bytes_sent += sum(sizes)
        data: dict[str, Any] = {"count": len(sizes), "raw": [{"length": n} for n in sizes]}
        if raw:
            data["origin"] = "harness"  # written by hand, not by the connection
        self.note("quic:datagrams_sent", data)

    def received(self, datagram: bytes, source: str) -> None:
        self.datagrams_received += 1
        self.bytes_received += len(datagram)
        self.inbox.append((len(self.transcript.events), datagram))
        self.note("quic:datagrams_received", {"count": 1, "raw": [{"length": len(datagram)}],
                                              "from": source})

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

    async def quiet(self, seconds: float, *, start: int) -> Event | None:
        """Wait ``seconds``; the first datagram received after ``start`` meanwhile, if any
        (for expect_silence)."""
        found = await self.wait_for(lambda e: e["name"] == "quic:datagrams_received",
                                    start=start, timeout=seconds)
        return found[1] if found is not None else None
