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


def runner() -> asyncio.Runner:
    """An event-loop runner on uvloop if installed, else on asyncio's loop; it keeps its loop
    (and the connections on it) between ``run`` calls until closed."""
    if loop_name() == "uvloop":
        uvloop = importlib.import_module("uvloop")
        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop if installed, else on asyncio's loop."""
    with runner() as loop_runner:
        return loop_runner.run(main)
