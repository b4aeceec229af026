"""An in-memory client/server ``Connection`` pair on a virtual clock, with a pluggable
network: every datagram passes through ``network(direction, datagram, now)``, which may
drop, delay, reorder, duplicate or rewrite it. Deterministic for a given seed."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.entropy import SeededEntropy
from velocity.core.events import Event
from velocity.core.packet import parse_header

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 4433)

# (direction "c2s"/"s2c", datagram, now) -> [(delay seconds, datagram), ...]
Network = Callable[[str, bytes, float], list[tuple[float, bytes]]]


def perfect(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
    return [(0.010, datagram)]  # 10 ms one way: a 20 ms RTT


@dataclass
class Pair:
    client_config: ConnectionConfig
    server_config: ConnectionConfig
    seed: str = "pair"
    network: Network = perfect
    now: float = 0.0
    client: Connection = field(init=False)
    server: Connection | None = None
    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=lambda: {"c2s": 0, "s2c": 0})
    _queue: list[tuple[float, int, str, bytes]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        entropy = SeededEntropy(self.seed)
        self._client_entropy, self._server_entropy = entropy.fork("client"), entropy.fork("server")
        self.client = Connection(self.client_config, entropy=self._client_entropy)

    def connect(self) -> None:
        self.client.connect(SERVER_ADDR, now=self.now)

    def _accept(self, datagram: bytes) -> Connection:
        header = parse_header(datagram, short_dcid_length=8)
        return Connection(self.server_config, entropy=self._server_entropy,
                          original_dcid=header.dcid, peer_cid=header.scid)

    def _flush(self) -> None:
        for direction, conn in (("c2s", self.client), ("s2c", self.server)):
            if conn is None:
                continue
            for datagram, _ in conn.datagrams_to_send(now=self.now):
                self.sent[direction] += len(datagram)
                for delay, delivered in self.network(direction, datagram, self.now):
                    heapq.heappush(self._queue, (self.now + delay, next(self._order),
                                                 direction, delivered))

    def _drain_events(self) -> None:
        for conn, events in ((self.client, self.client_events),
                             (self.server, self.server_events)):
            while conn is not None and (event := conn.next_event()) is not None:
                events.append(event)

    def step(self) -> bool:
        """Advance to the next delivery or timer; False when nothing is left to do."""
        self._flush()
        timers = [t for t in (self.client.get_timer(),
                              self.server.get_timer() if self.server else None) if t is not None]
        next_delivery = self._queue[0][0] if self._queue else None
        candidates = [t for t in (*timers, next_delivery) if t is not None]
        if not candidates:
            return False
        self.now = max(self.now, min(candidates))
        if next_delivery is not None and next_delivery <= self.now:
            _, _, direction, datagram = heapq.heappop(self._queue)
            if direction == "c2s":
                if self.server is None:
                    self.server = self._accept(datagram)
                self.server.receive_datagram(datagram, CLIENT_ADDR, now=self.now)
            else:
                self.client.receive_datagram(datagram, SERVER_ADDR, now=self.now)
        for conn in (self.client, self.server):
            if conn is not None and (timer := conn.get_timer()) is not None and (
                    timer <= self.now):
                conn.handle_timer(now=self.now)
        self._drain_events()
        return True

    def run(self, until: Callable[[], bool], *, max_time: float = 30.0,
            max_steps: int = 200_000) -> bool:
        """Step until ``until()`` holds; False if time or steps run out first."""
        for _ in range(max_steps):
            if until():
                return True
            if self.now > max_time or not self.step():
                return until()
        return until()
