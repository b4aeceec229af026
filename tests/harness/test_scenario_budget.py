"""The run budget the engine consults, on a virtual clock: waits cut to the time left,
the harness's own sends paced to the rate, and more datagrams than allowed refused."""

from __future__ import annotations

import pytest

from harness.scenario.budget import BudgetExceeded, BudgetMeter
from harness.scenario.model import Budget


def test_a_wait_is_cut_to_the_time_left() -> None:
    meter = BudgetMeter(Budget(timeout=5), start=100.0)
    assert meter.wait(2.0, now=101.0) == (2.0, False)
    assert meter.wait(2.0, now=104.5) == (0.5, True)
    assert meter.wait(1.0, now=200.0) == (0.0, True)


def test_sends_keep_to_the_rate() -> None:
    meter = BudgetMeter(Budget(rate=10), start=0.0)
    delays = [meter.pace(1, now=0.0) for _ in range(3)]
    assert delays == pytest.approx([0.0, 0.1, 0.2])
    assert meter.pace(1, now=5.0) == 0.0  # idle time is not saved up
    assert BudgetMeter(Budget(), start=0.0).pace(100, now=0.0) == 0.0


def test_more_datagrams_than_the_budget_are_refused() -> None:
    meter = BudgetMeter(Budget(datagrams=3), start=0.0)
    meter.check_sent(3)
    with pytest.raises(BudgetExceeded, match="sent 4 datagrams, over the budget of 3"):
        meter.check_sent(4)
