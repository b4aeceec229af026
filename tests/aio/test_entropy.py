"""The OS entropy source: sizes, no byte handed out twice, and a forked child that does not
repeat its parent's bytes."""

from __future__ import annotations

import os

from velocity.aio.entropy import POOL_SIZE, OsEntropy


def test_sizes_and_no_repeats_across_refills() -> None:
    entropy = OsEntropy()
    draws = [entropy.random(size) for size in (0, 1, 8, 32, 64, POOL_SIZE, 3 * POOL_SIZE)
             for _ in range(40)]
    assert [len(d) for d in draws[::40]] == [0, 1, 8, 32, 64, POOL_SIZE, 3 * POOL_SIZE]
    long_draws = [d for d in draws if len(d) >= 32]
    assert len(set(long_draws)) == len(long_draws)
    joined = b"".join(draws)
    chunks = {joined[i : i + 16] for i in range(0, len(joined) - 16, 16)}
    assert len(chunks) == len(joined) // 16  # no 16-byte block comes back


def test_a_forked_child_does_not_repeat_its_parents_bytes() -> None:
    entropy = OsEntropy()
    entropy.random(16)  # the pool now holds bytes the parent has not handed out yet
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.write(write, entropy.random(64))
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    from_child = os.read(read, 64)
    os.close(read)
    assert len(from_child) == 64 and from_child != entropy.random(64)
