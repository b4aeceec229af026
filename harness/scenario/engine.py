"""The engine: runs one scenario's steps in order against a target and concludes PASS, FAIL
or ERROR. A step that does not hold raises ``StepFailed`` (FAIL, with expected, actual and
the offending event); a bad scenario found only now raises ``ScenarioError`` and an
exhausted budget ``BudgetExceeded`` (ERROR). ``finally`` steps run whatever happened; a
run that outlives its time budget by ``GRACE`` is a harness bug (ERROR)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from harness.fuzz.runner import FuzzSettings
from harness.scenario.budget import BudgetExceeded, BudgetMeter
from harness.scenario.context import Document, Run, StepFailed, StepUnsupported
from harness.scenario.model import Scenario, Step
from harness.scenario.steps import STEPS
from harness.scenario.verdict import Outcome, ScenarioError, Verdict
from harness.targets import Target

GRACE = 5.0  # seconds


@dataclass
class RunResult:
    outcome: Outcome
    documents: list[tuple[str, Document]]  # (connection name, transcript), "main" first


async def run_scenario(scenario: Scenario, target: Target, *, seed: int | str,
                       strict: bool, fuzz: FuzzSettings | None = None) -> RunResult:
    """Run ``scenario`` against ``target``: its outcome and transcripts."""
    loop = asyncio.get_running_loop()
    run = Run(scenario, target, seed, strict, BudgetMeter(scenario.budget, loop.time()), loop,
              fuzz=fuzz or FuzzSettings())
    run.harness.start = loop.time()
    body = [s for s in scenario.steps if s.kind != "finally"]
    final = [s for f in scenario.steps if f.kind == "finally" for s in f.options]
    try:
        async with asyncio.timeout(scenario.budget.timeout + GRACE):
            outcome = await _steps(run, body)
            for step in final:  # each runs, whatever happened before
                after = await _steps(run, [step])
                if outcome.verdict is Verdict.PASS:
                    outcome = after
    except TimeoutError:
        outcome = Outcome(Verdict.ERROR, f"the run did not return within its time budget of "
                          f"{scenario.budget.timeout:g} s (+{GRACE:g} s): a harness bug")
    finally:
        await run.close()
    if outcome.verdict is Verdict.PASS and run.warnings:
        outcome = Outcome(Verdict.PASS, "; ".join(run.warnings))
    run.note("verdict", {"verdict": outcome.verdict.name, "reason": outcome.reason or "",
                         "requirements": list(outcome.requirements)})
    return RunResult(replace(outcome, seed=seed), run.documents())


async def _steps(run: Run, steps: list[Step]) -> Outcome:
    for step in steps:
        run.note("step", {"index": run.next_step(), "step": step.kind,
                          "args": {"at": step.where}})
        try:
            await STEPS[step.kind](run, step)
        except StepFailed as failed:
            return Outcome(Verdict.FAIL, failed.reason, failed.requirements, failed.expected,
                           failed.actual, failed.event, step=step.where)
        except StepUnsupported as exc:
            return Outcome(Verdict.UNSUPPORTED, str(exc), step=step.where)
        except (ScenarioError, BudgetExceeded) as exc:
            return Outcome(Verdict.ERROR, str(exc), step=step.where)
    return Outcome(Verdict.PASS)
