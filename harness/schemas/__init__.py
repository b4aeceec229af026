"""The harness's JSON Schemas (draft 2020-12) and the one function that checks a document
against one of them, naming each error by its JSON path."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS_DIR = Path(__file__).resolve().parent


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """The validator of ``<name>.schema.json``, for callers that place each error themselves."""
    schema = json.loads((SCHEMAS_DIR / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def schema_errors(name: str, document: Any) -> list[str]:
    """Every way ``document`` breaks ``<name>.schema.json``, as ``path: message``."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator(name).iter_errors(document)]
