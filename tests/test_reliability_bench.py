"""The short forms of the reliability runs (bench/reliability.py, docs/reliability.md): each
starts a real ``velocity serve``, attacks or loads it for a few seconds and must meet the
aims (legitimate clients at least 99 % successful, the connection table drained, RSS back
within 10 % of its baseline, a byte-identical body through loss and reordering).

They measure a server against aims of rate and memory, so they are benchmarks, not tests
of the default run: on a machine shared with other work they miss the aims. They run when
VELOCITY_RELIABILITY=1 is set:
``VELOCITY_RELIABILITY=1 pytest tests/test_reliability_bench.py``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

RUNS = ["flood", "halfopen", "transfer", "soak"]
pytestmark = pytest.mark.skipif(os.environ.get("VELOCITY_RELIABILITY") != "1",
                                reason="a benchmark: set VELOCITY_RELIABILITY=1 to run it")


@pytest.mark.parametrize("run", RUNS)
def test_short_form_meets_the_aims(run: str) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.reliability", run, "--short"],
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS: every aim met" in done.stdout
