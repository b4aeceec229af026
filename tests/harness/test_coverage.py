"""Requirement coverage: a requirement observable on the wire is covered only by a scenario
(a unit test naming it does not count), one marked not observable only by a unit test
(found with ast, not by importing), a parametrised document counts once, MAY is left out;
``python -m harness.coverage --check`` exits 1 naming each uncovered MUST, and the plugin
prints the table of the scenarios run with ``--coverage``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.coverage import (
    catalogue,
    coverage,
    error_registry,
    provoking,
    scenario_documents,
    spec_areas,
    unit_marks,
)
from harness.scenario.spec import SPEC_FILE, requirements
from tests.harness.sessions import quiet_inner_sessions, write

pytest_plugins = ["pytester"]
__all__ = ["quiet_inner_sessions"]  # an autouse fixture

SPEC = """\
# A spec

Requirement areas: HS handshake, CERT certificates and
keys.

- **VEL-HS-001 [MUST]** Observable and checked by a scenario.
- **VEL-HS-002 [MUST]** Observable, named only by a unit test.
- **VEL-HS-003 [SHOULD]** Observable, named by nothing.
- **VEL-HS-004 [MAY]** Optional.
- **VEL-CERT-001 [MUST]** Key files are private.
  *(not observable on the wire: checked by unit tests)*
- **VEL-CERT-002 [MUST]** Caches are private. *(not observable on the wire: checked by unit
  tests)*
"""
SCENARIOS = """\
id: demo/matrix
title: "With {n}"
spec: [VEL-HS-001]
role: client
parametrize:
  n: [1, 2, 3]
steps:
  - wait: 0
"""
TESTS = '''\
import pytest
from pytest import mark

pytestmark = pytest.mark.spec("VEL-HS-002")


@pytest.mark.spec("VEL-CERT-001")
def test_key_files() -> None:
    """A string is not a mark: pytest.mark.spec("VEL-CERT-002")"""


class TestCaches:
    @mark.spec("VEL-CERT-001")
    def test_in_a_class(self) -> None: ...


@pytest.mark.parametrize("x", [pytest.param(1, marks=pytest.mark.spec("VEL-HS-001"))])
def test_param(x: int) -> None: ...
'''


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "spec.md").write_text(SPEC)
    (tmp_path / "scenarios" / "demo").mkdir(parents=True)
    (tmp_path / "scenarios" / "demo" / "matrix.yaml").write_text(SCENARIOS)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_demo.py").write_text(TESTS)
    return tmp_path


def test_unit_marks_are_read_from_the_source(tree: Path) -> None:
    assert unit_marks(tree / "tests", tree) == {
        "VEL-HS-002": ["tests/test_demo.py"],
        "VEL-CERT-001": ["tests/test_demo.py::test_key_files",
                         "tests/test_demo.py::TestCaches::test_in_a_class"],
        "VEL-HS-001": ["tests/test_demo.py::test_param"]}


def test_only_scenarios_cover_what_the_wire_shows(tree: Path) -> None:
    spec = requirements(tree / "spec.md")
    scenarios = catalogue(tree / "scenarios", spec, tree)
    assert scenarios == {"demo/matrix": ("VEL-HS-001",)}  # three items, one document
    table = coverage(spec, scenarios, unit_marks(tree / "tests", tree))
    status = {r.requirement.id: (r.status, r.scenarios) for r in table.rows}
    assert status == {"VEL-HS-001": ("wire", ("demo/matrix",)),
                      "VEL-HS-002": ("uncovered", ()),  # its unit test does not count
                      "VEL-HS-003": ("uncovered", ()),
                      "VEL-CERT-001": ("unit", ()),
                      "VEL-CERT-002": ("uncovered", ())}  # not observable, no unit test
    assert [r.requirement.id for r in table.uncovered("MUST")] == ["VEL-HS-002",
                                                                   "VEL-CERT-002"]
    assert table.counts()["MUST"] == {"total": 4, "wire": 1, "unit": 1, "uncovered": 2}


def test_the_areas_are_read_from_the_conventions(tree: Path) -> None:
    assert spec_areas(tree / "spec.md") == {"HS": "handshake", "CERT": "certificates and keys"}
    areas = spec_areas(SPEC_FILE)
    assert {requirement_id.split("-")[1] for requirement_id in requirements(SPEC_FILE)} <= set(
        areas)


REGISTRY = """\

## Errors

| Code | Name | raised when |
|---|---|---|
| 0x00 | NO_ERROR | graceful close |
|  0x0a  |  PROTOCOL_VIOLATION  | any other violation |
| 0x0109 | DOWNGRADE_DETECTED | a forged directive *(not sent: the client is draining)* |
| 0x0107 | BAD_FINISHED | FINISHED verification failed |
| 0x0108 | NO_APPLICATION_PROTOCOL | no common ALPN |

| code | name | not errors |
|---|---|---|
| 0x01 | CLIENT_HELLO | another table |
"""
PROVOKING = """\
id: demo/close
title: t
spec: [VEL-HS-001]
role: client
parametrize:
  code: [NO_ERROR, PROTOCOL_VIOLATION]
steps:
  - connect: {}
  - send: {frames: [{type: connection_close, error_code: 0x0107, frame_type: 0, reason: ""}]}
  - expect: {event: quic:packet_received, where: {"data.frames[*].error_code": 0x0108}, count: 0}
  - expect_close: {codes: ["{code}"]}
---
id: demo/client
title: t
spec: [VEL-HS-001]
role: server
steps:
  - connect: {}
  - expect_client: {exit_code: nonzero, stderr_regex: "(?i)downgrade|finished"}
---
id: demo/branches
title: t
spec: [VEL-HS-001]
role: client
steps:
  - connect: {}
  - expect_any: {branches: {a: {close: {codes: [0x0108]}}, b: {silence: {}}}}
"""


def test_each_error_code_lists_the_scenarios_that_provoke_it(tree: Path) -> None:
    """A code the target must send: expect_close codes (every parametrisation, through
    expect_any) or an error_code an expect of at least one event matches. A frame the
    harness sends, an expect of none and a pattern of a client's report provoke nothing; a
    code the spec marks not sent needs no scenario."""
    (tree / "spec.md").write_text(SPEC + REGISTRY)
    (tree / "scenarios" / "demo" / "codes.yaml").write_text(PROVOKING)
    registry = error_registry(tree / "spec.md")
    assert registry == {"NO_ERROR": (0, True), "PROTOCOL_VIOLATION": (10, True),
                        "DOWNGRADE_DETECTED": (0x109, False), "BAD_FINISHED": (0x107, True),
                        "NO_APPLICATION_PROTOCOL": (0x108, True)}
    documents = scenario_documents(tree / "scenarios", requirements(tree / "spec.md"), tree)
    assert provoking(registry, documents) == {
        "NO_ERROR": ("demo/close",), "PROTOCOL_VIOLATION": ("demo/close",),
        "DOWNGRADE_DETECTED": (), "BAD_FINISHED": (),
        "NO_APPLICATION_PROTOCOL": ("demo/branches",)}
    done = coverage_command("--check", "--spec", tree / "spec.md", "--scenarios",
                            tree / "scenarios", "--tests", tree / "tests")
    assert done.returncode == 1
    assert "coverage check failed: no scenario provokes BAD_FINISHED" in done.stderr
    assert ("error codes: 5 in the registry, 3 provoked by a scenario, 1 not sent"
            in done.stdout)
    assert "BAD_FINISHED               NOT PROVOKED: needs a scenario" in done.stdout
    assert "DOWNGRADE_DETECTED         not sent" in done.stdout


def test_a_registry_row_that_does_not_read_is_named(tree: Path) -> None:
    (tree / "spec.md").write_text(SPEC + REGISTRY.replace("| 0x0107 |", "| 107 |"))
    done = coverage_command("--spec", tree / "spec.md", "--scenarios", tree / "scenarios",
                            "--tests", tree / "tests")
    assert done.returncode == 2
    assert "an error registry row that is not" in done.stderr and "Traceback" not in done.stderr


def test_every_code_of_the_spec_is_provoked_by_the_catalogue() -> None:
    table = json.loads(coverage_command("--json").stdout)
    codes = {row["code"]: row for row in table["error_codes"]}
    assert len(codes) == 29 and "APPLICATION_ERROR" in codes
    assert [c for c, row in codes.items() if row["sent"] and not row["scenarios"]] == []


def coverage_command(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.coverage", *map(str, args)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_check_exits_1_naming_each_uncovered_must(tree: Path) -> None:
    paths = ("--spec", tree / "spec.md", "--scenarios", tree / "scenarios", "--tests",
             tree / "tests")
    done = coverage_command("--check", *paths)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "coverage check failed: 2 MUST requirements are uncovered",
        "  VEL-HS-002: needs a scenario (observable on the wire)",
        "  VEL-CERT-002: needs a unit test marked @pytest.mark.spec (not observable on the "
        "wire)"]
    assert "VEL-HS-001     MUST   wire      demo/matrix" in done.stdout
    assert ("MUST: 4 requirements, 1 checked on the wire, 1 by unit tests (not observable), "
            "2 uncovered") in done.stdout
    (tree / "scenarios" / "demo" / "more.yaml").write_text(
        SCENARIOS.replace("demo/matrix", "demo/more").replace("VEL-HS-001", "VEL-HS-002"))
    (tree / "tests" / "test_more.py").write_text(
        'import pytest\n\n\n@pytest.mark.spec("VEL-CERT-002")\ndef test_x() -> None: ...\n')
    assert coverage_command("--check", *paths).returncode == 0


def test_json_and_markdown(tree: Path) -> None:
    paths = ("--spec", tree / "spec.md", "--scenarios", tree / "scenarios", "--tests",
             tree / "tests")
    table = json.loads(coverage_command("--json", *paths).stdout)
    assert [r["id"] for r in table["requirements"]] == [
        "VEL-HS-001", "VEL-HS-002", "VEL-HS-003", "VEL-CERT-001", "VEL-CERT-002"]
    assert table["counts"]["SHOULD"] == {"total": 1, "wire": 0, "unit": 0, "uncovered": 1}
    text = coverage_command("--markdown", *paths).stdout
    assert "| VEL-HS-001 | MUST | wire | `demo/matrix` |" in text
    both = coverage_command("--json", "--markdown", *paths)
    assert both.returncode == 2 and "give --json or --markdown, not both" in both.stderr


def test_a_bad_scenario_file_is_named_not_a_traceback(tree: Path) -> None:
    (tree / "scenarios" / "demo" / "bad.yaml").write_text("id: demo/bad\nspec: [VEL-XX-999]\n")
    done = coverage_command("--spec", tree / "spec.md", "--scenarios", tree / "scenarios",
                            "--tests", tree / "tests")
    assert done.returncode == 2
    assert "scenarios/demo/bad.yaml:2: $.spec[0]: VEL-XX-999 is not a requirement" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_repository_table_is_consistent() -> None:
    done = coverage_command("--json")
    table = json.loads(done.stdout)
    ids = [r["id"] for r in table["requirements"]]
    assert len(ids) == len(set(ids))
    for level, n in table["counts"].items():
        rows = [r for r in table["requirements"] if r["level"] == level]
        assert n["total"] == len(rows) == n["wire"] + n["unit"] + n["uncovered"]
    for r in table["requirements"]:
        assert r["status"] != "unit" or (not r["observable"] and r["unit_tests"])
        assert r["status"] != "wire" or (r["observable"] and r["scenarios"])


def test_the_plugin_prints_the_coverage_of_the_scenarios_run(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/demo/one.yaml", textwrap.dedent("""\
        id: demo/one
        title: t
        spec: [VEL-HS-020]
        role: client
        steps:
          - wait: 0
        """))
    result = pytester.runpytest("scenarios", "--coverage")
    result.assert_outcomes(passed=1)
    lines = result.stdout.str().splitlines()
    assert any("velocity requirement coverage" in line for line in lines)
    assert "VEL-HS-020     MUST   wire      demo/one" in lines
    assert "VEL-HS-021     MUST   UNCOVERED needs a scenario (observable on the wire)" in lines
    assert any(line.startswith("MUST: ") for line in lines)
