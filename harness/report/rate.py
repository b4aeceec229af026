"""Pass rates of a scenario run several times (``--repeat N``): the Wilson score interval
at 95% and the rule that turns N verdicts into one. Without ``pass_rate`` every run must
pass. With ``pass_rate: r`` the scenario passes when at least one run passed and the upper
bound of the interval is at least r: it fails only when the runs show, at 95% confidence,
that the target passes less often than r (so a flaky network alone does not fail it).
Knows nothing of pytest or files."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from harness.scenario.verdict import Outcome, Verdict

Z95 = 1.959963984540054  # the standard normal quantile of 0.975
PASSED = frozenset({Verdict.PASS, Verdict.XPASS})  # XPASS: passed, against its expect_failure
JUDGED = PASSED | {Verdict.FAIL, Verdict.XFAIL}
"""The verdicts a pass rate counts; any other (ERROR, UNSUPPORTED, INCONCLUSIVE) ends the
repetitions and is the scenario's verdict."""


def wilson(passed: int, runs: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``passed`` successes in ``runs`` trials."""
    if runs < 1 or not 0 <= passed <= runs:
        raise ValueError(f"{passed} passes in {runs} runs is not a pass rate")
    p = passed / runs
    denominator = 1 + z * z / runs
    centre = (p + z * z / (2 * runs)) / denominator
    half = z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs)) / denominator
    low = 0.0 if passed == 0 else max(0.0, centre - half)
    high = 1.0 if passed == runs else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class PassRate:
    passed: int
    runs: int
    required: float | None = None  # the scenario's pass_rate; None: every run must pass

    @property
    def rate(self) -> float:
        return self.passed / self.runs

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.passed, self.runs)

    @property
    def met(self) -> bool:
        if self.required is None:
            return self.passed == self.runs
        return self.passed > 0 and self.interval[1] >= self.required

    def describe(self) -> str:
        """``7/10 runs passed (70%, 95% CI 40%-89%; required 90%)``."""
        low, high = self.interval
        need = ("every run must pass" if self.required is None
                else f"required {self.required:.0%}")
        return (f"{self.passed}/{self.runs} runs passed ({self.rate:.0%}, 95% CI "
                f"{low:.0%}-{high:.0%}; {need})")

    def as_json(self) -> dict[str, float | int | None]:
        low, high = self.interval
        return {"runs": self.runs, "passed": self.passed, "rate": self.rate, "low": low,
                "high": high, "required": self.required}


def judge(outcomes: list[Outcome], required: float | None) -> tuple[Outcome, PassRate | None]:
    """One verdict for a scenario's runs, in the order they ran, and their pass rate (None
    when a run ended the repetitions with a verdict no rate counts). The outcome returned
    is the run that decided it (the first passed or failed one), its reason prefixed with
    the rate when there was more than one run."""
    if not outcomes:
        raise ValueError("no run to judge")
    last = outcomes[-1]
    if last.verdict not in JUDGED:
        prefix = f"run {len(outcomes)}: " if len(outcomes) > 1 else ""
        return replace(last, reason=prefix + last.reason), None
    rate = PassRate(sum(o.verdict in PASSED for o in outcomes), len(outcomes), required)
    deciding = next(i for i, o in enumerate(outcomes) if (o.verdict in PASSED) == rate.met)
    chosen = outcomes[deciding]
    if len(outcomes) == 1:
        return chosen, rate
    if rate.met:
        why = rate.describe() if rate.passed < rate.runs else ""
    elif required is None:
        why = f"{rate.describe()}; run {deciding + 1} failed"
    else:
        short = ("no run passed" if rate.passed == 0
                 else "the interval's upper bound is below the required rate")
        why = f"{rate.describe()}: {short}; run {deciding + 1} failed"
    reason = "; ".join(part for part in (why, chosen.reason) if part)
    return replace(chosen, reason=reason), rate
