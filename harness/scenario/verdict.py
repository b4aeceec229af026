"""Verdicts: what one scenario run concluded (``Outcome``), how ``expect_failure`` turns it
into XFAIL or XPASS, the report a FAIL gives (requirements quoted from the spec, expected
against actual, the offending event, seed and transcript), and the mapping onto pytest
outcomes: UNSUPPORTED and INCONCLUSIVE skip, XFAIL is an xfail, XPASS and FAIL fail, ERROR
is a pytest error."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from harness.scenario.model import Scenario
from harness.scenario.spec import Requirement


class Verdict(Enum):
    PASS = "pass"
    FAIL = "fail"
    UNSUPPORTED = "unsupported"  # the target does not claim what the scenario requires
    INCONCLUSIVE = "inconclusive"  # the target was unreachable or unhealthy around the run
    XFAIL = "xfail"  # failed, as its expect_failure says, before the expiry date
    XPASS = "xpass"  # passed although expect_failure says it should fail: a failure
    ERROR = "error"  # a bad scenario or a harness bug


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str = ""
    requirements: tuple[str, ...] = ()  # the IDs the failed check concerns
    expected: str | None = None
    actual: str | None = None
    event: dict[str, Any] | None = None  # the offending transcript event
    transcript: Path | None = None
    seed: int | str | None = None
    step: str | None = None  # file:line of the step that decided it


class ScenarioFailed(Exception):
    """Raised for a FAIL or XPASS verdict; pytest shows ``report`` instead of a traceback."""

    def __init__(self, report: str) -> None:
        super().__init__(report)
        self.report = report


class ScenarioError(Exception):
    """A bad scenario found while running it (an expression that cannot be evaluated, a
    step the role cannot take...): the engine's verdict is ERROR, shown as one message."""


def apply_expect_failure(outcome: Outcome, scenario: Scenario, today: dt.date) -> Outcome:
    """PASS/FAIL read through the scenario's ``expect_failure``: before its date a FAIL is
    XFAIL and a PASS is XPASS; after it the scenario FAILs, whatever the run did."""
    entry = scenario.expect_failure
    if entry is None or outcome.verdict not in (Verdict.PASS, Verdict.FAIL):
        return outcome
    if entry.expired(today):
        return replace(outcome, verdict=Verdict.FAIL, reason=(
            f"expired expect_failure (until {entry.until.isoformat()}: {entry.reason}); "
            f"the run itself was {outcome.verdict.name}: fix the target or extend the date"))
    if outcome.verdict is Verdict.FAIL:
        return replace(outcome, verdict=Verdict.XFAIL)
    return replace(outcome, verdict=Verdict.XPASS, reason=(
        f"passed, but expect_failure says it fails until {entry.until.isoformat()} "
        f"({entry.reason}): remove the expect_failure entry"))


def relax_should(outcome: Outcome, scenario: Scenario, spec: dict[str, Requirement], *,
                 strict: bool) -> Outcome:
    """Without ``--strict`` a FAIL whose requirements (the failed check's, else the
    scenario's) are all SHOULD or MAY is a PASS with a warning; under ``--strict`` it stays
    a FAIL."""
    ids = outcome.requirements or scenario.spec
    if strict or outcome.verdict is not Verdict.FAIL:
        return outcome
    if all(i in spec and spec[i].strict_only for i in ids):
        return replace(outcome, verdict=Verdict.PASS,
                       reason=f"{outcome.reason} (SHOULD-level: fails only under --strict)")
    return outcome


def report(outcome: Outcome, scenario: Scenario, spec: dict[str, Requirement]) -> str:
    """The text of a FAIL (or XPASS) verdict, for people reading a CI log."""
    lines = [f"{outcome.verdict.name} {scenario.id}"
             + (f" [{scenario.params_id}]" if scenario.params else "")
             + f" ({scenario.file}:{scenario.line}): {scenario.title}",
             f"  reason: {outcome.reason}"]
    if outcome.step:
        lines.append(f"  at step: {outcome.step}")
    for requirement_id in outcome.requirements or scenario.spec:
        found = spec.get(requirement_id)
        text = f"[{found.level}] {found.text}" if found else "(not in docs/spec)"
        lines.append(f"  {requirement_id} {text}")
    if outcome.expected is not None:
        lines.append(f"  expected: {outcome.expected}")
    if outcome.actual is not None:
        lines.append(f"  actual:   {outcome.actual}")
    if outcome.event is not None:
        lines.append(f"  offending event: {json.dumps(outcome.event, sort_keys=True)}")
    lines.append(f"  seed: {outcome.seed}")
    lines.append(f"  transcript: {outcome.transcript or '(none recorded)'}")
    return "\n".join(lines)


def to_pytest(outcome: Outcome, scenario: Scenario, spec: dict[str, Requirement]) -> None:
    """Return for PASS; otherwise raise what pytest reports for the verdict (an ERROR as
    one line, without a traceback)."""
    verdict = outcome.verdict
    if verdict in (Verdict.UNSUPPORTED, Verdict.INCONCLUSIVE):  # named: -rs groups by reason
        pytest.skip(f"{verdict.name}: {scenario.name}: {outcome.reason}")
    if verdict is Verdict.XFAIL:
        pytest.xfail(f"{scenario.expect_failure.reason if scenario.expect_failure else ''}: "
                     f"{outcome.reason}")
    if verdict in (Verdict.FAIL, Verdict.XPASS):
        raise ScenarioFailed(report(outcome, scenario, spec))
    if verdict is Verdict.ERROR:
        where = f" ({outcome.step})" if outcome.step else ""
        pytest.fail(f"ERROR {scenario.name}{where}: {outcome.reason}", pytrace=False)
