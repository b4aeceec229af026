"""How ``expect`` reads transcript events: dotted paths into an event (``[*]`` fans out
over a list, ``[N]`` takes one element), matchers (a value by equality, or ``in``,
``gte``, ``lte``, ``regex``, ``absent``), and short descriptions of what was expected."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

Event = dict[str, Any]
MISSING = object()
_PART = re.compile(r"([A-Za-z0-9_]+)((?:\[(?:\*|\d+)\])*)")
_INDEX = re.compile(r"\[(\*|\d+)\]")


def values_at(event: Any, path: str) -> list[Any]:
    """Every value ``path`` reaches in ``event`` (none when it reaches nothing)."""
    found = [event]
    for part in path.split("."):
        match = _PART.fullmatch(part)
        if match is None:
            return []
        found = [v[match[1]] for v in found if isinstance(v, dict) and match[1] in v]
        for index in _INDEX.findall(match[2]):
            lists = [v for v in found if isinstance(v, list)]
            found = ([item for v in lists for item in v] if index == "*"
                     else [v[int(index)] for v in lists if int(index) < len(v)])
    return found


def value_at(event: Any, path: str) -> Any:
    """What ``save`` keeps: the one value at ``path``, the list of them for a ``[*]``
    path, or None when there is none."""
    found = values_at(event, path)
    if "[*]" in path:
        return found
    return found[0] if found else None


def _holds(matcher: Any, values: list[Any]) -> bool:
    if not isinstance(matcher, dict):
        return matcher in values
    if matcher.get("absent"):
        return not values
    tests: list[Callable[[Any], bool]] = []
    if "in" in matcher:
        tests.append(lambda v: v in matcher["in"])
    if "gte" in matcher:
        tests.append(lambda v: _number(v) and v >= matcher["gte"])
    if "lte" in matcher:
        tests.append(lambda v: _number(v) and v <= matcher["lte"])
    if "regex" in matcher:
        tests.append(lambda v: isinstance(v, str) and re.search(matcher["regex"], v) is not None)
    return any(all(test(v) for test in tests) for v in values)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def matches(event: Event, name: str, where: Mapping[str, Any]) -> bool:
    """Whether ``event`` is a ``name`` event and every ``where`` matcher holds for it."""
    return event["name"] == name and all(_holds(m, values_at(event, p))
                                         for p, m in where.items())


def describe(name: str, where: Mapping[str, Any]) -> str:
    """``quic:packet_received where data.header.packet_type = "initial"``."""
    if not where:
        return name
    shown = ", ".join(f"{path} {_shown(matcher)}" for path, matcher in where.items())
    return f"{name} where {shown}"


def _shown(matcher: Any) -> str:
    if not isinstance(matcher, dict):
        return f"= {json.dumps(matcher)}"
    return " and ".join(f"{op} {json.dumps(value)}" for op, value in matcher.items())
