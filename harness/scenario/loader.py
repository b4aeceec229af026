"""Scenario files to ``Scenario`` models: YAML read with node marks (every value keeps its
line), each document checked against harness/schemas/scenario.schema.json for each
parameter combination, then the checks a schema cannot make (requirement IDs exist in the
spec, connections and saved names are defined before use, expressions and regexes compile,
role-specific keys). Every problem of a file is reported at once, one line each:
``FILE:LINE: $.json.path: what is wrong``."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

import yaml
from jsonschema import ValidationError

from harness.scenario.model import (
    MAX_COMBINATIONS,
    Budget,
    ExpectFailure,
    Network,
    Path,
    Scenario,
    combinations,
    count_combinations,
    substitute,
)
from harness.scenario.semantics import StepChecker
from harness.scenario.spec import Requirement
from harness.schemas import validator

MAX_FILE_BYTES = 1 << 20
MAX_MESSAGE = 600


class ScenarioFileError(Exception):
    """A file that cannot be collected; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Loader(yaml.SafeLoader):
    """SafeLoader without implicit timestamps: ``until: 2027-03-01`` stays the text written
    (the schema checks it is a date), like every other value JSON Schema can check."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def json_path(path: Path) -> str:
    """``("steps", 2, "expect", "where", "data.x")`` -> ``$.steps[2].expect.where["data.x"]``."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{part!r}]"
    return out


@dataclass
class Problems:
    """The problems of one file, each placed on a line; duplicates (the same problem in
    several parameter combinations) are reported once."""

    display: str
    found: dict[tuple[int, str], None] = field(default_factory=dict)

    def add(self, line: int, path: Path | None, message: str) -> None:
        where = f"{json_path(path)}: " if path is not None else ""
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "..."
        self.found[(line, f"{self.display}:{line}: {where}{message}")] = None

    def __len__(self) -> int:
        return len(self.found)

    def lines(self) -> list[str]:
        return [text for _, text in sorted(self.found)]


@dataclass(frozen=True)
class Document:
    data: Any
    lines: dict[Path, int]  # the line of every value (for a mapping entry: of its key)
    line: int  # where the document starts (its first key)

    def line_of(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, self.line)


def read_documents(text: str, problems: Problems) -> list[Document]:
    """The YAML documents of ``text`` with the line of every node. A syntax error is added
    to ``problems``; the documents before it are returned."""
    loader = _Loader(text)
    documents: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
                continue  # an empty document, as a trailing "---" leaves
            lines: dict[Path, int] = {}
            data = _tree(loader, node, (), lines, set(), problems)
            first = node.value[0][0] if isinstance(node, yaml.MappingNode) and node.value else node
            documents.append(Document(data, lines, first.start_mark.line + 1))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = f" ({exc.context})" if exc.context else ""
        problems.add(mark.line + 1 if mark else 1, None,
                     f"YAML syntax error: {exc.problem}{context}")
    except yaml.YAMLError as exc:
        problems.add(1, None, f"YAML error: {exc}")
    except RecursionError:
        problems.add(1, None, "YAML nested too deeply")
    finally:
        loader.dispose()
    return documents


def _tree(loader: _Loader, node: yaml.Node, path: Path, lines: dict[Path, int],
          seen: set[int], problems: Problems) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in seen:
        problems.add(lines[path], path,
                     "YAML aliases (*name) are not supported: write the value out")
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(loader, key_node, path, problems)
            if not isinstance(key, str):
                problems.add(key_node.start_mark.line + 1, path,
                             f"the key {key!r} is not a string: quote it")
                continue
            if key in out:
                problems.add(key_node.start_mark.line + 1, (*path, key), "duplicate key")
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _tree(loader, value_node, (*path, key), lines, seen, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_tree(loader, item, (*path, i), lines, seen, problems)
                for i, item in enumerate(node.value)]
    return _scalar(loader, node, path, problems)


def _scalar(loader: _Loader, node: yaml.Node, path: Path, problems: Problems) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        problems.add(node.start_mark.line + 1, path, "a key must be a plain string")
        return None
    value = loader.construct_object(node, deep=True)
    if isinstance(value, float) and not math.isfinite(value):
        problems.add(node.start_mark.line + 1, path, f"{value} is not a finite number")
    return value


def _schema_problems(data: Any, document: Document, problems: Problems) -> list[Path]:
    """Add every schema error of ``data``; the paths of the values in error."""
    broken = []
    for error in validator("scenario").iter_errors(data):
        path: Path = tuple(error.absolute_path)
        broken.append(path)
        for where, message in _explain(error, path):
            problems.add(document.line_of(where), where, message)
    return broken


def _explain(error: ValidationError, path: Path) -> list[tuple[Path, str]]:
    """The error in words a scenario author acts on, placed on the offending key."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    allowed = list(schema.get("properties", {}))
    is_step = schema.get("title") == "step"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        what = "step" if is_step else "key"
        return [((*path, key), f"unknown {what} {key!r}; allowed here: {', '.join(allowed)}")
                for key in error.instance if key not in allowed]
    if error.validator == "enum" and "title" in schema:
        return [(path, f"{error.instance!r} is not a known {schema['title']} (one of: "
                       f"{', '.join(map(str, schema['enum']))})")]
    if is_step and error.validator in ("minProperties", "maxProperties"):
        keys = ", ".join(error.instance) if isinstance(error.instance, dict) else ""
        return [(path, f"a step is a mapping with exactly one key, its kind (one of "
                       f"{', '.join(allowed)}); this one has: {keys or 'none'} "
                       "(check the indentation)")]
    return [(path, error.message)]


def load_file(file: FilePath, display: str,
              spec: Mapping[str, Requirement]) -> list[Scenario]:
    """Every scenario (document x parameter combination) of ``file``, shown as ``display``
    in messages. Raises ScenarioFileError listing every problem of the file."""
    problems = Problems(display)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ScenarioFileError([f"{display}:1: cannot read: {exc.strerror}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioFileError([f"{display}:1: larger than {MAX_FILE_BYTES >> 20} MiB: "
                                 "split it into several files"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ScenarioFileError([f"{display}:{line}: not UTF-8 text ({exc.reason})"]) from None
    documents = read_documents(text, problems)
    if not documents and not problems:
        problems.add(1, None, "no scenario in this file")
    scenarios: list[Scenario] = []
    ids: dict[str, int] = {}
    for document in documents:
        scenario_id = document.data.get("id") if isinstance(document.data, dict) else None
        if isinstance(scenario_id, str):
            line = document.line_of(("id",))
            if scenario_id in ids:
                problems.add(line, ("id",),
                             f"duplicate id {scenario_id!r} (first at line {ids[scenario_id]})")
            ids.setdefault(scenario_id, line)
        scenarios.extend(_document_scenarios(document, problems, spec))
    if problems:
        raise ScenarioFileError(problems.lines())
    return scenarios


def _document_scenarios(document: Document, problems: Problems,
                        spec: Mapping[str, Requirement]) -> list[Scenario]:
    data = document.data
    if not isinstance(data, dict):
        problems.add(document.line, None, "a scenario is a mapping of header keys and steps")
        return []
    matrix = data.get("parametrize")
    if not (isinstance(matrix, dict) and all(isinstance(v, list) for v in matrix.values())):
        matrix = None  # absent, or malformed: the schema says how
    elif count_combinations(matrix) > MAX_COMBINATIONS:
        problems.add(document.line_of(("parametrize",)), ("parametrize",),
                     f"{count_combinations(matrix)} combinations; at most {MAX_COMBINATIONS}")
        return []
    out = []
    for params in combinations(matrix):
        values = {k: v if k == "parametrize" else substitute(v, params) for k, v in data.items()}
        broken = _schema_problems(values, document, problems)
        scenario = _build(values, params, document, problems, spec, broken)
        if scenario is not None:
            out.append(scenario)
    return out


def _build(data: dict[str, Any], params: dict[str, Any], document: Document,
           problems: Problems, spec: Mapping[str, Requirement],
           broken: list[Path]) -> Scenario | None:
    """The scenario, after the checks a schema cannot make; None if ``data`` has problems.
    Values with schema errors (``broken``) are not checked further."""
    before = len(problems)

    def sound(path: Path) -> bool:
        return not any(b[: len(path)] == path for b in broken)

    if sound(("spec",)) and isinstance(data.get("spec"), list):
        _check_requirements(data["spec"], document, problems, spec)
    role = data.get("role") if sound(("role",)) else None
    def report(path: Path, message: str) -> None:
        problems.add(document.line_of(path), path, message)

    checker = StepChecker(role, report, sound, network="network" in data)
    if not isinstance(data.get("steps"), list):
        return None
    steps = checker.steps(data["steps"], ("steps",), top=True,
                          where=lambda path: f"{problems.display}:{document.line_of(path)}")
    if broken or len(problems) > before:
        return None
    failure = data.get("expect_failure")
    return Scenario(
        id=data["id"], title=data["title"], spec=tuple(data["spec"]), role=data["role"],
        steps=steps, file=problems.display, line=document.line,
        tags=tuple(data.get("tags", ())), requires=tuple(data.get("requires", ())),
        budget=Budget(**data.get("budget", {})), seed=data.get("seed"),
        network=Network.of(data["network"]) if "network" in data else None,
        expect_failure=None if failure is None else ExpectFailure(
            failure["reason"], dt.date.fromisoformat(failure["until"])),
        pass_rate=data.get("pass_rate"), params=tuple(params.items()))



def _check_requirements(ids: list[Any], document: Document, problems: Problems,
                        spec: Mapping[str, Requirement]) -> None:
    for i, requirement_id in enumerate(ids):
        found = spec.get(requirement_id)
        if found is None:
            problems.add(document.line_of(("spec", i)), ("spec", i),
                         f"{requirement_id} is not a requirement of docs/spec/velocity-1.md")
        elif not found.observable:
            problems.add(document.line_of(("spec", i)), ("spec", i),
                         f"{requirement_id} is not observable on the wire (the spec leaves it "
                         "to unit tests): a scenario cannot check it")
