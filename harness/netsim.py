"""A seeded UDP impairment relay on 127.0.0.1: datagrams between a client and a server are
dropped, delayed, reordered or duplicated by a ``random.Random(seed)``, so a failing run can
be replayed. Bounded: it forwards at most ``max_datagrams`` datagrams."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import cast

Address = tuple[str, int]


@dataclass
class Impairment:
    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0  # extra random delay; reorders datagrams
    duplicate: float = 0.0


@dataclass
class RelayStats:
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    bytes_c2s: int = 0
    bytes_s2c: int = 0
    # flights: runs of datagrams in one direction, in order ("c2s"/"s2c", bytes, datagrams)
    flights: list[tuple[str, int, int]] = field(default_factory=list)

    def count(self, direction: str, size: int) -> None:
        if direction == "c2s":
            self.bytes_c2s += size
        else:
            self.bytes_s2c += size
        if self.flights and self.flights[-1][0] == direction:
            _, total, datagrams = self.flights[-1]
            self.flights[-1] = (direction, total + size, datagrams + 1)
        else:
            self.flights.append((direction, size, 1))


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay, upstream: bool) -> None:
        self.relay, self.upstream = relay, upstream
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.relay.forward(data, (str(addr[0]), int(addr[1])), from_server=self.upstream)


@dataclass
class UdpRelay:
    """Listens on ``address``; forwards client datagrams to ``server`` and answers back."""

    server: Address
    impairment: Impairment
    seed: int | str = 0
    max_datagrams: int = 200_000
    stats: RelayStats = field(default_factory=RelayStats)

    def __post_init__(self) -> None:
        self._rng = random.Random(str(self.seed))
        self._client: Address | None = None
        self._front: _Side | None = None
        self._back: _Side | None = None

    async def start(self) -> Address:
        loop = asyncio.get_running_loop()
        _, front = await loop.create_datagram_endpoint(lambda: _Side(self, False),
                                                       local_addr=("127.0.0.1", 0))
        _, back = await loop.create_datagram_endpoint(lambda: _Side(self, True),
                                                      local_addr=("127.0.0.1", 0))
        self._front, self._back = front, back
        assert front.transport is not None
        host, port = front.transport.get_extra_info("sockname")[:2]
        return host, port

    def forward(self, data: bytes, source: Address, *, from_server: bool) -> None:
        if self.stats.forwarded + self.stats.dropped >= self.max_datagrams:
            return
        if not from_server:
            self._client = source
        self.stats.count("s2c" if from_server else "c2s", len(data))
        side = self._front if from_server else self._back
        target = self._client if from_server else self.server
        if side is None or side.transport is None or target is None:
            return
        imp = self.impairment
        if self._rng.random() < imp.loss:
            self.stats.dropped += 1
            return
        copies = 2 if self._rng.random() < imp.duplicate else 1
        self.stats.duplicated += copies - 1
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            delay = imp.delay + self._rng.random() * imp.jitter
            loop.call_later(delay, side.transport.sendto, data, target)
            self.stats.forwarded += 1

    def close(self) -> None:
        for side in (self._front, self._back):
            if side is not None and side.transport is not None:
                side.transport.close()
