"""The networked side of Velocity: asyncio endpoints, and the only place that reads the
clock and the OS's randomness. ``run`` is the entry point for programs: it uses uvloop when
it is installed and asyncio's own loop otherwise."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    """"uvloop" when uvloop is importable, else "asyncio"."""
    try:
        importlib.import_module("uvloop")
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop if installed, else on asyncio's loop."""
    if loop_name() == "uvloop":
        uvloop = importlib.import_module("uvloop")
        result: T = uvloop.run(main)
        return result
    return asyncio.run(main)
