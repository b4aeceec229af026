"""The harness measured, for the server-side scenarios of frame encodings, key updates and
graceful shutdown: each PASSes against the in-process reference server and FAILs against
the same server weakened, for that one run, to break the requirement it names (see
test_catalogue_transport_weakened, whose helpers this reuses)."""

from __future__ import annotations

import pytest

from harness.scenario.verdict import Verdict
from harness.targets import Target
from tests.harness.test_catalogue_transport_weakened import NOT_CLOSED, Weakening, _serve, outcome
from velocity.core.buffer import Reader

reference = pytest.fixture(_serve, scope="module", name="reference")
weakened = pytest.fixture(_serve, scope="module", name="weakened")


def reads_non_minimal_types(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frame (and extension) types in any varint encoding are read (VEL-FRM-003)."""
    monkeypatch.setattr(Reader, "pull_varint_minimal", Reader.pull_varint)


CASES = [  # (file, scenario, weakening, requirement, what the FAIL says)
    ("frames/encoding.yaml", "frames/non-minimal-frame-type[type=4001]",
     reads_non_minimal_types, "VEL-FRM-003", NOT_CLOSED),
]


@pytest.mark.parametrize(("file", "name", "weaken", "says"), [
    pytest.param(file, name, weaken, says, marks=pytest.mark.spec(spec), id=weaken.__name__)
    for file, name, weaken, spec, says in CASES])
async def test_the_scenario_fails_the_weakened_server_and_passes_the_reference(
        file: str, name: str, weaken: Weakening, says: str, reference: Target,
        weakened: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    passed = await outcome(file, name, reference)
    assert passed.verdict is Verdict.PASS, passed
    weaken(monkeypatch)
    failed = await outcome(file, name, weakened)
    assert failed.verdict is Verdict.FAIL, failed
    assert says in failed.reason, failed
