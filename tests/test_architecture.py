"""The dependency rules of docs/architecture: a sans-I/O core and a harness-free endpoint."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE_FORBIDDEN = {"socket", "asyncio", "threading", "_thread", "concurrent", "time", "random",
                  "secrets", "os", "subprocess", "select", "selectors", "multiprocessing"}
ENDPOINT_FORBIDDEN = {"harness", "pytest", "yaml", "jsonschema", "scapy", "hypothesis"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def calls_open(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
               and node.func.id == "open" for node in ast.walk(tree))


CORE_FILES = sorted((ROOT / "velocity" / "core").rglob("*.py"))
ENDPOINT_FILES = sorted((ROOT / "velocity").rglob("*.py"))


def test_there_is_a_core_to_check() -> None:
    assert len(CORE_FILES) >= 5


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_is_sans_io(path: Path) -> None:
    bad = imported_roots(path) & CORE_FORBIDDEN
    assert not bad, f"{path.name} imports {sorted(bad)}: velocity/core must stay sans-I/O"
    assert not calls_open(path), f"{path.name} opens files: velocity/core must stay sans-I/O"


@pytest.mark.parametrize("path", ENDPOINT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_endpoint_does_not_import_harness_tools(path: Path) -> None:
    bad = imported_roots(path) & ENDPOINT_FORBIDDEN
    assert not bad, f"{path.name} imports {sorted(bad)}: velocity must not depend on them"


def test_the_checker_sees_forbidden_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os.path\nfrom time import monotonic\nfrom . import x\n"
                      "with open('f') as f: pass\n")
    assert imported_roots(sample) & CORE_FORBIDDEN == {"os", "time"}
    assert calls_open(sample)
