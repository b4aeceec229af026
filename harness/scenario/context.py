"""The state one scenario run's steps share (``Run``: the target, connections, saved
values, the budget, the harness's own events) and the transcript documents it leaves;
``StepFailed``, how a step says its check did not hold."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from harness.scenario.budget import BudgetMeter
from harness.scenario.model import Scenario
from harness.targets import Target
from velocity import __version__
from velocity.core.trace import Transcript

Document = dict[str, Any]


class StepFailed(Exception):
    """A step's check did not hold: the verdict is FAIL."""

    def __init__(self, reason: str, *, expected: str | None = None, actual: str | None = None,
                 event: dict[str, Any] | None = None,
                 requirements: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expected = expected
        self.actual = actual
        self.event = event
        self.requirements = requirements


@dataclass
class Run:
    """The state one run's steps share."""

    scenario: Scenario
    target: Target
    seed: int | str
    strict: bool
    budget: BudgetMeter
    loop: asyncio.AbstractEventLoop
    saved: dict[str, Any] = field(default_factory=dict)
    harness: Transcript = field(default_factory=Transcript)  # the harness: events
    warnings: list[str] = field(default_factory=list)  # relaxed SHOULD-level checks

    def now(self) -> float:
        return self.loop.time()

    def note(self, name: str, data: dict[str, Any]) -> None:
        self.harness.event(self.now(), f"harness:{name}", data)

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` within the time budget; whether the budget cut it short."""
        allowed, cut = self.budget.wait(seconds, self.now())
        await asyncio.sleep(allowed)
        return cut

    def namespace(self) -> dict[str, Any]:
        """What an ``assert`` reads: the aggregates, then the saved values."""
        return {**aggregates(self), **self.saved}

    def documents(self) -> list[tuple[str, Document]]:
        role = "client" if self.scenario.role == "client" else "server"
        header = {"producer": {"name": "velocity-harness", "version": __version__},
                  "vantage_point": role, "target": self.target.label,
                  "scenario": {"id": self.scenario.id, "params": dict(self.scenario.params),
                               "seed": self.seed}}
        return [("main", self.harness.document(**header))]

    async def close(self) -> None:
        """Close what the run opened."""


def aggregates(run: Run) -> dict[str, Any]:
    """The transcript aggregates ``assert`` expressions may read."""
    return {"amplification_ratio": 0.0, "bytes_per_flight": [], "flights": 0,
            "packets_per_space": {}, "datagrams_sent": 0, "datagrams_received": 0,
            "handshake_ms": None, "close_code": None}
