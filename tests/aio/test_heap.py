"""The server gives back the memory a drained connection table leaves behind."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness.pair import PairSpec, make_configs
from tests.aio.test_faults import echo
from velocity.aio.heap import BURST, SETTLE_TRIMS, TRAFFIC_GAP, HeapReturn, _malloc_trim
from velocity.aio.server import serve
from velocity.core.connection import ConnectionConfig
from velocity.core.endpoint import EndpointConfig
from velocity.core.handshake.common import ReplayFilter

_, SERVER_HS = make_configs(PairSpec(mode="pdk"))


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_it_trims_once_the_table_fell_to_a_quarter_of_its_peak() -> None:
    heap = HeapReturn(trim_after=64)
    heap.table(1000)
    heap.table(251)
    assert heap.trims == 0
    heap.table(250)
    assert heap.trims == 1
    heap.table(200)  # the high-water mark starts again from 250: not enough gone
    heap.table(0)
    assert heap.trims == 1  # a trim a settle period at most
    heap.settle(0)  # the next period: its first trim is the table's (no settle trim due)
    heap.table(0)
    assert heap.trims == 2
    heap.table(40)
    heap.table(0)  # fewer than trim_after connections came and went
    assert heap.trims == 2


def test_the_owner_shrinks_first_and_settle_trims_again_after_a_trim() -> None:
    """What the drained connections held is partly freed later: the SETTLE_TRIMS settle
    calls after a trim each trim again, then settle does nothing until the next trim."""
    shrunk: list[int] = []
    heap = HeapReturn(trim_after=64, before_trim=lambda: shrunk.append(heap.trims))
    heap.settle(0)
    assert heap.trims == 0
    heap.table(1000)
    heap.table(100)
    for _ in range(SETTLE_TRIMS + 2):
        heap.settle(0)
    assert heap.trims == 1 + SETTLE_TRIMS
    assert shrunk == list(range(1 + SETTLE_TRIMS))  # before every trim


def test_it_trims_once_the_traffic_fell_to_a_quarter_of_its_busiest_period() -> None:
    """A flood that opens no connection (answered with Retry) leaves heap behind too: the
    datagrams of each settle period count, and a fall after a busy period trims, once."""
    heap = HeapReturn()
    received = 0
    for period in (BURST, 4 * BURST, BURST + 1):  # busy, busier, not a quarter of it
        received += period
        heap.settle(received)
    assert heap.trims == 0
    received += BURST
    heap.settle(received)  # a quarter of the busiest period
    assert heap.trims == 1
    for _ in range(2 * TRAFFIC_GAP):  # quiet: nothing more to give back
        heap.settle(received)
    assert heap.trims == 1
    for period in (BURST - 1, 0):  # never busy enough to be worth a trim
        received += period
        heap.settle(received)
    assert heap.trims == 1


@pytest.mark.parametrize("pattern", [(BURST, BURST // 4), (BURST, 0, 0, 0), (BURST, 0)])
def test_traffic_that_comes_and_goes_trims_at_most_once_every_gap(
        pattern: tuple[int, ...]) -> None:
    """Bursts anyone can send (junk datagrams count) make at most one trim every
    TRAFFIC_GAP settle calls, however they alternate."""
    heap = HeapReturn()
    received, calls = 0, 60
    for call in range(calls):
        received += pattern[call % len(pattern)]
        heap.settle(received)
    assert 1 <= heap.trims <= calls // TRAFFIC_GAP + 1


@pytest.mark.skipif(_malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_a_table_filled_and_drained_again_and_again_trims_once_a_period() -> None:
    """Anyone can open connections and let them go: however fast the table fills and
    drains, the trims (a collection on the loop each) come once a settle period at most."""
    heap = HeapReturn(trim_after=64)
    for period in range(6):
        for _ in range(20):  # 20 fills and drains within one period
            heap.table(100)
            heap.table(0)
        assert heap.trims == period + 1
        heap.settle(0)


def test_a_drained_table_gives_its_heap_back_to_the_os() -> None:
    """80 MB of 2 KB blocks (malloc's heap, not pymalloc's arenas), every 64th kept so that
    free() alone cannot shrink the heap: the trim returns most of the rest."""
    heap = HeapReturn()
    blocks = [bytes(2048) for _ in range(40_000)]
    kept = blocks[::64]
    heap.table(len(blocks))
    del blocks
    before = rss_kb()
    heap.table(0)
    after = rss_kb()
    assert heap.trims == 1
    assert before - after > 40_000, (before, after)
    assert len(kept) == 625


async def test_a_server_shrinks_its_maps_and_expires_old_binders_before_a_trim() -> None:
    """The server's own trims (its table fell to a quarter): the anti-replay filter's expired
    binders, made during the flood and otherwise kept until the next 0-RTT hello, go first."""
    replay = ReplayFilter()
    assert replay.accept(bytes(32), 0, 1)  # expired long ago on the loop's clock
    config = EndpointConfig(ConnectionConfig(replace(SERVER_HS, replay_filter=replay)))
    server = await serve("127.0.0.1", 0, config, echo)
    try:
        server.heap.table(1000)
        server.heap.table(0)
        assert server.heap.trims == 1
        assert not replay._seen  # forgotten without waiting for a hello
    finally:
        await server.close()


async def test_a_server_trims_after_a_flood_that_opened_no_connection() -> None:
    """A server whose table never grew (a flood answered with Retry) counts its datagrams:
    its settle calls trim once their number falls after a busy period."""
    config = EndpointConfig(ConnectionConfig(SERVER_HS))
    server = await serve("127.0.0.1", 0, config, echo)
    try:
        server.datagrams_received += 4 * BURST  # the flood's period
        for trims in (0, 1):  # then the next period: quiet
            server._settle.cancel()  # the timer's call, made here (it sets the next)
            server._settle_heap()
            assert server.heap.trims == trims
    finally:
        await server.close()
