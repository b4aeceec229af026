"""Baselines: the normalised summary of one run of each scenario (per parameter
combination), kept as one JSON file per scenario id and params under a directory, and the
comparison of a new run with it. File names are stable: the id with ``/`` as ``.``, the params
sorted as ``[k=v,...]``, and a short hash when that text had to be cut or changed. A missing
entry is a difference saying so; a malformed file is a ``TranscriptError`` of one line."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from harness.transcript.diff import Difference, compare
from harness.transcript.files import TranscriptError, located, parse
from harness.transcript.normalise import normalise
from harness.transcript.summary import summary

BASELINE_SCHEMA = "velocity-baseline/1"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=,+-]")
MAX_NAME = 120


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def baseline_name(scenario_id: str, params: dict[str, Any]) -> str:
    """The file name of the baseline of ``scenario_id`` run with ``params``: readable, and
    with a hash of both when the readable text alone could be cut, changed or ambiguous."""
    name = scenario_id.replace("/", ".")
    if params:
        name += "+" + ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    safe = _UNSAFE.sub("_", name)[:MAX_NAME]
    if safe != name or not all(isinstance(v, str) for v in params.values()):
        digest = hashlib.sha256(_canonical([scenario_id, params]).encode()).hexdigest()[:10]
        safe = f"{safe}-{digest}"
    return f"{safe}.json"


def save_baseline(directory: Path, scenario_id: str, params: dict[str, Any],
                  document: dict[str, Any]) -> Path:
    """Keep the valid transcript ``document``'s normalised summary as the baseline of
    ``scenario_id`` with ``params``; the file written."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / baseline_name(scenario_id, params)
    entry = {"schema": BASELINE_SCHEMA, "scenario": {"id": scenario_id, "params": params},
             "summary": summary(normalise(document))}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(entry, indent=1) + "\n")
    partial.replace(path)  # never a half-written baseline
    return path


def _stored(path: Path, scenario_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """The summary kept in the baseline file ``path``; ``TranscriptError`` (one line,
    FILE:LINE:COL) if it is not the baseline of ``scenario_id`` with ``params``."""
    text, entry = parse(path)
    expected = {"id": scenario_id, "params": params}
    if not isinstance(entry, dict) or entry.get("schema") != BASELINE_SCHEMA:
        problem = f"$: not a baseline (no \"schema\": \"{BASELINE_SCHEMA}\")"
    elif entry.get("scenario") != expected:
        problem = (f"$.scenario: the baseline of {_canonical(entry.get('scenario'))}, not of "
                   f"{_canonical(expected)}")
    elif not isinstance(entry.get("summary"), dict):
        problem = "$.summary: not an object"
    else:
        stored: dict[str, Any] = entry["summary"]
        return stored
    raise TranscriptError(located(path, text, [problem])[:1])


def compare_baseline(directory: Path, scenario_id: str, params: dict[str, Any],
                     document: dict[str, Any],
                     ignore: list[str] | tuple[str, ...] = ()) -> list[Difference]:
    """How the valid transcript ``document`` differs from the baseline of ``scenario_id``
    with ``params``; a missing baseline is one difference that says so. Raises
    ``TranscriptError`` (one line, file:line) for a malformed baseline file."""
    path = directory / baseline_name(scenario_id, params)
    if not path.is_file():
        return [Difference("baseline", None, str(path),
                           f"no baseline for {scenario_id} {_canonical(params)} (expected "
                           f"{path}); record one with --save-baseline")]
    return compare(_stored(path, scenario_id, params), summary(normalise(document)), ignore)
