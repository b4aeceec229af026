"""One scenario run from start to verdict, around the engine: the target (made on first
use), ``requires`` against what it claims (UNSUPPORTED), a run slot and the sanity
handshakes before and after against a target the harness does not own (INCONCLUSIVE),
the transcripts written and compared with a baseline, then SHOULD-level relaxation and
``expect_failure``. Knows nothing of pytest."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.scenario.engine import RunResult, run_scenario
from harness.scenario.model import Scenario
from harness.scenario.spec import Requirement
from harness.scenario.verdict import Outcome, Verdict, apply_expect_failure, relax_should
from harness.targets import Target, TargetError, Targets, sanity_check
from harness.transcript.baseline import compare_baseline, save_baseline

SLOT_WAIT = 120.0  # seconds a run waits for a free slot to a remote target
SANITY_TIMEOUT = 3.0  # seconds for a sanity handshake and GET /
SANITY_RETRY = 1.0  # the same, once the target failed one
_UNSAFE = re.compile(r"[^A-Za-z0-9._=\[\]-]+")


@dataclass(frozen=True)
class RunOptions:
    seed: int | str = 0
    strict: bool = False
    transcripts: Path | None = None  # every run's transcripts; None: failures only, to a temp dir
    baseline: Path | None = None
    save_baseline: Path | None = None


class Conformance:
    """The runs of one test session (one per pytest-xdist worker)."""

    def __init__(self, options: RunOptions, targets: Targets,
                 spec: dict[str, Requirement]) -> None:
        self.options = options
        self.targets = targets
        self.spec = spec
        self._failures: Path | None = None
        self._sanity = SANITY_TIMEOUT  # shorter once a check failed: a dead target fails fast

    def close(self) -> None:
        self.targets.close()

    def seed_of(self, scenario: Scenario) -> int | str:
        return self.options.seed if scenario.seed is None else scenario.seed

    def run(self, scenario: Scenario, today: dt.date) -> Outcome:
        """The verdict of one run of ``scenario`` (``today`` judges expect_failure)."""
        seed = self.seed_of(scenario)
        try:
            target = self.targets.get()
        except TargetError as exc:
            return Outcome(Verdict.INCONCLUSIVE, str(exc), seed=seed)
        implied = "server" if scenario.role == "client" else "client"
        missing = target.missing((implied, *scenario.requires))
        if missing:
            return Outcome(Verdict.UNSUPPORTED, f"{target.label} does not claim "
                           f"{', '.join(missing)} (list it in --target-caps FILE if it does)",
                           seed=seed)
        try:
            with self.targets.slot(SLOT_WAIT):
                outcome = self._guarded(scenario, target, seed)
        except TargetError as exc:
            return Outcome(Verdict.INCONCLUSIVE, str(exc), seed=seed)
        outcome = relax_should(outcome, scenario, self.spec, strict=self.options.strict)
        return apply_expect_failure(outcome, scenario, today)

    def _sane(self, target: Target) -> str | None:
        """None when ``target`` passes the sanity handshake (always for an owned one)."""
        if target.owned:
            return None
        reason = asyncio.run(sanity_check(target, self._sanity))
        self._sanity = SANITY_TIMEOUT if reason is None else SANITY_RETRY
        return reason

    def _guarded(self, scenario: Scenario, target: Target, seed: int | str) -> Outcome:
        reason = self._sane(target)
        if reason is not None:
            return Outcome(Verdict.INCONCLUSIVE, f"the sanity handshake before the run "
                           f"failed: {reason}", seed=seed)
        result = asyncio.run(run_scenario(scenario, target, seed=seed,
                                          strict=self.options.strict))
        outcome = self._record(scenario, result)
        if not target.owned and not self.targets.replaced(target):
            reason = self._sane(target)
            if reason is not None:
                return replace(outcome, verdict=Verdict.INCONCLUSIVE, reason=(
                    f"the sanity handshake after the run failed: {reason} (the run itself: "
                    f"{outcome.verdict.name}{': ' + outcome.reason if outcome.reason else ''})"))
        return outcome

    def _record(self, scenario: Scenario, result: RunResult) -> Outcome:
        """Write the transcripts where asked (failures always), compare with the baseline."""
        outcome = result.outcome
        document = result.documents[0][1] if result.documents else None
        if document is not None and outcome.verdict is Verdict.PASS:
            outcome = self._baseline(scenario, document, outcome)
        directory = self.options.transcripts
        if directory is None and outcome.verdict in (Verdict.FAIL, Verdict.ERROR):
            if self._failures is None:
                self._failures = Path(tempfile.mkdtemp(prefix="velocity-transcripts-"))
            directory = self._failures
        if directory is None or not result.documents:
            return outcome
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / transcript_name(scenario, conn) for conn, _ in result.documents]
        for path, (_, doc) in zip(paths, result.documents, strict=True):
            path.write_text(json.dumps(doc, indent=1) + "\n")
        return replace(outcome, transcript=paths[0])

    def _baseline(self, scenario: Scenario, document: dict[str, Any],
                  outcome: Outcome) -> Outcome:
        params = dict(scenario.params)
        if self.options.save_baseline is not None:
            save_baseline(self.options.save_baseline, scenario.id, params, document)
        if self.options.baseline is None:
            return outcome
        drift = [d.description for d in compare_baseline(self.options.baseline, scenario.id,
                                                         params, document)]
        if len(drift) > 8:
            drift = [*drift[:8], f"and {len(drift) - 8} more"]
        if not drift:
            return outcome
        return replace(outcome, verdict=Verdict.FAIL, reason=(
            f"the transcript drifted from the baseline in {self.options.baseline}"),
            expected="the baseline's handshake", actual="; ".join(drift))


def transcript_name(scenario: Scenario, conn: str) -> str:
    """``handshake--basic[profile=light].json``; ``...[...].second.json`` for a second
    connection."""
    stem = _UNSAFE.sub("_", scenario.id.replace("/", "--") + (
        f"[{scenario.params_id}]" if scenario.params else ""))
    return f"{stem}.json" if conn == "main" else f"{stem}.{_UNSAFE.sub('_', conn)}.json"
