"""The pytest side of scenarios: ``ScenarioFile`` collects a ``scenarios/**/*.yaml`` file
(one ``ScenarioItem`` per document and parameter combination, tags as markers; a bad file
is one collection error listing every problem as ``FILE:LINE: $.path: message``, and an id
another file already uses is one too), ``ScenarioItem`` runs its scenario in ``setup`` and
reports the verdict: ERROR, UNSUPPORTED and INCONCLUSIVE there, the rest in the call, a
FAIL as the verdict's report rather than a traceback. ``conformance`` builds the session's
run state from the options (a bad option is one usage-error line)."""

from __future__ import annotations

import datetime as dt
import re
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.pytest_plugin import CONFORMANCE
from harness.report.rate import JUDGED, PassRate, judge
from harness.report.results import crashed_record, run_record, scenario_record
from harness.report.session import REPORT_DIR
from harness.scenario.loader import ScenarioFileError, load_file
from harness.scenario.model import Scenario
from harness.scenario.run import Conformance, RunOptions, transcript_name
from harness.scenario.spec import SPEC_FILE, requirements
from harness.scenario.verdict import Outcome, ScenarioFailed, Verdict, to_pytest
from harness.targets import Target, TargetError, TargetOptions, Targets
from velocity.core.errors import UsageError

SCENARIO_IDS: pytest.StashKey[dict[str, tuple[str, int]]] = pytest.StashKey()
"""Every scenario id collected in this session, with where it was first seen."""


class ScenarioWarning(UserWarning):
    """A SHOULD-level check (or a non-preferred expect_any branch) that failed without
    ``--strict``."""


def conformance(config: pytest.Config, target: str | None = None) -> Conformance:
    """The run state for ``target`` (a ``--target`` value; None: the first or only one)."""
    runs = conformances(config)
    return runs[target] if target is not None else next(iter(runs.values()))


def conformances(config: pytest.Config) -> dict[str, Conformance]:
    """The session's run states, one per target (keyed by the ``--target`` value, or ""
    for the in-process or command target), made from the options on first need."""
    found = config.stash.get(CONFORMANCE, None)
    if found is not None:
        return found
    opt = config.getoption
    given: list[str] = opt("target") or []
    try:
        if len(set(given)) != len(given):
            raise UsageError("a --target is given twice; give each node of the fleet once")
        targets = {name: Targets(TargetOptions.from_values(
            target=name or None, command=opt("target_cmd"), caps=opt("target_caps"),
            sni=opt("sni"), ca=opt("ca"), kem_b64=opt("kem_b64"), kem_file=opt("kem_file"),
            kem_previous_file=opt("kem_previous_file"),
            concurrency=opt("target_concurrency"))) for name in given or [""]}
        spec = requirements(SPEC_FILE)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    except OSError as exc:
        raise pytest.UsageError(f"cannot read the spec {SPEC_FILE}: {exc.strerror}; the "
                                "harness runs from a checkout of the repository") from None
    seed: str = opt("seed")  # the session's: harness.pytest_plugin draws one when none is given
    report = config.stash.get(REPORT_DIR, None)  # a report keeps every run's transcripts
    transcripts = opt("transcripts") or (report / "transcripts" if report else None)
    options = RunOptions(seed=int(seed) if seed.isdigit() else seed,
                         strict=bool(config.getini("strict")), transcripts=transcripts,
                         baseline=opt("baseline"), save_baseline=opt("save_baseline"))
    def own(name: str) -> RunOptions:  # a fleet node's transcripts apart from the others'
        if len(targets) < 2 or transcripts is None:
            return options
        return replace(options, transcripts=transcripts / re.sub(r"[^A-Za-z0-9._-]", "_", name))

    made = config.stash[CONFORMANCE] = {name: Conformance(own(name), each, spec)
                                         for name, each in targets.items()}
    return made


def connections(scenario: Scenario) -> list[str]:
    """The connections a run of ``scenario`` may open (each leaves a transcript), main first."""
    steps = [s for top in scenario.steps
             for s in (top.options if top.kind == "finally" else (top,))]
    return list(dict.fromkeys(["main", *(s.get("name", "main") for s in steps
                                         if s.kind == "connect")]))


class ScenarioFile(pytest.File):
    def collect(self) -> list[ScenarioItem]:
        run = conformance(self.config)
        display = self._display()
        try:
            scenarios = load_file(self.path, display, run.spec)
        except ScenarioFileError as exc:
            raise self.CollectError("\n".join(exc.errors)) from None
        seen = self.config.stash.setdefault(SCENARIO_IDS, {})
        duplicates = [f"{display}:{s.line}: $.id: duplicate id {s.id!r} (also in "
                      f"{seen[s.id][0]}:{seen[s.id][1]})"
                      for s in scenarios if seen.get(s.id, (display,))[0] != display]
        if duplicates:
            raise self.CollectError("\n".join(dict.fromkeys(duplicates)))
        fleet = list(conformances(self.config))
        items = []
        for scenario in scenarios:
            seen.setdefault(scenario.id, (display, scenario.line))
            for target in fleet:
                name = f"{scenario.name}@{target}" if len(fleet) > 1 else scenario.name
                items.append(ScenarioItem.from_parent(self, name=name, scenario=scenario,
                                                      target=target, grouped=len(fleet) > 1))
        return items

    def _display(self) -> str:
        try:
            return str(self.path.relative_to(self.config.rootpath))
        except ValueError:
            return str(self.path)


class ScenarioItem(pytest.Item):
    """One scenario (one parameter combination) against one target. Under ``--repeat N``
    the item runs it N times (each run with its own seed and transcripts) and reports one
    verdict, judged from the pass rate (harness.report.rate): the verdict is the scenario's,
    and pytest can give an item only one, so the runs are not N items."""

    def __init__(self, *, scenario: Scenario, target: str = "", grouped: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.target = target
        self.outcome: Outcome | None = None
        self.runs: list[tuple[Outcome, float]] = []  # each run's outcome and seconds
        self.rate: PassRate | None = None
        if grouped:  # a fleet: each target's runs stay on one xdist worker (--dist loadgroup)
            self.add_marker(pytest.mark.xdist_group(name=target))
        for tag in scenario.tags:
            self.add_marker(tag)
        self.add_marker(f"role_{scenario.role}")
        self.add_marker(pytest.mark.spec(*scenario.spec))

    def setup(self) -> None:
        run = conformance(self.config, self.target)
        today = dt.datetime.now(dt.UTC).date()
        repeat: int = self.config.getoption("repeat")
        base = run.seed_of(self.scenario)
        for index in range(repeat):
            scenario = (self.scenario if index == 0
                        else replace(self.scenario, seed=f"{base}/run{index + 1}"))
            started = time.monotonic()
            outcome = run.run(scenario, today)
            if repeat > 1:
                outcome = self._numbered(outcome, index + 1)
            self.runs.append((outcome, time.monotonic() - started))
            if outcome.verdict not in JUDGED:
                break
        self.outcome, self.rate = judge([o for o, _ in self.runs], self.scenario.pass_rate)
        self._properties(self.outcome)
        if self.outcome.verdict in (Verdict.ERROR, Verdict.UNSUPPORTED, Verdict.INCONCLUSIVE):
            self._report(self.outcome)

    def _numbered(self, outcome: Outcome, run: int) -> Outcome:
        """Keep each repeated run's transcripts: ``X.json`` becomes ``X#2.json`` and
        ``X.conn.json`` ``X#2.conn.json``."""
        if outcome.transcript is None:
            return outcome
        folder = outcome.transcript.parent
        main = transcript_name(self.scenario, "main")
        stem = main[: -len(".json")]
        for conn in connections(self.scenario):
            name = transcript_name(self.scenario, conn)
            if (folder / name).exists():
                (folder / name).replace(folder / f"{stem}#{run}{name[len(stem):]}")
        return replace(outcome, transcript=folder / f"{stem}#{run}.json")

    def _properties(self, outcome: Outcome) -> None:
        """What JUnit XML (pytest's --junitxml) shows of the verdict."""
        self.user_properties.append(("verdict", outcome.verdict.name))
        self.user_properties.append(("spec", " ".join(self.scenario.spec)))
        if outcome.requirements:
            self.user_properties.append(("requirements", " ".join(outcome.requirements)))
        self.user_properties.append(("seed", str(outcome.seed)))
        if outcome.transcript is not None:
            self.user_properties.append(("transcript", str(outcome.transcript)))
        if self.rate is not None and self.rate.runs > 1:
            self.user_properties.append(("pass_rate", self.rate.describe()))

    def payload(self, excinfo: pytest.ExceptionInfo[BaseException] | None) -> dict[str, Any]:
        """What the item's report carries to the session's results (to the controller
        under xdist): the record and the target it ran against."""
        if self.outcome is None:
            why = excinfo.exconly().splitlines()[0] if excinfo else "the run did not finish"
            return {"record": crashed_record(self, self.scenario, f"harness bug: {why}"),
                    "target": None}
        try:
            found: Target | None = conformance(self.config, self.target).targets.get()
        except TargetError:
            found = None
        runs = [run_record(outcome, seconds) for outcome, seconds in self.runs]
        record = scenario_record(self.scenario, self.outcome, runs, self.rate,
                                 nodeid=self.nodeid, target=None if found is None else found.label)
        return {"record": record, "target": None if found is None else {
            "label": found.label, "capabilities": sorted(found.capabilities)}}

    def runtest(self) -> None:
        assert self.outcome is not None  # setup ran
        if self.outcome.verdict is Verdict.PASS and self.outcome.reason:
            warnings.warn(ScenarioWarning(f"{self.scenario.name}: {self.outcome.reason}"),
                          stacklevel=1)
        self._report(self.outcome)

    def _report(self, outcome: Outcome) -> None:
        to_pytest(outcome, self.scenario, conformance(self.config).spec)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str | Any:
        if isinstance(excinfo.value, ScenarioFailed):
            return excinfo.value.report
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.scenario.line - 1, f"scenario {self.scenario.name}"
