"""harness.netsim: the Link's choices on a fake clock (the time is an argument), with exact
counts on fixed seeds and the arithmetic of the token bucket; then the UDP relay over real
sockets on 127.0.0.1 (only what does not depend on timing: its accounting, what happens
on close and on a rebinding)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

from harness.loopback import ONE_WAY
from harness.netsim import REORDER_HOLD, Impairment, Link, RelayStats, UdpRelay
from harness.pair import PairSpec
from tests.core.transport.helpers import make, requested

Routed = list[tuple[float, bytes]]  # (when it leaves, datagram), in the order sent


def datagram(index: int, size: int = 1000) -> bytes:
    return index.to_bytes(4, "big") + bytes(size - 4)


def index_of(data: bytes) -> int:
    return int.from_bytes(data[:4], "big")


def route_all(imp: Impairment, count: int, *, seed: str = "s", size: int = 1000,
              every: float = 0.001) -> tuple[RelayStats, Routed]:
    """``count`` datagrams client to server, one each ``every`` seconds of a fake clock."""
    stats = RelayStats()
    link = Link(seed, stats)
    out: Routed = []
    for i in range(count):
        stats.count("c2s", size)
        out.extend((i * every + delay, data)
                   for delay, data in link.route("c2s", datagram(i, size), i * every, imp))
    return stats, sorted(out, key=lambda item: item[0])


EVERYTHING = Impairment(loss=0.05, burst_loss=0.02, burst_length=3, delay=0.01, jitter=0.005,
                        duplicate=0.1, reorder=0.1, corrupt=0.1, rate=500_000, queue=8000)


def test_a_seed_replays_exactly() -> None:
    first, again, other = (route_all(EVERYTHING, 2000, seed=s) for s in ("a", "a", "b"))
    assert first == again
    assert first[1] != other[1]


def test_loss_on_a_seed() -> None:
    stats, out = route_all(Impairment(loss=0.1), 1000)
    assert stats.drops == {"loss": 96} and stats.dropped == 96  # within 1000 * 0.1 +- 4 sigma
    assert len(out) == 904 and stats.received == 1000


def test_burst_loss_is_gilbert_elliott() -> None:
    """Bursts start with probability 0.05 and last 4 datagrams on average: in the long run a
    sixth of the datagrams (0.05 / (0.05 + 1/4)) are lost, in runs."""
    stats, out = route_all(Impairment(burst_loss=0.05, burst_length=4), 20000)
    assert stats.drops == {"burst": 3282}
    delivered = {index_of(d) for _, d in out}
    runs, length = [], 0
    for i in range(20000):
        if i in delivered:
            if length:
                runs.append(length)
            length = 0
        else:
            length += 1
    assert 3.7 < sum(runs) / len(runs) < 4.3
    assert abs(stats.dropped / 20000 - 1 / 6) < 0.015


def test_bursts_of_one_direction_leave_the_other_alone() -> None:
    stats = RelayStats()
    link = Link("s", stats)
    lossy, clean = Impairment(burst_loss=1.0, burst_length=1000), Impairment()
    for i in range(100):
        assert link.route("c2s", datagram(i), i, lossy) == []
        assert link.route("s2c", datagram(i), i, clean) != []
    assert stats.drops == {"burst": 100}


def test_reordered_datagrams_are_overtaken_by_depth_others() -> None:
    stats, out = route_all(Impairment(reorder=0.1, reorder_depth=3), 200)
    order = [index_of(d) for _, d in out]
    assert sorted(order) == list(range(200))  # each exactly once
    moved = {i: order.index(i) - i for i in range(200) if order.index(i) > i}
    assert stats.reordered == len(moved) == 17
    assert set(moved.values()) == {3}


def test_a_held_datagram_goes_after_the_hold_when_nothing_follows() -> None:
    stats = RelayStats()
    link = Link("s", stats)
    assert link.route("c2s", b"late", 10.0, Impairment(reorder=1.0)) == []
    assert link.held() == 1
    assert link.expired("c2s", 10.0 + REORDER_HOLD / 2) == []
    assert link.expired("c2s", 10.0 + REORDER_HOLD) == [b"late"]
    assert link.held() == 0


def test_corruption_flips_one_bit() -> None:
    stats, out = route_all(Impairment(corrupt=1.0), 300)  # not delayed: still in order
    assert stats.corrupted == 300
    for i, (_, data) in enumerate(out):
        assert sum(bin(a ^ b).count("1") for a, b in zip(data, datagram(i), strict=True)) == 1


def test_duplicates_are_counted() -> None:
    stats, out = route_all(Impairment(duplicate=1.0), 50)
    assert stats.duplicated == 50 and len(out) == 100
    assert sorted(index_of(d) for _, d in out) == sorted([*range(50), *range(50)])


def test_the_mtu_drops_what_is_longer() -> None:
    stats = RelayStats()
    link = Link("s", stats)
    sizes = [link.route("c2s", bytes(n), 0.0, Impairment(mtu=1200)) for n in (1199, 1200, 1201)]
    assert [len(s) for s in sizes] == [1, 1, 0]
    assert stats.drops == {"mtu": 1}


def test_a_blackhole_drops_everything() -> None:
    stats, out = route_all(Impairment(blackhole=True), 40)
    assert out == [] and stats.drops == {"blackhole": 40}


def test_the_token_bucket_paces_and_drops_the_tail() -> None:
    """10 kB/s, a 3000-byte bucket and a 5000-byte queue; ten 1000-byte datagrams at once:
    three leave on the bucket's tokens, five wait 0.1 s more each, two find the queue full.
    Half a second after the last one left the bucket is full again."""
    stats = RelayStats()
    link = Link("s", stats)
    imp = Impairment(rate=10_000, queue=5000)
    delays = [link.route("c2s", datagram(i), 0.0, imp) for i in range(10)]
    assert [round(d[0][0], 9) if d else None for d in delays] == [
        0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, None, None]
    assert stats.drops == {"queue": 2}
    assert link.route("c2s", datagram(10), 1.0, imp)[0][0] == 0.0


def test_an_override_changes_one_direction() -> None:
    relay = UdpRelay(("127.0.0.1", 9), Impairment(loss=0.1), s2c=Impairment(loss=0.5))
    relay.change({"delay": 0.2})
    assert relay.toward("c2s") == Impairment(loss=0.1, delay=0.2)
    assert relay.toward("s2c") == Impairment(loss=0.5, delay=0.2)
    relay.change({"loss": 1.0}, "c2s")
    assert relay.toward("c2s") == Impairment(loss=1.0, delay=0.2)
    assert relay.impairment == Impairment(loss=0.1, delay=0.2)


def download(seed: str) -> tuple[bytes, RelayStats]:
    """A seeded, byte-reproducible 120 kB download on the in-memory pair's virtual clock,
    through a Link that loses in bursts, reorders, duplicates, corrupts and rate-limits."""
    stats = RelayStats()
    link = Link(seed, stats)
    imp = Impairment(burst_loss=0.03, burst_length=3, delay=ONE_WAY, jitter=0.002,
                     reorder=0.1, duplicate=0.05, corrupt=0.03, rate=400_000, queue=20_000)

    def network(direction: str, data: bytes, now: float) -> list[tuple[float, bytes]]:
        stats.count(direction, len(data))
        return link.route(direction, data, now, imp)

    pair = make(spec=PairSpec(client_backend="kyber-py", server_backend="kyber-py"),
                network=network, seed="netsim")
    server, stream = requested(pair)
    body = bytes(range(256)) * 480
    server.send_stream_data(stream, body, end_stream=True)
    assert pair.run(lambda: pair.finished_stream("client", stream), max_time=60)
    assert pair.received("client", stream) == (body, True)
    return body, stats


def test_a_transfer_on_the_virtual_clock_replays_exactly() -> None:
    """The whole connection, the endpoints and the Link seeded, happens the same way twice:
    every impairment struck, and the transfer survived them."""
    (_, first), (_, again) = download("v"), download("v")
    assert first == again
    assert first.corrupted and first.reordered and first.duplicated
    assert first.drops.get("burst") and first.received > 100


class _Sink(asyncio.DatagramProtocol):
    """A UDP socket that keeps what it receives and where from; it answers with the same
    bytes when ``echo``."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.got: list[tuple[bytes, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((data, (addr[0], addr[1])))
        if self.echo and self.transport is not None:
            self.transport.sendto(data, addr)


@asynccontextmanager
async def sink(echo: bool = False) -> AsyncIterator[tuple[_Sink, tuple[str, int]]]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Sink(echo), local_addr=("127.0.0.1", 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[:2]
    finally:
        transport.close()


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.005)


async def test_closing_with_delayed_datagrams_sends_nothing_more(
        caplog: pytest.LogCaptureFixture) -> None:
    """Datagrams still delayed when the relay closes are dropped with their timers: nothing
    is sent on the closed sockets, and asyncio has nothing to complain about."""
    loop = asyncio.get_running_loop()
    complaints: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: complaints.append(context))
    caplog.set_level(logging.DEBUG, logger="asyncio")
    async with sink() as (server, address), sink() as (client, _):
        relay = UdpRelay(address, Impairment(delay=0.2), seed=1)
        front = await relay.start()
        assert client.transport is not None
        for i in range(6):
            client.transport.sendto(datagram(i, 100), front)
        await until(lambda: relay.stats.received == 6)
        relay.close()
        await asyncio.sleep(0.4)
    assert server.got == []
    assert (relay.stats.forwarded, relay.stats.cancelled, relay.waiting()) == (0, 6, 0)
    assert complaints == [] and caplog.records == []


@pytest.mark.parametrize("turns", range(6))
async def test_a_jitter_relay_closed_while_its_upstream_socket_opens_leaves_nothing(
        turns: int, caplog: pytest.LogCaptureFixture) -> None:
    """Closed ``turns`` turns of the loop after a new client's first datagram, while its
    upstream transport is still being made and jittered sends are pending: the loop's
    exception handler sees nothing, the upstream socket ends closed, and every datagram
    was sent on or counted as cancelled."""
    loop = asyncio.get_running_loop()
    complaints: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: complaints.append(context))
    caplog.set_level(logging.DEBUG, logger="asyncio")
    async with sink(echo=True) as (_, address), sink() as (client, client_address):
        relay = UdpRelay(address, Impairment(jitter=0.01), seed=3)
        front = await relay.start()
        assert client.transport is not None
        for i in range(10):
            client.transport.sendto(datagram(i, 100), front)
        for _ in range(100_000):  # until the relay has read the first one
            if relay.stats.received:
                break
            await asyncio.sleep(0)
        for _ in range(turns):
            await asyncio.sleep(0)
        upstream = relay.upstream_of(client_address)
        relay.close()
        await asyncio.sleep(0.05)
    assert upstream is not None and upstream.sock is not None
    assert upstream.sock.fileno() == -1
    stats = relay.stats
    assert relay.waiting() == 0
    assert (stats.received + stats.duplicated
            == stats.forwarded + stats.dropped + stats.cancelled)
    assert complaints == [] and caplog.records == []


async def test_a_datagram_read_after_the_close_is_cancelled() -> None:
    """A datagram the closing batch still hands over opens no upstream socket and is not
    scheduled: it counts as cancelled."""
    async with sink() as (_, address):
        relay = UdpRelay(address, Impairment(jitter=0.01))
        await relay.start()
        relay.close()
        relay.forward(b"late", ("127.0.0.1", 40001), from_server=False)
    assert relay.upstream_of(("127.0.0.1", 40001)) is None
    assert (relay.stats.received, relay.stats.cancelled, relay.waiting()) == (1, 1, 0)


async def test_the_accounting_adds_up() -> None:
    """What came in (and the duplicates) was sent on, dropped, cancelled or still waits."""
    async with sink(echo=True) as (_, address), sink() as (client, _):
        relay = UdpRelay(address, EVERYTHING, seed=2)
        front = await relay.start()
        assert client.transport is not None
        for i in range(200):
            client.transport.sendto(datagram(i, 600), front)
            await asyncio.sleep(0)
        await until(lambda: relay.stats.bytes_c2s == 200 * 600)
        await asyncio.sleep(0.05)
        relay.close()
    stats = relay.stats
    assert stats.dropped > 0 and stats.forwarded > 0
    assert (stats.received + stats.duplicated
            == stats.forwarded + stats.dropped + stats.cancelled)
    assert sum(size for _, size, _ in stats.flights) == stats.bytes_c2s + stats.bytes_s2c
    assert sum(count for _, _, count in stats.flights) == stats.received


async def test_a_rebinding_moves_the_upstream_port() -> None:
    """After a rebinding the server sees the client's datagrams from a new port, and what it
    sends to the old one no longer reaches the client."""
    async with sink() as (server, address), sink() as (client, _):
        relay = UdpRelay(address, Impairment())
        front = await relay.start()
        assert client.transport is not None and server.transport is not None
        client.transport.sendto(b"before", front)
        await until(lambda: len(server.got) == 1)
        old = server.got[0][1]
        new = await relay.rebind()
        client.transport.sendto(b"after", front)
        await until(lambda: len(server.got) == 2)
        assert server.got[1] == (b"after", new) and new != old
        server.transport.sendto(b"to the old port", old)
        server.transport.sendto(b"to the new port", new)
        await until(lambda: len(client.got) == 1)
        await asyncio.sleep(0.05)
        relay.close()
    assert [data for data, _ in client.got] == [b"to the new port"]
    assert relay.stats.rebinds == 1


def test_stats_line() -> None:
    stats, _ = route_all(Impairment(loss=0.1), 1000)
    assert stats.line().startswith("received 1000 datagrams (1000000 bytes client to server, "
                                   "0 server to client), forwarded 0, dropped 96 (loss 96)")


async def test_a_blackhole_of_one_direction_ends_by_itself() -> None:
    relay = UdpRelay(("127.0.0.1", 9), Impairment(loss=0.1))
    relay.blackhole(0.05, "s2c")
    relay.blackhole(0.1, "s2c")  # a second one replaces the first
    assert relay.toward("s2c").blackhole and not relay.toward("c2s").blackhole
    await asyncio.sleep(0.07)
    assert relay.toward("s2c").blackhole
    await asyncio.sleep(0.06)
    assert relay.toward("s2c") == Impairment(loss=0.1)
    relay.close()


async def test_two_clients_at_once_each_get_their_own_answers() -> None:
    """Like a NAT, the relay gives each client address its own upstream port: the server
    sees two peers, and each client gets only what the server sent to it."""
    async with sink(echo=True) as (server, address), sink() as (a, _), sink() as (b, _):
        relay = UdpRelay(address, Impairment())
        front = await relay.start()
        assert a.transport is not None and b.transport is not None
        for i in range(20):
            a.transport.sendto(b"a%d" % i, front)
            b.transport.sendto(b"b%d" % i, front)
            await asyncio.sleep(0)
        await until(lambda: len(a.got) + len(b.got) == 40)
        relay.close()
    assert sorted(data for data, _ in a.got) == sorted(b"a%d" % i for i in range(20))
    assert sorted(data for data, _ in b.got) == sorted(b"b%d" % i for i in range(20))
    assert len({peer for _, peer in server.got}) == 2


async def test_delayed_datagrams_are_bounded_in_bytes() -> None:
    """A flood into a long delay keeps at most ``max_waiting`` bytes; the rest is dropped
    (reason "backlog") and the accounting still adds up."""
    async with sink() as (server, address), sink() as (client, _):
        relay = UdpRelay(address, Impairment(delay=30.0), max_waiting=10_000)
        front = await relay.start()
        assert client.transport is not None
        for i in range(30):
            client.transport.sendto(datagram(i, 1000), front)
            await asyncio.sleep(0)
        await until(lambda: relay.stats.received == 30)
        assert relay.waiting() == 10 and relay.stats.drops == {"backlog": 20}
        relay.close()
    stats = relay.stats
    assert server.got == [] and stats.received == stats.dropped + stats.cancelled
