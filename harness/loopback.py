"""An in-memory client ``Connection`` and ``ServerEndpoint`` on a virtual clock, with a
pluggable network: every datagram passes through ``network(direction, datagram, now)``,
which may drop, delay, reorder, duplicate or rewrite it. Deterministic for a given seed."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from velocity.core.connection import Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig, ServerEndpoint, TokenSealer
from velocity.core.entropy import SeededEntropy
from velocity.core.events import Event, StreamDataReceived
from velocity.core.trace import Transcript

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 4433)
ONE_WAY = 0.010  # seconds: a 20 ms round trip

# (direction "c2s"/"s2c", datagram, now) -> [(delay seconds, datagram), ...]
Network = Callable[[str, bytes, float], list[tuple[float, bytes]]]


def perfect(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
    return [(ONE_WAY, datagram)]


def lossy(seed: int | str, *, loss: float = 0.0, reorder: float = 0.0,
          duplicate: float = 0.0) -> Network:
    """Seeded loss, reordering (extra delay up to one RTT) and duplication."""
    rng = random.Random(str(seed))

    def network(direction: str, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        if rng.random() < loss:
            return []
        delay = ONE_WAY + (rng.random() * 2 * ONE_WAY if rng.random() < reorder else 0.0)
        copies = [(delay, datagram)]
        if rng.random() < duplicate:
            copies.append((delay + ONE_WAY / 2, datagram))
        return copies

    return network


@dataclass
class Pair:
    client_config: ConnectionConfig
    server_config: ConnectionConfig
    seed: str = "pair"
    network: Network = perfect
    retry: str = "never"
    tokens: TokenSealer | None = None
    max_sessions: int = 100
    trace: bool = False  # give both sides a Transcript (client.tracer, server.tracer)
    now: float = 0.0
    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=lambda: {"c2s": 0, "s2c": 0})
    datagrams: dict[str, int] = field(default_factory=lambda: {"c2s": 0, "s2c": 0})
    streams: dict[tuple[str, int], bytearray] = field(default_factory=dict)
    finished: set[tuple[str, int]] = field(default_factory=set)
    _queue: list[tuple[float, int, str, bytes]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        entropy = SeededEntropy(self.seed)
        self.client = Connection(self.client_config, entropy=entropy.fork("client"),
                                 tracer=Transcript() if self.trace else None)
        self.endpoint = ServerEndpoint(
            EndpointConfig(self.server_config, retry=self.retry,
                           max_sessions=self.max_sessions),
            entropy=entropy.fork("server"), tokens=self.tokens,
            tracers=Transcript if self.trace else None)

    @property
    def server(self) -> Connection | None:
        return self.endpoint.connections[0] if self.endpoint.connections else None

    def connect(self) -> None:
        self.client.connect(SERVER_ADDR, now=self.now)

    def _flush(self) -> None:
        outgoing = [("c2s", d) for d, _ in self.client.datagrams_to_send(now=self.now)]
        outgoing += [("s2c", d) for d, _ in self.endpoint.datagrams_to_send(now=self.now)]
        for direction, datagram in outgoing:
            self.sent[direction] += len(datagram)
            self.datagrams[direction] += 1
            for delay, delivered in self.network(direction, datagram, self.now):
                heapq.heappush(self._queue, (self.now + delay, next(self._order), direction,
                                             delivered))

    def _drain_events(self) -> None:
        while (event := self.client.next_event()) is not None:
            self._record("client", event)
            self.client_events.append(event)
        while (item := self.endpoint.next_event()) is not None:
            self._record("server", item[1])
            self.server_events.append(item[1])

    def _record(self, side: str, event: Event) -> None:
        """Keep each side's received stream bytes, so tests need not rescan events."""
        if isinstance(event, StreamDataReceived):
            self.streams.setdefault((side, event.stream_id), bytearray()).extend(event.data)
            if event.end_stream:
                self.finished.add((side, event.stream_id))

    def finished_stream(self, side: str, stream_id: int) -> bool:
        return (side, stream_id) in self.finished

    def received(self, side: str, stream_id: int) -> tuple[bytes, bool]:
        return (bytes(self.streams.get((side, stream_id), b"")),
                (side, stream_id) in self.finished)

    def step(self) -> bool:
        """Advance to the next delivery or timer; False when nothing is left to do."""
        self._flush()
        timers = [t for t in (self.client.get_timer(), self.endpoint.get_timer())
                  if t is not None]
        if self._queue:
            timers.append(self._queue[0][0])
        if not timers:
            return False
        self.now = max(self.now, min(timers))
        if self._queue and self._queue[0][0] <= self.now:
            _, _, direction, datagram = heapq.heappop(self._queue)
            if direction == "c2s":
                self.endpoint.receive_datagram(datagram, CLIENT_ADDR, now=self.now)
            else:
                self.client.receive_datagram(datagram, SERVER_ADDR, now=self.now)
        if (timer := self.client.get_timer()) is not None and timer <= self.now:
            self.client.handle_timer(now=self.now)
        if (timer := self.endpoint.get_timer()) is not None and timer <= self.now:
            self.endpoint.handle_timer(now=self.now)
        self._drain_events()
        return True

    def run(self, until: Callable[[], bool], *, max_time: float = 30.0,
            max_steps: int = 200_000) -> bool:
        """Step until ``until()`` holds; False if virtual time or steps run out first."""
        return run_until(self, until, max_time=max_time, max_steps=max_steps)


class Stepped(Protocol):
    """An in-memory network on a virtual clock."""

    now: float

    def step(self) -> bool:
        """Advance to the next delivery or timer; False when nothing is left to do."""
        ...


def run_until(network: Stepped, until: Callable[[], bool], *, max_time: float,
              max_steps: int) -> bool:
    """Step ``network`` until ``until()`` holds; False if virtual time (``max_time``) or
    steps run out first."""
    for _ in range(max_steps):
        if until():
            return True
        if network.now > max_time or not network.step():
            return until()
    return until()
