"""Structured logs on stderr, as text or one JSON object per line. Quiet by default (warnings
and errors only); ``VELOCITY_LOG`` sets levels, for everything or per module:
``VELOCITY_LOG=info`` or ``VELOCITY_LOG=warning,velocity.aio.server=debug``. A text line is
``TIME LEVEL LOGGER: MESSAGE key=value...``; whatever a peer put in a value (a close reason,
a path) cannot forge a line or a field: unprintable characters and backslashes are escaped,
and a value with a space, ``=`` or ``"`` in it is quoted."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from velocity.core.errors import UsageError

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
FORMATS = ("text", "json")
_NEEDS_QUOTES = re.compile(r'[ ="]')


def fields(**values: Any) -> dict[str, Any]:
    """The ``extra`` argument that attaches ``values`` to a record as structured fields."""
    return {"fields": values}


def raised_at(fault: BaseException) -> str:
    """Where ``fault`` was raised, for a log field: ``file.py:line function``."""
    frames = traceback.extract_tb(fault.__traceback__)
    return "?" if not frames else (
        f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}")


def _escaped(text: str) -> str:
    """``text`` with backslashes and unprintable characters (line breaks, terminal escapes,
    bidirectional overrides) written as Python escapes: ``\\n``, ``\\x1b``, ``\\u202e``."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode()
                   for c in text)


def _token(value: Any) -> str:
    """``value`` as one ``key=value`` value of a text line."""
    text = _escaped(str(value))
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + text.replace('"', '\\"') + '"'


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        values: dict[str, Any] = getattr(record, "fields", {})
        when = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        if self.as_json:
            return json.dumps({"ts": when, "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage(), **values},
                              default=str)
        extra = "".join(f" {key}={_token(value)}" for key, value in values.items())
        return (f"{when} {record.levelname.lower():7} {record.name}: "
                f"{_escaped(record.getMessage())}{extra}")


def parse_levels(spec: str) -> dict[str, int]:
    """``VELOCITY_LOG`` as {logger name ("" for all of velocity): level}."""
    levels: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, level = item.rpartition("=")
        if level.lower() not in LEVELS or (name and not name.startswith("velocity")):
            raise UsageError(f"VELOCITY_LOG item {item!r} is not LEVEL or velocity.MODULE=LEVEL "
                             f"(levels: {', '.join(LEVELS)})")
        levels[name] = LEVELS[level.lower()]
    return levels


def configure(log_format: str, spec: str = "") -> None:
    """Send velocity's records to stderr in ``log_format`` at the levels ``spec`` names."""
    levels = parse_levels(spec)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json=log_format == "json"))
    root = logging.getLogger("velocity")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(levels.pop("", logging.WARNING))
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
