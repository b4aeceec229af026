"""Building in-memory connection pairs for transport tests."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.loopback import ONE_WAY, SERVER_ADDR, Network, Pair, perfect, run_until
from harness.pair import PairSpec, make_configs
from velocity.core.connection import Address, Connection, ConnectionConfig
from velocity.core.endpoint import EndpointConfig, ServerEndpoint
from velocity.core.entropy import SeededEntropy
from velocity.core.events import (
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    NewTokenReceived,
    TicketReceived,
)
from velocity.crypto.sealing import RetryTokens

TOKENS = RetryTokens(bytes(16))  # the token sealer of tests that need Retry or NEW_TOKEN
CLIENT_HS, SERVER_HS = make_configs(PairSpec(mode="pdk"))


def make(mode: str = "pdk", network: Network = perfect, *, client: dict[str, Any] | None = None,
         server: dict[str, Any] | None = None, spec: PairSpec | None = None,
         **pair: Any) -> Pair:
    client_hs, server_hs = make_configs(spec or PairSpec(mode=mode))
    return Pair(ConnectionConfig(client_hs, **(client or {})),
                ConnectionConfig(server_hs, **(server or {})), network=network, **pair)


def completed(events: list[Event]) -> bool:
    return any(isinstance(e, HandshakeCompleted) for e in events)


def both_completed(pair: Pair) -> bool:
    return completed(pair.client_events) and completed(pair.server_events)


def terminated(events: list[Event]) -> list[ConnectionTerminated]:
    return [e for e in events if isinstance(e, ConnectionTerminated)]


def resumable(*, server: dict[str, Any] | None = None, network: Network = perfect) -> Pair:
    """A second connection that resumes the first one's ticket with 0-RTT and its NEW_TOKEN
    (``server`` changes the second server's handshake configuration); the clock runs on
    between them. Not yet connected."""
    first = make("discovery", tokens=TOKENS)
    first.connect()
    assert first.run(lambda: both_completed(first)
                     and any(isinstance(e, TicketReceived) for e in first.client_events)
                     and any(isinstance(e, NewTokenReceived) for e in first.client_events))
    ticket = next(e for e in first.client_events if isinstance(e, TicketReceived))
    token = next(e.token for e in first.client_events if isinstance(e, NewTokenReceived))
    spec = PairSpec(mode="discovery", client={"ticket": ticket.ticket, "early_data": True},
                    server=server or {})
    second = make(spec=spec, tokens=TOKENS, network=network, client={
        "remembered_transport_parameters": ticket.transport_parameters, "token": token})
    second.now = first.now + 1.0
    return second


def requested(pair: Pair) -> tuple[Connection, int]:
    """Complete the handshake and deliver a request ("get", FIN) on a new client stream: the
    server's connection and the stream, ready for its answer."""
    pair.connect()
    assert pair.run(lambda: both_completed(pair))
    server = pair.server
    assert server is not None
    stream = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(stream, b"get", end_stream=True)
    assert pair.run(lambda: pair.finished_stream("server", stream))
    return server, stream


# (direction "c2s"/"s2c", the client's address, datagram, now) -> deliver it?
Route = Callable[[str, Address, bytes, float], bool]


def everything(direction: str, address: Address, datagram: bytes, now: float) -> bool:
    return True


@dataclass
class Crowd:
    """Clients, each at its own address, in front of one ``ServerEndpoint`` on one virtual
    clock: a datagram reaches the address it is sent to ONE_WAY later if ``route`` lets it
    through. Everything due at one instant is handed over before anyone answers, as one read
    batch of a server. ``sent`` records what the server sent to each address, and when.
    ``lag``: how long each datagram to the server waited to be read (a server behind)."""

    endpoint: ServerEndpoint
    route: Route = everything
    now: float = 0.0
    lag: float = 0.0
    clients: dict[Address, Connection] = field(default_factory=dict)
    client_events: dict[Address, list[Event]] = field(default_factory=dict)
    server_events: list[tuple[Connection, Event]] = field(default_factory=list)
    sent: dict[Address, list[tuple[float, bytes]]] = field(default_factory=dict)
    _queue: list[tuple[float, int, str, Address, bytes]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def join(self, address: Address, client: Connection) -> Connection:
        """``client`` connects from ``address`` now."""
        self.clients[address] = client
        self.client_events[address] = []
        client.connect(SERVER_ADDR, now=self.now)
        return client

    def inject(self, datagram: bytes, address: Address) -> None:
        """A datagram from ``address`` (no client of ours: a spoofer) reaches the server
        ONE_WAY from now."""
        self._push("c2s", address, datagram)

    def _push(self, direction: str, address: Address, datagram: bytes) -> None:
        if self.route(direction, address, datagram, self.now):
            heapq.heappush(self._queue, (self.now + ONE_WAY, next(self._order), direction,
                                         address, datagram))

    def _flush(self) -> None:
        for address, client in self.clients.items():
            for datagram, _ in client.datagrams_to_send(now=self.now):
                self._push("c2s", address, datagram)
        for datagram, address in self.endpoint.datagrams_to_send(now=self.now):
            self.sent.setdefault(address, []).append((self.now, datagram))
            self._push("s2c", address, datagram)

    def step(self) -> bool:
        """Advance to the next delivery or timer; False when nothing is left to do."""
        self._flush()
        timers = [t for t in (*(c.get_timer() for c in self.clients.values()),
                              self.endpoint.get_timer()) if t is not None]
        if self._queue:
            timers.append(self._queue[0][0])
        if not timers:
            return False
        self.now = max(self.now, min(timers))
        while self._queue and self._queue[0][0] <= self.now:
            _, _, direction, address, datagram = heapq.heappop(self._queue)
            if direction == "c2s":
                self.endpoint.receive_datagram(datagram, address, now=self.now,
                                               arrived=self.now - self.lag)
            elif address in self.clients:
                self.clients[address].receive_datagram(datagram, SERVER_ADDR, now=self.now)
        for client in self.clients.values():
            if (timer := client.get_timer()) is not None and timer <= self.now:
                client.handle_timer(now=self.now)
        if (timer := self.endpoint.get_timer()) is not None and timer <= self.now:
            self.endpoint.handle_timer(now=self.now)
        for address, client in self.clients.items():
            while (event := client.next_event()) is not None:
                self.client_events[address].append(event)
        while (item := self.endpoint.next_event()) is not None:
            self.server_events.append(item)
        return True

    def run(self, until: Callable[[], bool], *, max_time: float = 60.0,
            max_steps: int = 100_000) -> bool:
        """Step until ``until()`` holds; False if virtual time or steps run out first."""
        return run_until(self, until, max_time=max_time, max_steps=max_steps)


def make_crowd(route: Route = everything, **endpoint: Any) -> Crowd:
    """A crowd in front of a PDK server with ``endpoint`` settings (and Retry tokens)."""
    config = EndpointConfig(ConnectionConfig(SERVER_HS), **endpoint)
    return Crowd(ServerEndpoint(config, entropy=SeededEntropy("server"), tokens=TOKENS), route)


def make_client(seed: str, **config: Any) -> Connection:
    """A PDK client for a crowd, with ``config`` settings."""
    return Connection(ConnectionConfig(CLIENT_HS, **config), entropy=SeededEntropy(seed))
