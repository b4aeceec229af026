"""The pytest side of scenarios: ``ScenarioFile`` collects a ``scenarios/**/*.yaml`` file
(one ``ScenarioItem`` per document and parameter combination, tags as markers; a bad file
is one collection error listing every problem as ``FILE:LINE: $.path: message``, and an id
another file already uses is one too), ``ScenarioItem`` runs its scenario in ``setup`` and
reports the verdict: ERROR, UNSUPPORTED and INCONCLUSIVE there, the rest in the call, a
FAIL as the verdict's report rather than a traceback. ``conformance`` builds the session's
run state from the options (a bad option is one usage-error line)."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import Any

import pytest

from harness.pytest_plugin import CONFORMANCE
from harness.scenario.loader import ScenarioFileError, load_file
from harness.scenario.model import Scenario
from harness.scenario.run import Conformance, RunOptions
from harness.scenario.spec import SPEC_FILE, requirements
from harness.scenario.verdict import Outcome, ScenarioFailed, Verdict, to_pytest
from harness.targets import TargetOptions, Targets
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
            concurrency=opt("target_concurrency"))) for name in given or [""]}
        spec = requirements(SPEC_FILE)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    except OSError as exc:
        raise pytest.UsageError(f"cannot read the spec {SPEC_FILE}: {exc.strerror}; the "
                                "harness runs from a checkout of the repository") from None
    seed: str = opt("seed")
    options = RunOptions(seed=int(seed) if seed.isdigit() else seed,
                         strict=bool(config.getini("strict")), transcripts=opt("transcripts"),
                         baseline=opt("baseline"), save_baseline=opt("save_baseline"))
    made = config.stash[CONFORMANCE] = {name: Conformance(options, each, spec)
                                         for name, each in targets.items()}
    return made


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
    def __init__(self, *, scenario: Scenario, target: str = "", grouped: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.target = target
        self.outcome: Outcome | None = None
        if grouped:  # a fleet: each target's runs stay on one xdist worker (--dist loadgroup)
            self.add_marker(pytest.mark.xdist_group(name=target))
        for tag in scenario.tags:
            self.add_marker(tag)
        self.add_marker(f"role_{scenario.role}")
        self.add_marker(pytest.mark.spec(*scenario.spec))

    def setup(self) -> None:
        run = conformance(self.config, self.target)
        self.outcome = run.run(self.scenario, dt.datetime.now(dt.UTC).date())
        if self.outcome.verdict in (Verdict.ERROR, Verdict.UNSUPPORTED, Verdict.INCONCLUSIVE):
            self._report(self.outcome)

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
