"""Measuring the handshake catalogue against the in-process target: a burst of handshakes the
server refuses, as the catalogue's error scenarios make, does not lock the next scenario out."""

from __future__ import annotations

from pathlib import Path

from harness.scenario.engine import run_scenario
from harness.scenario.loader import load_file
from harness.scenario.spec import requirements
from harness.scenario.verdict import Verdict
from harness.targets import InProcessServer


async def test_the_in_process_target_serves_on_after_a_burst_of_refused_handshakes(
        tmp_path: Path) -> None:
    """A connection the server closed during its handshake counts as half-open while it is
    closing; the catalogue runs such scenarios back to back from one address."""
    refused = "".join(f"  - connect: {{name: c{i}, wait: none, hooks: {{key_share: short}}}}\n"
                      for i in range(40))
    closes = "".join(f"  - expect_close: {{conn: c{i}, codes: [ILLEGAL_PARAMETER]}}\n"
                     for i in range(40))
    path = tmp_path / "burst.yaml"
    path.write_text("id: t/burst\ntitle: t\nspec: [VEL-PROF-005]\nrole: client\n"
                    "budget: {timeout: 20}\nsteps:\n" + refused + closes
                    + "  - connect: {}\n  - expect: {event: velocity:handshake_completed}\n")
    (scenario,) = load_file(path, "burst.yaml", requirements())
    (tmp_path / "target").mkdir()
    in_process = InProcessServer(tmp_path / "target")
    try:
        result = await run_scenario(scenario, in_process.start(), seed=0, strict=False)
    finally:
        in_process.stop()
    assert result.outcome.verdict is Verdict.PASS, result.outcome
