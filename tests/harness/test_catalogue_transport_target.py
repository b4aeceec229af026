"""The in-process target takes the catalogue from one address: many handshakes failed on
purpose in a row, each holding its half-open slot while it closes (three PTOs), leave the
next scenario served, not refused with CONNECTION_REFUSED by the reference's default bound
of 32 half-open connections per address (VEL-CONN-010)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.scenario.engine import run_scenario
from harness.scenario.loader import load_file
from harness.scenario.spec import requirements
from harness.scenario.verdict import Verdict
from harness.targets import InProcessServer, Target

FAILED_HANDSHAKE = """\
id: t/failed-handshake
title: t
spec: [VEL-PROF-005]
role: client
steps:
  - connect: {hooks: {key_share: short}, wait: none}
  - expect_close: {codes: [ILLEGAL_PARAMETER], within: 3}
"""
IN_A_ROW = 40  # more than the 32 slots, within the three PTOs (3 s) a closing one holds


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    server = InProcessServer(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()


async def test_failed_handshakes_in_a_row_do_not_exhaust_the_in_process_target(
        tmp_path: Path, target: Target) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(FAILED_HANDSHAKE)
    (scenario,) = load_file(path, "s.yaml", requirements())
    verdicts = [(await run_scenario(scenario, target, seed=n, strict=False)).outcome
                for n in range(IN_A_ROW)]
    assert [o for o in verdicts if o.verdict is not Verdict.PASS] == []
