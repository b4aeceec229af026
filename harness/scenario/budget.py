"""A run's budget as the engine consults it: the time left for the whole run (every wait is
cut to it), the datagrams the harness may still send, and the pace its own sends keep
(``rate`` datagrams per second). A smoke scenario against production stays inside it."""

from __future__ import annotations

from harness.scenario.model import Budget


class BudgetExceeded(Exception):
    """The scenario asked the harness to send more than its budget allows."""


class BudgetMeter:
    def __init__(self, budget: Budget, start: float) -> None:
        self.budget = budget
        self.deadline = start + budget.timeout
        self._next_send = start

    def time_left(self, now: float) -> float:
        return max(0.0, self.deadline - now)

    def wait(self, seconds: float, now: float) -> tuple[float, bool]:
        """How long a wait of ``seconds`` may last, and whether the budget cut it short."""
        left = self.time_left(now)
        return (seconds, False) if seconds <= left else (left, True)

    def check_sent(self, datagrams: int) -> None:
        """Raise BudgetExceeded once the harness has sent more than the budget allows."""
        if datagrams > self.budget.datagrams:
            raise BudgetExceeded(f"the harness sent {datagrams} datagrams, over the budget of "
                                 f"{self.budget.datagrams}: raise budget.datagrams or send less")

    def pace(self, datagrams: int, now: float) -> float:
        """Seconds to wait before sending ``datagrams`` more, so the harness's own sends
        keep to ``rate``; 0 without a rate."""
        if self.budget.rate is None:
            return 0.0
        delay = max(0.0, self._next_send - now)
        self._next_send = max(now, self._next_send) + datagrams / self.budget.rate
        return delay
