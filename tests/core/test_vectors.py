"""The implementation against vectors/*.json (known answers built independently of it), and
the committed files against their generator."""

from __future__ import annotations

import json

import pytest

from harness.schemas import schema_errors
from harness.vectors import VECTORS_DIR
from harness.vectors.check import TOPICS, Outcome, run
from harness.vectors.generate import BUILDERS, build
from harness.vectors.handshakes import CASES

OUTCOMES = [outcome for topic in TOPICS for outcome in run(topic)]


@pytest.mark.spec("VEL-GEN-003", "VEL-KS-001", "VEL-HS-104", "VEL-HS-022")
@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda o: f"{o.topic}: {o.name}")
def test_vector(outcome: Outcome) -> None:
    assert outcome.ok, outcome.detail


@pytest.mark.parametrize("topic", BUILDERS)
def test_committed_file_is_what_the_generator_builds(topic: str) -> None:
    committed = json.loads((VECTORS_DIR / f"{topic}.json").read_text())
    assert committed == build(topic), (
        f"vectors/{topic}.json differs from its generator; review, then run "
        "'python -m harness.vectors regenerate --i-know'")


def test_schema_rejects_a_malformed_file() -> None:
    document = json.loads((VECTORS_DIR / "frames.json").read_text())
    document["vectors"][0]["hex"] = "XYZ"
    del document["provenance"]["sources"]
    errors = schema_errors("vectors", document)
    assert any(e.startswith("$.vectors[0].hex: ") for e in errors)
    assert any("sources" in e for e in errors)


def test_a_wrong_vector_is_reported(tmp_path: pytest.TempPathFactory) -> None:
    document = json.loads((VECTORS_DIR / "retry.json").read_text())
    document["vectors"][0]["tag"] = "00" * 16
    (tmp_path / "retry.json").write_text(json.dumps(document))  # type: ignore[operator]
    failed = [o for o in run("retry", tmp_path) if not o.ok]  # type: ignore[arg-type]
    assert [o.name for o in failed] == ["tag Retry to a client Initial",
                                        "decode Retry to a client Initial"]


def test_every_recorded_case_has_a_file() -> None:
    names = {p.stem for p in (VECTORS_DIR / "handshakes").glob("*.json")}
    assert names == {case.name for case in CASES}
