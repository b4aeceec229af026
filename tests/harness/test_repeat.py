"""``--repeat N``: each scenario runs N times, each run with its own seed and transcripts,
and is judged by its pass rate with a Wilson 95% interval: without ``pass_rate`` every run
must pass; with ``pass_rate: r`` it fails only when no run passed or the interval's upper
bound is below r. Checked on the rule itself and on scenarios behind a lossy relay."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.report.rate import PassRate, judge, wilson
from harness.scenario.verdict import Outcome, Verdict
from tests.harness.report_runs import run_session, write_scenarios
from tests.harness.sessions import quiet_inner_sessions, write

pytest_plugins = ["pytester"]
__all__ = ["quiet_inner_sessions"]  # an autouse fixture

PASS, FAIL = Outcome(Verdict.PASS), Outcome(Verdict.FAIL, "lost", seed="0/run2")


@pytest.mark.parametrize(("passed", "runs", "low", "high"), [
    (0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),  # Wilson (1927) / Newcombe (1998) worked examples
])
def test_the_wilson_interval_matches_published_values(passed: int, runs: int, low: float,
                                                      high: float) -> None:
    found = wilson(passed, runs)
    assert math.isclose(found[0], low, abs_tol=5e-5) and math.isclose(found[1], high,
                                                                      abs_tol=5e-5)


def test_without_pass_rate_every_run_must_pass() -> None:
    outcome, rate = judge([PASS, FAIL, PASS], None)
    assert outcome.verdict is Verdict.FAIL and outcome.seed == "0/run2"
    assert outcome.reason == ("2/3 runs passed (67%, 95% CI 21%-94%; every run must pass); "
                              "run 2 failed; lost")
    assert rate == PassRate(2, 3)
    assert judge([PASS, PASS], None) == (PASS, PassRate(2, 2))
    assert judge([FAIL], None) == (FAIL, PassRate(0, 1))  # one run: the run's own verdict


def test_a_pass_rate_fails_only_on_evidence_of_a_shortfall() -> None:
    def verdict(passed: int, runs: int, required: float) -> Verdict:
        outcomes = [PASS] * passed + [FAIL] * (runs - passed)
        return judge(outcomes, required)[0].verdict

    assert wilson(17, 20)[1] >= 0.9 and verdict(17, 20, 0.9) is Verdict.PASS
    assert wilson(12, 20)[1] < 0.9 and verdict(12, 20, 0.9) is Verdict.FAIL
    assert verdict(20, 20, 1.0) is Verdict.PASS and verdict(19, 20, 1.0) is Verdict.FAIL
    assert wilson(0, 3)[1] >= 0.1 and verdict(0, 3, 0.1) is Verdict.FAIL  # no run passed
    outcome, _ = judge([FAIL, PASS, PASS], 0.5)
    assert outcome.verdict is Verdict.PASS  # the deciding run is a passed one
    assert outcome.reason.startswith("2/3 runs passed (67%, 95% CI 21%-94%; required 50%)")


def test_a_run_no_rate_counts_ends_the_repetitions() -> None:
    error = Outcome(Verdict.ERROR, "bad expression")
    assert judge([PASS, error], 0.5) == (Outcome(Verdict.ERROR, "run 2: bad expression"), None)
    xfail, xpass = Outcome(Verdict.XFAIL), Outcome(Verdict.XPASS)
    assert judge([xfail, xpass], None)[0].verdict is Verdict.XFAIL  # expect_failure holds
    assert judge([xpass, xpass], None)[0].verdict is Verdict.XPASS


LOSSY = """\
id: repeat/clean
title: A handshake through a perfect relay
spec: [VEL-REC-002]
role: client
network: {loss: 0.0}
steps:
  - connect: {}
  - expect: {event: velocity:handshake_completed, within: 3}
---
id: repeat/blackholed
title: Every datagram lost
spec: [VEL-REC-002]
role: client
pass_rate: 0.5
network: {loss: 1.0}
budget: {timeout: 3}
steps:
  - connect: {wait: sent}
  - expect: {event: velocity:handshake_completed, within: 0.4}
---
id: repeat/lossy
title: Half the datagrams lost
spec: [VEL-REC-002]
role: client
pass_rate: 0.3
network: {loss: 0.5}
budget: {timeout: 4}
steps:
  - connect: {wait: sent}
  - expect: {event: velocity:handshake_completed, within: 1.5}
"""


@pytest.mark.spec("VEL-REC-002")
def test_repeated_runs_behind_a_lossy_relay(tmp_path: Path) -> None:
    write_scenarios(tmp_path, LOSSY, "repeat/lossy.yaml")
    run = run_session(tmp_path, "--repeat", "3")
    document = json.loads((run.folder / "results.json").read_text())
    records = {r["id"]: r for r in document["scenarios"]}
    assert document["run"]["repeat"] == 3
    clean, blackholed, lossy = (records[f"repeat/{n}"] for n in ("clean", "blackholed", "lossy"))
    assert clean["verdict"] == "PASS" and clean["pass_rate"]["passed"] == 3
    assert [r["seed"] for r in clean["runs"]] == [0, "0/run2", "0/run3"]
    assert [r["transcript"] for r in clean["runs"]] == [
        f"transcripts/repeat--clean#{n}.json" for n in (1, 2, 3)]
    assert all((run.folder / r["transcript"]).is_file() for r in clean["runs"])
    assert blackholed["verdict"] == "FAIL" and blackholed["pass_rate"]["passed"] == 0
    assert "0/3 runs passed (0%, 95% CI 0%-56%; required 50%): no run passed" in (
        blackholed["reason"])
    rate = lossy["pass_rate"]  # how many got through depends on timing: judge what was seen
    assert len(lossy["runs"]) == rate["runs"] == 3
    assert rate["passed"] == sum(r["verdict"] == "PASS" for r in lossy["runs"])
    assert (rate["low"], rate["high"]) == pytest.approx(wilson(rate["passed"], 3))
    expected = PassRate(rate["passed"], 3, 0.3).met
    assert lossy["verdict"] == ("PASS" if expected else "FAIL")
    assert "velocity pass rates" in run.output
    assert "FAIL   repeat/blackholed: 0/3 runs passed" in run.output


def test_a_pass_rate_out_of_range_is_a_collection_error(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/repeat/bad.yaml", "id: repeat/bad\ntitle: t\n"
          "spec: [VEL-REC-002]\nrole: client\npass_rate: 1.5\nsteps:\n  - wait: 0\n")
    result = pytester.runpytest("scenarios")
    assert "scenarios/repeat/bad.yaml:5: $.pass_rate: 1.5 is greater than the maximum of 1" in (
        result.stdout.str())


def test_repeat_below_one_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--repeat", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--repeat takes a number of runs, at least 1" in result.stderr.str()
