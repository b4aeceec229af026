"""Requirement coverage: which MUST and SHOULD of docs/spec/velocity-1.md a scenario checks
on the wire, which (not observable on the wire) a unit test checks instead, and which
nothing checks. A requirement a peer can observe counts as covered only by a scenario
(one that can check it against any implementation); unit tests do not count for it. A
requirement marked *(not observable on the wire)* needs a unit test naming it with
``@pytest.mark.spec``, found by reading the test sources with ``ast`` (nothing is
imported). Each code of the spec's error registry is listed with the scenarios that provoke
it: a step that expects the target to send it (``expect_close`` codes, an ``error_code`` in
the ``where`` of an ``expect`` of at least one event) or to report it (``expect_client``
``reports``). ``python -m
harness.coverage [--check] [--json] [--markdown]`` prints the tables; ``--check`` exits 1
when a MUST has neither, or when no scenario provokes a code. The pytest plugin builds the
requirement table from the scenarios a run collected."""

from __future__ import annotations

import ast
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from harness.scenario.loader import ScenarioFileError, load_file
from harness.scenario.model import BRANCH_STEPS, Scenario
from harness.scenario.spec import SPEC_FILE, Requirement, requirements

ROOT = SPEC_FILE.parents[2]
SCENARIOS_DIR = ROOT / "scenarios"
TESTS_DIR = ROOT / "tests"
LEVELS = ("MUST", "SHOULD")
STATUSES = ("wire", "unit", "uncovered")
SHOWN = 3  # scenarios or tests named per line in the text table
_AREAS = re.compile(r"Requirement areas:(.*?)\.\s*\n\s*\n", re.S)
_REGISTRY = re.compile(r"^\|\s*code\s*\|\s*name\s*\|[^\n]*\n((?:\|[^\n]*\n)+)", re.M | re.I)
_CODE_ROW = re.compile(r"\|\s*(0x[0-9a-fA-F]+)\s*\|\s*([A-Z][A-Z0-9_]*)\s*\|")
_RULE_ROW = re.compile(r"\|[\s:|-]*")


class CoverageError(Exception):
    """The spec, a scenario file or a test file cannot be read: one line per problem."""


def spec_areas(path: Path = SPEC_FILE) -> dict[str, str]:
    """The spec's areas in the order its conventions list them: code -> name."""
    found = _AREAS.search(path.read_text(encoding="utf-8"))
    if found is None:
        return {}
    pairs = (item.strip().split(" ", 1) for item in " ".join(found[1].split()).split(","))
    return {pair[0]: pair[1] if len(pair) > 1 else pair[0] for pair in pairs if pair[0]}


def area_of(requirement_id: str) -> str:
    """``VEL-HS-001`` -> ``HS``."""
    return requirement_id.split("-")[1]


@dataclass(frozen=True)
class Row:
    requirement: Requirement
    scenarios: tuple[str, ...]  # scenario ids that check it on the wire
    unit_tests: tuple[str, ...]  # tests/...::test naming it with @pytest.mark.spec

    @property
    def status(self) -> str:
        """``wire``: a scenario checks it; ``unit``: not observable, a unit test checks it;
        ``uncovered``: neither (unit tests of an observable requirement do not count)."""
        if self.requirement.observable:
            return "wire" if self.scenarios else "uncovered"
        return "unit" if self.unit_tests else "uncovered"

    @property
    def need(self) -> str:
        """What an uncovered requirement needs."""
        return ("a scenario (observable on the wire)" if self.requirement.observable
                else "a unit test marked @pytest.mark.spec (not observable on the wire)")

    def as_json(self) -> dict[str, Any]:
        r = self.requirement
        return {"id": r.id, "level": r.level, "area": area_of(r.id), "text": r.text,
                "observable": r.observable, "status": self.status,
                "scenarios": list(self.scenarios), "unit_tests": list(self.unit_tests)}


@dataclass(frozen=True)
class Coverage:
    rows: tuple[Row, ...]

    def uncovered(self, level: str = "MUST") -> list[Row]:
        return [r for r in self.rows if r.requirement.level == level and r.status == "uncovered"]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per level: the total and the count per status."""
        out = {level: {"total": 0, **dict.fromkeys(STATUSES, 0)} for level in LEVELS}
        for row in self.rows:
            out[row.requirement.level]["total"] += 1
            out[row.requirement.level][row.status] += 1
        return out

    def as_json(self) -> dict[str, Any]:
        return {"counts": self.counts(), "requirements": [r.as_json() for r in self.rows]}


def coverage(spec: Mapping[str, Requirement], scenarios: Mapping[str, Sequence[str]],
             unit_tests: Mapping[str, Sequence[str]]) -> Coverage:
    """The table of every MUST and SHOULD of ``spec``: ``scenarios`` maps a scenario id to
    its ``spec`` list (a parametrised document is one id), ``unit_tests`` a requirement id
    to the tests that name it."""
    checking: dict[str, list[str]] = {}
    for scenario_id in sorted(scenarios):
        for requirement_id in scenarios[scenario_id]:
            checking.setdefault(requirement_id, []).append(scenario_id)
    rows = [Row(r, tuple(checking.get(r.id, ())), tuple(unit_tests.get(r.id, ())))
            for r in spec.values() if r.level in LEVELS and "*withdrawn*" not in r.text]
    return Coverage(tuple(rows))


def catalogue(directory: Path, spec: Mapping[str, Requirement],
              root: Path = ROOT) -> dict[str, tuple[str, ...]]:
    """Every scenario id under ``directory`` with its ``spec`` list, as the plugin collects
    them (``*.yaml`` below a ``scenarios`` folder). Raises CoverageError naming every
    problem of every bad file."""
    return {s.id: s.spec for s in scenario_documents(directory, spec, root)}


def scenario_documents(directory: Path, spec: Mapping[str, Requirement],
                       root: Path = ROOT) -> list[Scenario]:
    """The scenarios under ``directory``, each parametrisation of a document."""
    found: list[Scenario] = []
    problems: list[str] = []
    for path in sorted(directory.rglob("*.yaml")):
        if "scenarios" not in path.resolve().parent.parts:
            continue
        try:
            found.extend(load_file(path, _shown(path, root), spec))
        except ScenarioFileError as exc:
            problems.extend(exc.errors)
    if problems:
        raise CoverageError("\n".join(problems))
    return found


def error_registry(path: Path = SPEC_FILE) -> dict[str, tuple[int, bool]]:
    """The spec's error codes (the table headed ``| code | name |``), name -> (value,
    whether an endpoint sends it: a row marked *(not sent...)* is a code an endpoint raises
    without anything carrying it), in the registry's order; none when the spec has no such
    table. Raises CoverageError for a row that does not read as a code and a name."""
    table = _REGISTRY.search(path.read_text(encoding="utf-8"))
    if table is None:
        return {}
    codes: dict[str, tuple[int, bool]] = {}
    for row in table[1].splitlines():
        found = _CODE_ROW.match(row)
        if found is not None:
            codes[found[2]] = (int(found[1], 16), "*(not sent" not in row)
        elif _RULE_ROW.fullmatch(row) is None:
            raise CoverageError(f"{path}: an error registry row that is not '| 0x.. | NAME |"
                                f" ...': {row.strip()}")
    return codes


def provoking(registry: Mapping[str, tuple[int, bool]],
              scenarios: Sequence[Scenario]) -> dict[str, tuple[str, ...]]:
    """Code name -> the ids of the scenarios that provoke it (any parametrisation), for
    every code of ``registry``."""
    by_value = {value: name for name, (value, _) in registry.items()}
    found: dict[str, dict[str, None]] = {name: {} for name in registry}
    for scenario in sorted(scenarios, key=lambda s: s.id):
        for step in scenario.steps:
            for code in _provoked(step.kind, step.options):
                name = code if isinstance(code, str) else by_value.get(code)
                if name in found:
                    found[name][scenario.id] = None
    return {name: tuple(ids) for name, ids in found.items()}


def _provoked(kind: str, options: Any) -> Iterator[str | int]:
    """The codes a step expects the target to send or report: ``expect_close`` codes, an
    ``error_code`` matched by an ``expect`` of at least one event, ``expect_client``
    ``reports``; through ``expect_any`` branches and ``finally``."""
    if kind == "finally":
        for step in options:
            yield from _provoked(step.kind, step.options)
        return
    if not isinstance(options, Mapping):
        return
    if kind == "expect_close":
        yield from options.get("codes", ())
    elif kind == "expect_client":
        yield from options.get("reports", ())
    elif kind == "expect" and options.get("count", 1) != 0:
        for key, value in (options.get("where") or {}).items():
            if str(key).split(".")[-1].split("[")[0] == "error_code":
                yield from value if isinstance(value, list) else (value,)
    elif kind == "expect_any":
        for branch in (options.get("branches") or {}).values():
            for sub, sub_options in branch.items():
                yield from _provoked(BRANCH_STEPS[sub], sub_options or {})


def unit_marks(directory: Path, root: Path = ROOT) -> dict[str, list[str]]:
    """Requirement id -> the tests under ``directory`` that name it with
    ``pytest.mark.spec`` (in a decorator, ``pytestmark`` or ``pytest.param(marks=...)``),
    as ``tests/file.py::Class::test``. Raises CoverageError for a file that does not
    parse."""
    found: dict[str, list[str]] = {}
    for path in sorted(directory.rglob("*.py")):
        shown = _shown(path, root)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), shown)
        except (SyntaxError, UnicodeDecodeError, OSError) as exc:
            raise CoverageError(f"{shown}: cannot read it for its spec marks: {exc}") from None
        for scope, ids in _marks(tree, ""):
            name = f"{shown}::{scope}" if scope else shown
            for requirement_id in ids:
                if name not in found.setdefault(requirement_id, []):
                    found[requirement_id].append(name)
    return found


def _marks(node: ast.AST, scope: str) -> Iterator[tuple[str, list[str]]]:
    """(enclosing test, ids) for every ``mark.spec(...)`` call below ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield from _marks(child, f"{scope}::{child.name}" if scope else child.name)
            continue
        if isinstance(child, ast.Call) and _is_spec_mark(child.func):
            yield scope, [a.value for a in child.args
                          if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        yield from _marks(child, scope)


def _is_spec_mark(func: ast.expr) -> bool:
    """``pytest.mark.spec`` or ``mark.spec``."""
    if not isinstance(func, ast.Attribute) or func.attr != "spec":
        return False
    owner = func.value
    return (isinstance(owner, ast.Attribute) and owner.attr == "mark") or (
        isinstance(owner, ast.Name) and owner.id == "mark")


def _shown(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _listed(names: Sequence[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def text_lines(table: Coverage) -> Iterator[str]:
    """The table as aligned text, one requirement a line, then the counts."""
    for row in table.rows:
        r = row.requirement
        if row.status == "wire":
            detail = _listed(row.scenarios)
        elif row.status == "unit":
            detail = f"{_listed(row.unit_tests)} (not observable on the wire)"
        else:
            detail = f"needs {row.need}"
        status = row.status.upper() if row.status == "uncovered" else row.status
        yield f"{r.id:<14} {r.level:<6} {status:<9} {detail}"
    yield from summary_lines(table)


def summary_lines(table: Coverage) -> Iterator[str]:
    for level, n in table.counts().items():
        yield (f"{level}: {n['total']} requirements, {n['wire']} checked on the wire, "
               f"{n['unit']} by unit tests (not observable), {n['uncovered']} uncovered")


def markdown(table: Coverage) -> str:
    lines = ["| requirement | level | status | checked by |", "|---|---|---|---|"]
    for row in table.rows:
        by = row.scenarios if row.status == "wire" else row.unit_tests
        detail = ", ".join(f"`{n}`" for n in by) if row.status != "uncovered" else (
            f"needs {row.need}")
        lines.append(f"| {row.requirement.id} | {row.requirement.level} | {row.status} | "
                     f"{detail} |")
    return "\n".join([*lines, "", *(f"- {line}" for line in summary_lines(table))]) + "\n"


def unprovoked(registry: Mapping[str, tuple[int, bool]],
               codes: Mapping[str, Sequence[str]]) -> list[str]:
    """The codes an endpoint sends that no scenario provokes."""
    return [name for name, ids in codes.items() if not ids and registry[name][1]]


def code_lines(registry: Mapping[str, tuple[int, bool]],
               codes: Mapping[str, Sequence[str]]) -> Iterator[str]:
    """The error-code table as text, then its count."""
    for name, ids in codes.items():
        detail = _listed(ids) if ids else (
            "NOT PROVOKED: needs a scenario" if registry[name][1] else "not sent (the spec "
            "says an endpoint raises it and sends nothing)")
        yield f"{name:<26} {detail}"
    provoked = sum(1 for ids in codes.values() if ids)
    silent = sum(1 for _, sent in registry.values() if not sent)
    yield (f"error codes: {len(codes)} in the registry, {provoked} provoked by a scenario, "
           f"{silent} not sent")


def code_markdown(registry: Mapping[str, tuple[int, bool]],
                  codes: Mapping[str, Sequence[str]]) -> str:
    lines = ["", "| error code | provoked by |", "|---|---|"]
    for name, ids in codes.items():
        none = "not provoked" if registry[name][1] else "not sent"
        lines.append(f"| {name} | {', '.join(f'`{i}`' for i in ids) or none} |")
    return "\n".join(lines) + "\n"


def build(spec_file: Path, scenarios: Path, tests: Path) -> tuple[Coverage, list[Scenario]]:
    """The table from the files, and the scenario documents it read: raises
    CoverageError."""
    try:
        spec = requirements(spec_file)
    except OSError as exc:
        raise CoverageError(f"cannot read the spec {spec_file}: {exc.strerror}") from None
    documents = scenario_documents(scenarios, spec)
    return coverage(spec, {s.id: s.spec for s in documents}, unit_marks(tests)), documents


class Unreadable(click.ClickException):
    exit_code = 2


_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command()
@click.option("--check", is_flag=True,
              help="Exit 1 when a MUST has neither a scenario (observable on the wire) nor a "
                   "unit test (not observable).")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the table as Markdown.")
@click.option("--spec", "spec_file", type=click.Path(exists=True, dir_okay=False,
                                                     path_type=Path),
              default=SPEC_FILE, show_default=True, help="The specification.")
@click.option("--scenarios", type=_DIR, default=SCENARIOS_DIR, show_default=True,
              help="The folder of scenario files.")
@click.option("--tests", type=_DIR, default=TESTS_DIR, show_default=True,
              help="The folder of unit tests read for @pytest.mark.spec.")
def main(check: bool, as_json: bool, as_markdown: bool, spec_file: Path, scenarios: Path,
         tests: Path) -> None:
    """The requirement-coverage table of Velocity/1: every MUST and SHOULD with the
    scenarios that check it on the wire, or the unit tests of one not observable there."""
    if as_json and as_markdown:
        raise click.UsageError("give --json or --markdown, not both")
    try:
        table, documents = build(spec_file, scenarios, tests)
    except CoverageError as exc:
        raise Unreadable(str(exc)) from None
    try:
        registry = error_registry(spec_file)
    except CoverageError as exc:
        raise Unreadable(str(exc)) from None
    codes = provoking(registry, documents)
    if as_json:
        click.echo(json.dumps({**table.as_json(), "error_codes": [
            {"code": name, "sent": registry[name][1], "scenarios": list(ids)}
            for name, ids in codes.items()]}, indent=1))
    elif as_markdown:
        click.echo(markdown(table) + code_markdown(registry, codes), nl=False)
    else:
        for line in (*text_lines(table), *code_lines(registry, codes)):
            click.echo(line)
    missing = table.uncovered("MUST")
    silent = unprovoked(registry, codes)
    if check and (missing or silent):
        if missing:
            click.echo(f"coverage check failed: {len(missing)} MUST requirements are "
                       "uncovered", err=True)
        for row in missing:
            click.echo(f"  {row.requirement.id}: needs {row.need}", err=True)
        if silent:
            click.echo(f"coverage check failed: no scenario provokes {', '.join(silent)}",
                       err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
