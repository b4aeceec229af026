"""The harness's JSON Schemas (draft 2020-12) and the one function that checks a document
against one of them, naming each error by its JSON path."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS_DIR = Path(__file__).resolve().parent
MESSAGE_CHARS = 160  # jsonschema quotes the offending value whole; a line stays readable


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """The validator of ``<name>.schema.json``, for callers that place each error themselves."""
    schema = json.loads((SCHEMAS_DIR / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _one_line(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 3] + "..."


def _position(error: jsonschema.ValidationError) -> list[tuple[int, str]]:
    """Document order: list indexes compared as numbers."""
    return [(p, "") if isinstance(p, int) else (-1, p) for p in error.absolute_path]


def schema_errors(name: str, document: Any) -> list[str]:
    """Every way ``document`` breaks ``<name>.schema.json``, as ``$.json.path: message``
    (one line each, in document order)."""
    errors = sorted(validator(name).iter_errors(document), key=_position)
    return [f"{e.json_path}: {_one_line(e.message)}" for e in errors]
