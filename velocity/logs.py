"""Structured logs on stderr, as text or one JSON object per line. Quiet by default (warnings
and errors only); ``VELOCITY_LOG`` sets levels, for everything or per module:
``VELOCITY_LOG=info`` or ``VELOCITY_LOG=warning,velocity.aio.server=debug``."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from velocity.core.errors import UsageError

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
FORMATS = ("text", "json")


def fields(**values: Any) -> dict[str, Any]:
    """The ``extra`` argument that attaches ``values`` to a record as structured fields."""
    return {"fields": values}


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
        extra = "".join(f" {key}={value}" for key, value in values.items())
        return f"{when} {record.levelname.lower():7} {record.name}: {record.getMessage()}{extra}"


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
