"""The server gives back the memory a drained connection table leaves behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from velocity.aio.heap import HeapReturn, _malloc_trim


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
    assert heap.trims == 2
    heap.table(40)
    heap.table(0)  # fewer than trim_after connections came and went
    assert heap.trims == 2


@pytest.mark.skipif(_malloc_trim() is None, reason="needs glibc's malloc_trim")
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
