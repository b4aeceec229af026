"""The report side of one pytest session: where the report goes (``--report DIR``, or
``reports/<UTC time>/`` under the rootdir for a bare ``--report``: the controller picks it
and hands it to its xdist workers), the records the scenario items' reports carry to the
controller, and at the end results.json, summary.md and report.html, then the pass rates
(``--repeat``) and the ``--coverage`` table on the terminal. The plugin calls ``configure``
only when ``--report``, ``--coverage`` or ``--repeat`` above 1 is given."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from harness.coverage import Coverage, CoverageError, coverage, spec_areas, text_lines, unit_marks
from harness.report.rate import PassRate
from harness.report.results import Results, write_json
from harness.scenario.spec import SPEC_FILE, requirements

REPORT_DIR: pytest.StashKey[Path] = pytest.StashKey()
WORKER_INPUT = "velocity_report"  # the report folder, handed to xdist workers
PAYLOAD = "velocity_result"  # the attribute of a scenario item's report holding its record
FILES = ("results.json", "summary.md", "report.html")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def configure(config: pytest.Config) -> None:
    """Resolve and create the report folder; in the controller (or a session without
    xdist) register the ``ReportPlugin`` that collects the records."""
    worker: dict[str, Any] | None = getattr(config, "workerinput", None)
    given: str | None = config.getoption("report")
    start = _now()
    if given is not None:
        if worker is not None and WORKER_INPUT in worker:
            config.stash[REPORT_DIR] = Path(worker[WORKER_INPUT])
        else:
            config.stash[REPORT_DIR] = _create(Path(given) if given else (
                config.rootpath / "reports" / start.strftime("%Y%m%dT%H%M%SZ")))
    if worker is None:
        results = Results(start=start, seed=str(config.getoption("seed")),
                          strict=bool(config.getini("strict")),
                          repeat=config.getoption("repeat"),
                          args=list(config.invocation_params.args))
        config.pluginmanager.register(ReportPlugin(config, results), "velocity-report")


def _create(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise pytest.UsageError(f"--report {path}: cannot create that folder: "
                                f"{exc.strerror or exc}; give another with --report DIR"
                                ) from None
    return path.resolve()


class ReportPlugin:
    """The controller's side: the records the scenario items' reports carry, then the
    report's files and the terminal's sections."""

    def __init__(self, config: pytest.Config, results: Results) -> None:
        self.config = config
        self.results = results
        self.directory = config.stash.get(REPORT_DIR, None)
        self.table: Coverage | None = None
        self.problem: str | None = None  # why unit tests were not counted

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """pytest-xdist: a worker writes its transcripts into this report's folder."""
        if self.directory is not None:
            node.workerinput[WORKER_INPUT] = str(self.directory)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payload = getattr(report, PAYLOAD, None)
        if payload is not None:
            self.results.add(payload)

    def pytest_sessionfinish(self) -> None:
        """Build the coverage table; write the report's files when ``--report`` asked."""
        if self.directory is None and not self.config.getoption("coverage"):
            return
        spec = requirements(SPEC_FILE)
        root = self.config.rootpath
        try:
            unit = unit_marks(root / "tests", root)
        except CoverageError as exc:
            unit, self.problem = {}, f"unit tests not counted: {exc}"
        self.table = coverage(spec, self.results.scenarios(), unit)
        if self.directory is None:
            return
        from harness.report.html import render  # noqa: PLC0415  (matplotlib: only for a report)
        from harness.report.summary import markdown  # noqa: PLC0415

        document = self.results.document(_now(), self.table, self.directory)
        areas = spec_areas(SPEC_FILE)
        write_json(self.directory / "results.json", document)
        (self.directory / "summary.md").write_text(markdown(document, areas), encoding="utf-8")
        (self.directory / "report.html").write_text(
            render(document, spec, areas, self.directory), encoding="utf-8")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Pass rates of repeated scenarios, the coverage table (``--coverage``), the report."""
        out = terminalreporter
        repeated = [r for r in self.results.records
                    if r["pass_rate"] and r["pass_rate"]["runs"] > 1]
        if repeated:
            out.section("velocity pass rates")
            for record in sorted(repeated, key=lambda r: r["nodeid"]):
                rate = record["pass_rate"]
                shown = PassRate(rate["passed"], rate["runs"], rate["required"]).describe()
                out.write_line(f"{record['verdict']:<6} {record['name']}: {shown}")
        if self.config.getoption("coverage") and self.table is not None:
            out.section("velocity requirement coverage")
            for line in text_lines(self.table):
                out.write_line(line)
            if self.problem:
                out.write_line(self.problem)
        if self.directory is not None and (self.directory / FILES[-1]).is_file():
            out.write_line(f"velocity report: {self.directory / FILES[-1]} (with "
                           f"{', '.join(FILES[:-1])})")
