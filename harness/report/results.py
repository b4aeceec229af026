"""results.json: what one session of scenarios concluded, in the versioned shape of
harness/schemas/results.schema.json. The record of a scenario item (built where it ran, in
an xdist worker or not, from its outcome and each of its runs' transcripts), the session's
collection of them (``Results``, the controller's), the verdict matrix by spec area, and
the document, validated before any file of the report is written."""

from __future__ import annotations

import datetime as dt
import json
import platform
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.coverage import Coverage, area_of
from harness.report.rate import PassRate
from harness.scenario.model import Scenario
from harness.scenario.verdict import Outcome, Verdict
from harness.schemas import schema_errors
from harness.transcript import TranscriptError, load, summary
from velocity import __version__

SCHEMA = "velocity-results/1"
VERDICTS = tuple(v.name for v in Verdict)
ALL = "all"  # the matrix row that counts every scenario item once


def run_record(outcome: Outcome, duration: float) -> dict[str, Any]:
    """One run of a scenario: its verdict, seed, time and the facts of its main
    transcript (when one was written): handshake latency, bytes per flight, amplification
    ratio, as ``harness.transcript.summary`` reads them."""
    record: dict[str, Any] = {
        "verdict": outcome.verdict.name, "reason": outcome.reason, "seed": outcome.seed,
        "duration": round(duration, 4), "transcript": None, "transcript_error": None,
        "handshake_ms": None, "bytes_per_flight": [], "amplification_ratio": None}
    if outcome.transcript is None:
        return record
    record["transcript"] = str(outcome.transcript.resolve())
    try:
        facts = summary(load(outcome.transcript))
    except TranscriptError as exc:
        record["transcript_error"] = exc.lines[0]
        return record
    amplification = facts["amplification"] or {}
    record.update(handshake_ms=facts["handshake_ms"], bytes_per_flight=facts["bytes_per_flight"],
                  amplification_ratio=amplification.get("ratio"))
    return record


def scenario_record(scenario: Scenario, outcome: Outcome, runs: list[dict[str, Any]],
                    rate: PassRate | None, *, nodeid: str, target: str | None) -> dict[str, Any]:
    """One scenario item: what it is, its verdict (the deciding run's details) and runs."""
    return {
        "nodeid": nodeid, "id": scenario.id, "name": scenario.name, "title": scenario.title,
        "file": scenario.file, "line": scenario.line, "role": scenario.role,
        "params": dict(scenario.params), "tags": list(scenario.tags), "spec": list(scenario.spec),
        "target": target, "verdict": outcome.verdict.name, "reason": outcome.reason,
        "requirements": list(outcome.requirements), "step": outcome.step,
        "expected": outcome.expected, "actual": outcome.actual, "event": outcome.event,
        "seed": outcome.seed, "transcript": None if outcome.transcript is None
        else str(outcome.transcript.resolve()),
        "duration": round(sum(r["duration"] for r in runs), 4),
        "pass_rate": None if rate is None else rate.as_json(), "runs": runs}


def crashed_record(item: pytest.Item, scenario: Scenario, reason: str) -> dict[str, Any]:
    """The record of an item whose run raised (a harness bug): ERROR, no run."""
    return scenario_record(scenario, Outcome(Verdict.ERROR, reason), [], None,
                           nodeid=item.nodeid, target=None)


def matrix(records: Iterable[Mapping[str, Any]], areas: Iterable[str]) -> dict[str, Counter[str]]:
    """Verdict counts per spec area (a scenario counts once in each area its ``spec``
    names), every area listed, then ``all`` (each scenario item once)."""
    table: dict[str, Counter[str]] = {area: Counter() for area in areas}
    total: Counter[str] = Counter()
    for record in records:
        total[record["verdict"]] += 1
        for area in dict.fromkeys(area_of(i) for i in record["spec"]):
            table.setdefault(area, Counter())[record["verdict"]] += 1
    table[ALL] = total
    return table


def versions() -> dict[str, str]:
    return {"velocity": __version__, "python": platform.python_version(),
            "pytest": pytest.__version__, "platform": platform.platform()}


@dataclass
class Results:
    """The records of one session, as they arrive (in the controller under xdist)."""

    start: dt.datetime
    seed: str
    strict: bool
    repeat: int
    args: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    targets: dict[str, list[str]] = field(default_factory=dict)  # label -> capabilities

    def add(self, payload: Mapping[str, Any]) -> None:
        """A payload a scenario item's report carried: its record and its target."""
        self.records.append(payload["record"])
        target = payload.get("target")
        if target is not None:
            self.targets.setdefault(target["label"], sorted(target["capabilities"]))

    def scenarios(self) -> dict[str, tuple[str, ...]]:
        """The scenarios the session ran (a parametrised document once) with their spec."""
        return {r["id"]: tuple(r["spec"]) for r in sorted(self.records, key=_order)}

    def document(self, end: dt.datetime, table: Coverage, folder: Path) -> dict[str, Any]:
        """results.json for the report in ``folder`` (transcripts inside it named relative to
        it), checked against its schema (a problem is a harness bug)."""
        records = [_relative(r, folder) for r in sorted(self.records, key=_order)]
        document = {
            "schema": SCHEMA,
            "run": {"start": self.start.isoformat(timespec="seconds"),
                    "duration": round((end - self.start).total_seconds(), 3),
                    "targets": [{"label": k, "capabilities": v}
                                for k, v in sorted(self.targets.items())],
                    "seed": self.seed, "strict": self.strict, "repeat": self.repeat,
                    "args": self.args, "versions": versions()},
            "scenarios": records,
            "coverage": table.as_json()}
        errors = schema_errors("results", json.loads(json.dumps(document)))
        if errors:
            raise ValueError("results.json breaks its schema: " + "; ".join(errors[:5]))
        return document


def _order(record: Mapping[str, Any]) -> tuple[str, int, str]:
    return record["file"], record["line"], record["nodeid"]


def _relative(record: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    def shown(path: str | None) -> str | None:
        if path is None or not Path(path).is_relative_to(folder):
            return path
        return Path(path).relative_to(folder).as_posix()

    return {**record, "transcript": shown(record["transcript"]),
            "runs": [{**run, "transcript": shown(run["transcript"])} for run in record["runs"]]}


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
