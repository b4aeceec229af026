"""The pytest plugin (entry point ``velocity`` in the ``pytest11`` group): the ``velocity``
options, the markers scenario tags become, and collection of ``*.yaml`` files under a
``scenarios`` directory. Hooks only: the work lives in ``harness.collect`` (items),
``harness.scenario`` (models, engine, verdicts) and ``harness.targets``, imported inside
the hooks so a run that collects no scenario pays nothing for them. ``-p no:velocity``
turns it all off. ``--strict`` is pytest's own strict mode (the ``strict`` ini option),
which the scenarios obey too: SHOULD-level checks fail, expect_any takes only ``preferred``.
``--report``, ``--coverage`` and ``--repeat`` are served by ``harness.report``. A run with
an INCONCLUSIVE scenario exits 1 (``Inconclusive``): a gate never passes a target it could
not judge."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.collect import ScenarioFile
    from harness.scenario.run import Conformance

SCENARIO_DIRECTORY = "scenarios"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "scenario.schema.json"
ROLE_MARKERS = {"role_client": "the harness plays the client (tests a server target)",
                "role_server": "the harness plays the server (tests a client target)"}
CONFORMANCE: pytest.StashKey[dict[str, Conformance]] = pytest.StashKey()
"""The session's conformance runs (harness.scenario.run), one per target, made on first
need."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("velocity", "Velocity/1 conformance scenarios (scenarios/**/*.yaml)")
    group.addoption("--target", metavar="HOST:PORT", action="append",
                    help="run against a remote server (default: an in-process reference "
                         "server per worker); repeat it for a fleet: every scenario runs "
                         "against each, one xdist group per target (-n N --dist loadgroup)")
    group.addoption("--target-cmd", metavar="CMD",
                    help="start the target with CMD ({port}, {host} filled in): a server, or "
                         "a client when --target-caps claims 'client'")
    group.addoption("--target-caps", metavar="FILE", type=Path,
                    help="YAML/JSON list of what the target supports (default: what every "
                         "Velocity/1 server must do)")
    group.addoption("--target-concurrency", metavar="N", type=int, default=4,
                    help="scenario runs at once against one --target, across xdist workers "
                         "(default 4)")
    group.addoption("--sni", metavar="NAME", help="server name to send and check")
    group.addoption("--ca", metavar="FILE", type=Path, help="CA file the target chains to")
    group.addoption("--kem-b64", metavar="KEY", help="the target's ML-KEM key, base64 (PDK)")
    group.addoption("--kem-file", metavar="FILE", type=Path,
                    help="the target's leaf certificate or base64 key file (PDK)")
    group.addoption("--kem-previous-file", metavar="FILE", type=Path,
                    help="the ML-KEM key the target replaced in its last rotation, still "
                         "accepted (leaf certificate or key file; VEL-CERT-005)")
    group.addoption("--seed", default=None,
                    help="seed of scenarios that give none (entropy, impairment, fuzzing); "
                         "default: a fresh one per session, printed in every failure "
                         "(give it back to reproduce the run)")
    group.addoption("--transcripts", metavar="DIR", type=Path,
                    help="write every run's transcript here (default: failures only, to a "
                         "temporary directory)")
    group.addoption("--baseline", metavar="DIR", type=Path,
                    help="fail a scenario whose transcript drifted from the one stored in DIR")
    group.addoption("--save-baseline", metavar="DIR", type=Path,
                    help="store every run's transcript in DIR as the baseline")
    group.addoption("--report", metavar="DIR", nargs="?", const="",
                    help="write results.json, summary.md and report.html (and every run's "
                         "transcript) to DIR; without DIR to reports/<UTC time>/")
    group.addoption("--coverage", action="store_true",
                    help="print the requirement-coverage table of the scenarios run")
    group.addoption("--fuzz-cases", metavar="N", type=int, default=None,
                    help="cases of every fuzz step, instead of the scenario's (pytest "
                         "scenarios/ -m fuzz --fuzz-cases 2000)")
    group.addoption("--repeat", metavar="N", type=int, default=1,
                    help="run each scenario N times and judge it by its pass rate (the "
                         "scenario's pass_rate, else every run must pass)")


def pytest_configure(config: pytest.Config) -> None:
    tags = json.loads(SCHEMA.read_text())["$defs"]["tag"]["enum"]
    for tag in tags:
        config.addinivalue_line("markers", f"{tag}: scenarios tagged {tag}")
    for name, text in ROLE_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.addinivalue_line("markers", "spec(*ids): the Velocity/1 requirement IDs covered")
    config.addinivalue_line("markers", "xdist_group(name): a fleet target's runs, kept on one "
                                       "pytest-xdist worker (--dist loadgroup)")
    if config.getoption("repeat") < 1:
        raise pytest.UsageError("--repeat takes a number of runs, at least 1")
    _session_seed(config)
    if not hasattr(config, "workerinput"):  # the session's own process sees every report
        config.pluginmanager.register(Inconclusive(), "velocity-inconclusive")
    if _reporting(config):
        from harness.report import session  # noqa: PLC0415  (only when asked)

        session.configure(config)  # before the targets: a report keeps every transcript
    if any(config.getoption(name) is not None for name in (
            "target", "target_cmd", "target_caps", "ca", "kem_b64", "kem_file",
            "kem_previous_file", "baseline",
            "save_baseline")):
        from harness.collect import conformance  # noqa: PLC0415  (only when asked)

        conformance(config)  # a bad option is a usage error now, not in every scenario


SEED_INPUT = "velocity_seed"  # the session's seed, handed to pytest-xdist workers


class _SeedToWorkers:
    def __init__(self, seed: str) -> None:
        self.seed = seed

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[SEED_INPUT] = self.seed


def _session_seed(config: pytest.Config) -> None:
    """One seed for the whole session, workers included: the one given, else a fresh one
    (connection ids drawn from a fixed default would collide, on a remote target, with those
    of a previous run it still holds closing)."""
    worker: dict[str, Any] | None = getattr(config, "workerinput", None)
    if worker is not None and SEED_INPUT in worker:
        config.option.seed = worker[SEED_INPUT]
        return
    if config.option.seed is None:
        config.option.seed = f"s{secrets.token_hex(4)}"
    config.pluginmanager.register(_SeedToWorkers(config.option.seed), "velocity-seed")


def _reporting(config: pytest.Config) -> bool:
    """Whether the session collects the scenarios' records (harness.report.session)."""
    return (config.getoption("report") is not None or bool(config.getoption("coverage"))
            or config.getoption("repeat") > 1)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    if file_path.suffix != ".yaml" or SCENARIO_DIRECTORY not in file_path.parent.parts:
        return None
    from harness.collect import ScenarioFile  # noqa: PLC0415  (yaml, jsonschema, velocity)

    return ScenarioFile.from_parent(parent, path=file_path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A skipped scenario (UNSUPPORTED, INCONCLUSIVE) is reported at its file and line,
    not at the harness's line that skipped it; when reporting, the report of the phase
    that gave the verdict carries the item's record (harness.report.session)."""
    report = yield
    collect = sys.modules.get("harness.collect")  # not loaded: no scenario was collected
    if collect is None or not isinstance(item, collect.ScenarioItem):
        return report
    if report.skipped and isinstance(report.longrepr, tuple):
        report.longrepr = (item.scenario.file, item.scenario.line, report.longrepr[2])
    verdict_phase = report.when == "call" or (report.when == "setup" and not report.passed)
    if verdict_phase and _reporting(item.config):
        from harness.report.session import PAYLOAD  # noqa: PLC0415

        setattr(report, PAYLOAD, item.payload(call.excinfo))  # xdist carries it along
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    for conformance in session.config.stash.get(CONFORMANCE, {}).values():
        conformance.close()


class Inconclusive:
    """Counts the INCONCLUSIVE verdicts (skips, not verdicts on the target: it could not be
    reached, started or kept healthy around a run); a session with any that would exit 0
    exits 1, and says why."""

    def __init__(self) -> None:
        self.count = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and isinstance(report.longrepr, tuple) and str(
                report.longrepr[2]).startswith("Skipped: INCONCLUSIVE: "):
            self.count += 1

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.count and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.count:
            terminalreporter.write_line(
                f"velocity: {self.count} scenario(s) INCONCLUSIVE, the target could not be "
                "judged (see the skips: -rs): exit status 1", red=True)
