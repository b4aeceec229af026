"""A seeded UDP impairment relay (on 127.0.0.1 unless told otherwise). Datagrams between a
client and a server pass a ``Link``, which drops them (random loss, Gilbert-Elliott bursts,
a path MTU, a full rate-limiter queue, a blackhole), and delays, rate-limits, reorders,
duplicates or corrupts the rest, every choice drawn from one ``random.Random(seed)`` as
each datagram arrives, so the same datagrams in the same order meet the same fate and a
failing run replays. The ``Link`` takes the time as an argument (unit tests drive it on a
fake clock; the relay on the event loop's). ``UdpRelay`` can also change its upstream
source port (NAT rebinding). Like a NAT it gives each client address its own upstream port
(at most ``MAX_CLIENTS``). Bounded: it takes at most ``max_datagrams`` datagrams and keeps
at most ``max_waiting`` bytes delayed."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

Address = tuple[str, int]
DIRECTIONS = ("c2s", "s2c")
REORDER_HOLD = 0.05  # seconds a held-back datagram waits at most for the later ones
RATE_BURST = 3000  # bytes the rate limiter's token bucket holds (two full datagrams)
AFTER = 1e-4  # seconds a released datagram follows the one that released it
MAX_CLIENTS = 64  # client addresses with an upstream port; datagrams of more are dropped


@dataclass
class Impairment:
    """What a path does to the datagrams of one direction (both, unless overridden)."""

    loss: float = 0.0  # probability a datagram is lost on its own
    burst_loss: float = 0.0  # Gilbert-Elliott: probability a datagram starts a loss burst
    burst_length: float = 1.0  # mean datagrams a burst loses (geometric)
    delay: float = 0.0  # seconds
    jitter: float = 0.0  # extra random delay up to this; reorders datagrams close together
    duplicate: float = 0.0  # probability a datagram is sent twice
    reorder: float = 0.0  # probability a datagram is held back behind the next ones
    reorder_depth: int = 3  # how many later datagrams overtake a held-back one
    corrupt: float = 0.0  # probability one random bit of a datagram is flipped
    rate: float = 0.0  # bytes per second through a token bucket; 0: unlimited
    queue: int = 65536  # bytes waiting for the rate limiter; a datagram beyond is dropped
    mtu: int | None = None  # datagrams (UDP payloads) longer than this are dropped
    blackhole: bool = False  # everything is dropped


@dataclass
class RelayStats:
    """What the relay did. Bytes and flights count what each endpoint sent (before any
    impairment); ``received + duplicated == forwarded + dropped + cancelled + waiting``,
    where ``waiting`` is what the relay holds now (delayed or held back)."""

    received: int = 0
    forwarded: int = 0  # datagrams sent on (duplicates included)
    dropped: int = 0
    drops: dict[str, int] = field(default_factory=dict)  # reason -> datagrams
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    cancelled: int = 0  # waiting when the relay closed, never sent
    rebinds: int = 0
    bytes_c2s: int = 0
    bytes_s2c: int = 0
    # flights: runs of datagrams in one direction, in order ("c2s"/"s2c", bytes, datagrams)
    flights: list[tuple[str, int, int]] = field(default_factory=list)

    def count(self, direction: str, size: int) -> None:
        self.received += 1
        if direction == "c2s":
            self.bytes_c2s += size
        else:
            self.bytes_s2c += size
        if self.flights and self.flights[-1][0] == direction:
            _, total, datagrams = self.flights[-1]
            self.flights[-1] = (direction, total + size, datagrams + 1)
        else:
            self.flights.append((direction, size, 1))

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def line(self) -> str:
        """One line for a person: the counts, and the drops by reason."""
        drops = ", ".join(f"{k} {v}" for k, v in sorted(self.drops.items()))
        return (f"received {self.received} datagrams ({self.bytes_c2s} bytes client to server, "
                f"{self.bytes_s2c} server to client), forwarded {self.forwarded}, dropped "
                f"{self.dropped}{f' ({drops})' if drops else ''}, duplicated "
                f"{self.duplicated}, corrupted {self.corrupted}, reordered {self.reordered}, "
                f"rebinds {self.rebinds}")


@dataclass
class _Held:
    data: bytes
    overtaking: int  # later datagrams still to pass it
    until: float  # when it goes anyway


@dataclass
class _Lane:
    """The state of one direction: the burst state, the token bucket and its queue, and
    the datagrams held back."""

    bursting: bool = False
    bucket_time: float = float("-inf")  # when the last queued datagram leaves
    tokens: float = RATE_BURST  # in the bucket at bucket_time
    queued: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    held: list[_Held] = field(default_factory=list)


class Link:
    """The fate of each datagram, drawn from ``random.Random(seed)`` when it arrives: a
    list of (seconds from now, bytes) to send, possibly with datagrams held back earlier."""

    def __init__(self, seed: int | str, stats: RelayStats) -> None:
        self.rng = random.Random(str(seed))
        self.stats = stats
        self.lanes = {d: _Lane() for d in DIRECTIONS}

    def route(self, direction: str, data: bytes, now: float, imp: Impairment
              ) -> list[tuple[float, bytes]]:
        lane, rng = self.lanes[direction], self.rng
        lane.bursting = (rng.random() >= 1 / max(imp.burst_length, 1.0) if lane.bursting
                         else rng.random() < imp.burst_loss)
        lost = rng.random() < imp.loss
        reason = ("blackhole" if imp.blackhole else "mtu" if imp.mtu is not None
                  and len(data) > imp.mtu else "burst" if lane.bursting else "loss" if lost
                  else None)
        wait = self._queue(lane, len(data), now, imp) if reason is None else 0.0
        if reason is not None or wait is None:
            self.stats.drop(reason or "queue")
            return []
        copies = 2 if rng.random() < imp.duplicate else 1
        self.stats.duplicated += copies - 1
        out = []
        for _ in range(copies):
            copy = self._corrupt(data) if rng.random() < imp.corrupt and data else data
            out.append((wait + imp.delay + rng.random() * imp.jitter, copy))
        if rng.random() < imp.reorder:
            self.stats.reordered += 1
            lane.held.extend(_Held(d, imp.reorder_depth, now + REORDER_HOLD) for _, d in out)
            return []
        released = [h for h in lane.held if h.overtaking <= 1]
        for h in lane.held:
            h.overtaking -= 1
        lane.held = [h for h in lane.held if h.overtaking > 0]
        last = max(delay for delay, _ in out)
        return out + [(last + AFTER * (i + 1), h.data) for i, h in enumerate(released)]

    def _queue(self, lane: _Lane, size: int, now: float, imp: Impairment) -> float | None:
        """Seconds the token bucket keeps a datagram of ``size`` bytes (0 when not rate
        limited), or None when its queue is full."""
        if imp.rate <= 0:
            return 0.0
        while lane.queued and lane.queued[0][0] <= now:
            lane.queued.popleft()
        if sum(s for _, s in lane.queued) + size > imp.queue:
            return None
        start = max(now, lane.bucket_time)
        tokens = min(RATE_BURST, lane.tokens + (start - lane.bucket_time) * imp.rate)
        leaves = start + max(0.0, size - tokens) / imp.rate
        lane.bucket_time, lane.tokens = leaves, max(0.0, tokens - size)
        if leaves > now:
            lane.queued.append((leaves, size))
        return leaves - now

    def _corrupt(self, data: bytes) -> bytes:
        self.stats.corrupted += 1
        bit = self.rng.randrange(len(data) * 8)
        flipped = bytearray(data)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        return bytes(flipped)

    def expired(self, direction: str, now: float) -> list[bytes]:
        """The held-back datagrams of ``direction`` whose wait is over, taken out."""
        lane = self.lanes[direction]
        gone = [h.data for h in lane.held if h.until <= now]
        lane.held = [h for h in lane.held if h.until > now]
        return gone

    def held(self) -> int:
        return sum(len(lane.held) for lane in self.lanes.values())


KEYS = tuple(f.name for f in dataclasses.fields(Impairment))
"""The parameters of an impairment, as the scenario language and the CLI name them."""


def changed(imp: Impairment, changes: Mapping[str, Any]) -> Impairment:
    return dataclasses.replace(imp, **changes)


class _Side(asyncio.DatagramProtocol):
    """The listening socket (``client`` None) or the upstream socket of one client; what
    is sent before its transport is made waits in ``backlog``. An upstream socket's
    transport is made by the task ``binding``; a side closed before then closes it as it
    comes."""

    def __init__(self, relay: UdpRelay, client: Address | None) -> None:
        self.relay, self.client = relay, client
        self.transport: asyncio.DatagramTransport | None = None
        self.backlog: list[bytes] = []
        self.sock: socket.socket | None = None  # an upstream socket
        self.binding: asyncio.Task[Any] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        if self.closed:
            self.transport.close()
            return
        for data in self.backlog:
            self.transport.sendto(data, self.relay.server)
        self.relay.stats.forwarded += len(self.backlog)
        self.backlog.clear()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.client is None:
            self.relay.forward(data, (str(addr[0]), int(addr[1])), from_server=False)
        elif self.relay.upstream_of(self.client) is self:  # not a socket a rebinding left
            self.relay.forward(data, self.client, from_server=True)


@dataclass
class UdpRelay:
    """Listens on ``address``; forwards client datagrams to ``server`` and answers back.
    ``impairment`` applies to both directions but where ``c2s`` or ``s2c`` overrides it."""

    server: Address
    impairment: Impairment
    seed: int | str = 0
    max_datagrams: int = 200_000
    max_waiting: int = 32 * 2**20  # bytes delayed at most; a datagram beyond is dropped
    c2s: Impairment | None = None
    s2c: Impairment | None = None
    rebind_every: float | None = None  # seconds between NAT rebindings (None: only on demand)
    listen: Address = ("127.0.0.1", 0)
    stats: RelayStats = field(default_factory=RelayStats)

    def __post_init__(self) -> None:
        self._links: dict[Address, Link] = {}  # client -> its path (the first: the seed's)
        self._front: _Side | None = None
        self._backs: dict[Address, _Side] = {}  # client address -> its upstream socket
        self._pending: dict[int, tuple[asyncio.TimerHandle, int]] = {}  # -> (timer, bytes)
        self._waiting_bytes = 0
        self._ids = itertools.count()
        self._rebinding: asyncio.Task[None] | None = None
        self._blackholes: dict[str | None, asyncio.TimerHandle] = {}
        self._closed = False
        self.full = asyncio.Event()  # set when max_datagrams have come

    async def start(self) -> Address:
        """Bind both sockets; the address clients send to."""
        _, front = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Side(self, None), local_addr=self.listen)
        self._front = front
        with socket.socket(self._family(), socket.SOCK_DGRAM) as trial:  # fail now, not later
            try:
                trial.bind(self._upstream_side())
            except OSError:
                self.close()
                raise
        if self.rebind_every is not None:
            self._rebinding = asyncio.get_running_loop().create_task(self._rebind_often())
        assert self._front.transport is not None
        host, port = self._front.transport.get_extra_info("sockname")[:2]
        return host, port

    def _family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.server[0] else socket.AF_INET

    def _bind(self, client: Address) -> _Side:
        """A new upstream socket for ``client``, bound now (its transport follows)."""
        sock = socket.socket(self._family(), socket.SOCK_DGRAM)
        try:
            sock.bind(self._upstream_side())
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        side = _Side(self, client)
        side.sock = sock
        side.binding = asyncio.get_running_loop().create_task(
            asyncio.get_running_loop().create_datagram_endpoint(lambda: side, sock=sock))
        return side

    def _upstream_side(self) -> Address:
        """Where the upstream socket binds: loopback towards a loopback server."""
        host = self.server[0]
        if ":" in host:
            return ("::1" if host == "::1" else "::"), 0
        return ("127.0.0.1" if host.startswith("127.") else "0.0.0.0"), 0

    def upstream_of(self, client: Address) -> _Side | None:
        return self._backs.get(client)

    def toward(self, direction: str) -> Impairment:
        """The impairment of ``direction`` ("c2s" or "s2c")."""
        override: Impairment | None = getattr(self, direction)
        return override if override is not None else self.impairment

    def change(self, changes: Mapping[str, Any], direction: str | None = None) -> None:
        """Set ``changes`` in one direction, or in both (the overrides too)."""
        if direction is not None:
            setattr(self, direction, changed(self.toward(direction), changes))
            return
        self.impairment = changed(self.impairment, changes)
        for name in DIRECTIONS:
            if getattr(self, name) is not None:
                setattr(self, name, changed(getattr(self, name), changes))

    def blackhole(self, seconds: float, direction: str | None = None) -> None:
        """Drop everything (of ``direction``, or both) for ``seconds``; then what passed
        before passes again."""
        self.change({"blackhole": True}, direction)
        earlier = self._blackholes.pop(direction, None)
        if earlier is not None:
            earlier.cancel()
        self._blackholes[direction] = asyncio.get_running_loop().call_later(
            seconds, self.change, {"blackhole": False}, direction)

    def forward(self, data: bytes, source: Address, *, from_server: bool) -> None:
        direction = "s2c" if from_server else "c2s"
        self.stats.count(direction, len(data))
        if self._closed:  # read in the batch that closed the relay
            self.stats.cancelled += 1
            return
        if self.stats.received >= self.max_datagrams:
            self.full.set()
        if self.stats.received > self.max_datagrams:
            self.stats.drop("limit")
            return
        if not from_server and source not in self._backs:
            if len(self._backs) >= MAX_CLIENTS:
                self.stats.drop("clients")
                return
            try:
                self._backs[source] = self._bind(source)
            except OSError:
                self.stats.drop("bind")
                return
            seed = f"{self.seed}/{len(self._links)}" if self._links else self.seed
            self._links[source] = Link(seed, self.stats)
        if self._waiting_bytes + len(data) > self.max_waiting:
            self.stats.drop("backlog")
            return
        loop, link = asyncio.get_running_loop(), self._links[source]
        held = link.held()
        for delay, copy in link.route(direction, data, loop.time(), self.toward(direction)):
            self._later(delay, direction, copy, source)
        if link.held() > held:  # held back: it goes after REORDER_HOLD at the latest
            loop.call_later(REORDER_HOLD + 0.001, self._release, direction, source)

    def _later(self, delay: float, direction: str, data: bytes, client: Address) -> None:
        key = next(self._ids)
        self._waiting_bytes += len(data)
        self._pending[key] = (asyncio.get_running_loop().call_later(
            delay, self._send, key, direction, data, client), len(data))

    def _send(self, key: int, direction: str, data: bytes, client: Address) -> None:
        self._waiting_bytes -= self._pending.pop(key)[1]
        side = self._backs.get(client) if direction == "c2s" else self._front
        if side is None:
            self.stats.cancelled += 1
        elif side.transport is None:
            side.backlog.append(data)  # its transport is being made
        else:
            side.transport.sendto(data, self.server if direction == "c2s" else client)
            self.stats.forwarded += 1

    def _release(self, direction: str, client: Address) -> None:
        if self._closed:
            return
        for data in self._links[client].expired(direction, asyncio.get_running_loop().time()):
            self._later(self.toward(direction).delay, direction, data, client)

    def waiting(self) -> int:
        """Datagrams delayed or held back, not sent yet."""
        return len(self._pending) + sum(link.held() for link in self._links.values())

    async def rebind(self) -> Address | None:
        """New upstream sockets, so the server sees every client come from a new port (a
        NAT that lost its mappings); what the server sends to the old ports is lost. The
        new upstream address of the latest client (None before any)."""
        new = None
        for client, old in list(self._backs.items()):
            self._backs[client] = side = self._bind(client)
            self._close(old)
            assert side.sock is not None
            host, port = side.sock.getsockname()[:2]
            new = (host, port)
        self.stats.rebinds += 1
        return new

    async def _rebind_often(self) -> None:
        assert self.rebind_every is not None
        while True:
            await asyncio.sleep(self.rebind_every)
            await self.rebind()

    def close(self) -> None:
        """Stop: what still waits (delayed or held back) is never sent."""
        self._closed = True
        if self._rebinding is not None:
            self._rebinding.cancel()
        for handle in (*self._blackholes.values(), *(t for t, _ in self._pending.values())):
            handle.cancel()
        self.stats.cancelled += self.waiting()
        self._pending.clear()
        self._waiting_bytes = 0
        for link in self._links.values():
            for lane in link.lanes.values():
                lane.held.clear()
        for side in (self._front, *self._backs.values()):
            if side is not None:
                self._close(side)

    @staticmethod
    def _unmade(side: _Side) -> None:
        """The task that was to make ``side``'s transport is over: if it made none, the
        socket is still ours to close."""
        if side.transport is None and side.sock is not None:
            side.sock.close()

    def _close(self, side: _Side) -> None:
        """Close a socket; what waits for its transport is never sent. A transport still
        being made owns its socket once made: the side closes it when it comes
        (``connection_made``), and the socket is closed here only if it never comes."""
        side.closed = True
        if side.transport is not None:
            with contextlib.suppress(RuntimeError):  # its loop already closed
                side.transport.close()
        elif side.binding is not None and not side.binding.done():
            side.binding.cancel()
            side.binding.add_done_callback(lambda _: self._unmade(side))
        elif side.sock is not None:  # its transport was never made
            side.sock.close()
        self.stats.cancelled += len(side.backlog)
        side.backlog.clear()
