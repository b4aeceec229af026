"""Reading transcript files and saying what is wrong with them: a file that is not JSON, or
that breaks ``harness/schemas/transcript.schema.json``, is told one line per problem as
``FILE:LINE:COL: what`` (the line of the offending value, found again by a YAML composer that
keeps node marks; the JSON path says which value). Nothing here raises anything but
``TranscriptError`` for a bad file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from harness.schemas import schema_errors

MAX_BYTES = 256 << 20  # a transcript larger than this is refused rather than read
LOCATE_CHARS = 16 << 20  # errors in larger files name their JSON path without a line


class TranscriptError(Exception):
    """A file that cannot be used: ``lines`` says why, one ``FILE:LINE:COL: what`` each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def validate(document: Any) -> list[str]:
    """Every way ``document`` breaks the transcript schema, as ``JSON path: what``."""
    return schema_errors("transcript", document)


def parse(path: Path) -> tuple[str, Any]:
    """The text of ``path`` and the JSON value it holds; ``TranscriptError`` if it cannot be
    read or is not JSON."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise TranscriptError([f"{path}: cannot read it: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_BYTES:
        raise TranscriptError([f"{path}: larger than {MAX_BYTES >> 20} MiB; not a transcript"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TranscriptError([f"{path}:{line}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        return text, json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise TranscriptError([f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}"]
                              ) from None
    except RecursionError:
        raise TranscriptError([f"{path}: nested too deeply to be a transcript"]) from None
    except ValueError as exc:  # a NaN or Infinity
        raise TranscriptError([f"{path}: not JSON: {exc}"]) from None


def _not_json(name: str) -> None:
    """Python reads NaN and Infinity; JSON has no such numbers."""
    raise ValueError(f"{name} is not a JSON number")


def file_errors(path: Path) -> list[str]:
    """What is wrong with the transcript file at ``path``, one ``FILE:LINE:COL: what`` line
    per problem; empty when it is a valid transcript."""
    try:
        text, document = parse(path)
    except TranscriptError as exc:
        return exc.lines
    return located(path, text, validate(document))


def load(path: Path) -> dict[str, Any]:
    """The valid transcript in ``path``; ``TranscriptError`` (every problem, one line each)
    if it is unreadable, not JSON or not a transcript."""
    text, document = parse(path)
    errors = validate(document)
    if errors:
        raise TranscriptError(located(path, text, errors))
    assert isinstance(document, dict)  # the schema's root is an object
    return document


_PATH = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\['((?:[^'\\]|\\.)*)'\]|\[(\d+)\]")


def located(path: Path, text: str, errors: list[str]) -> list[str]:
    """``errors`` (``$.json.path: what``) as ``FILE:LINE:COL: $.json.path: what``, at the
    value the path names; ``FILE: ...`` when its place cannot be found (or the file is too
    large to read again for it)."""
    root = _compose(text) if errors and len(text) <= LOCATE_CHARS else None
    out = []
    for error in errors:
        json_path = error.split(": ", 1)[0]
        node = _node_at(root, json_path)
        if node is None:
            out.append(f"{path}: {error}")
        else:
            mark = node.start_mark
            out.append(f"{path}:{mark.line + 1}:{mark.column + 1}: {error}")
    return out


def _compose(text: str) -> yaml.Node | None:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.compose(text, Loader=loader)
    except (yaml.YAMLError, RecursionError):  # valid JSON that YAML 1.1 reads otherwise
        return None


def _node_at(root: yaml.Node | None, json_path: str) -> yaml.Node | None:
    if root is None or not json_path.startswith("$"):
        return None
    node: yaml.Node = root
    for name, quoted, index in _PATH.findall(json_path[1:]):
        if index and isinstance(node, yaml.SequenceNode):
            items = node.value
            if int(index) >= len(items):
                return None
            node = items[int(index)]
        elif not index and isinstance(node, yaml.MappingNode):
            key = name or re.sub(r"\\(.)", r"\1", quoted)
            found = [v for k, v in node.value if isinstance(k, yaml.ScalarNode)
                     and k.value == key]
            if not found:
                return None
            node = found[0]
        else:
            return None
    return node
