"""The requirements of docs/spec/velocity-1.md as the harness quotes them: each
``- **VEL-AREA-NNN [LEVEL]** text`` bullet (with its continuation lines) becomes a
``Requirement``, so a scenario's ``spec`` list can be checked and a failure can quote it."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

SPEC_FILE = Path(__file__).resolve().parents[2] / "docs" / "spec" / "velocity-1.md"
_BULLET = re.compile(r"^- \*\*(VEL-[A-Z]+-\d{3}) \[(MUST|SHOULD|MAY)\]\*\* (.*)$")


@dataclass(frozen=True)
class Requirement:
    id: str
    level: str  # MUST, SHOULD or MAY
    text: str

    @property
    def strict_only(self) -> bool:
        """Whether a check of it fails only under ``--strict`` (SHOULD and MAY levels)."""
        return self.level != "MUST"

    @property
    def observable(self) -> bool:
        """False for the requirements the spec leaves to unit tests (no peer can see them)."""
        return "not observable on the wire" not in self.text


@functools.cache
def requirements(path: Path = SPEC_FILE) -> dict[str, Requirement]:
    """Every requirement of the spec at ``path``, by ID. Raises OSError if it is missing."""
    found: dict[str, Requirement] = {}
    current: list[str] | None = None
    head: tuple[str, str] | None = None
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        match = _BULLET.match(line)
        if current is not None and head is not None and (match or not line.startswith("  ")):
            found[head[0]] = Requirement(head[0], head[1], " ".join(current))
            current = head = None
        if match:
            head, current = (match[1], match[2]), [match[3].strip()]
        elif current is not None:
            current.append(line.strip())
    return found
