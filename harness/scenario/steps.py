"""The steps of the scenario language, one coroutine each, dispatched by ``STEPS`` (the
step's kind -> its runner). A runner reads its options from the ``Step``, acts through the
run's connections and raises ``StepFailed`` when its check does not hold."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from harness.scenario.context import Run, StepFailed
from harness.scenario.expr import ExpressionError, compile_expression
from harness.scenario.model import Step
from harness.scenario.verdict import ScenarioError

StepRunner = Callable[[Run, Step], Awaitable[None]]


async def wait(run: Run, step: Step) -> None:
    await run.sleep(float(step.options))


async def check(run: Run, step: Step) -> None:
    """``assert``: every expression holds over the saved values and the aggregates."""
    sources = [step.options] if isinstance(step.options, str) else list(step.options)
    namespace = run.namespace()
    for source in sources:
        expression = compile_expression(source)
        try:
            value = expression.evaluate(namespace)
        except ExpressionError as exc:
            raise ScenarioError(f"assert {exc}") from None
        run.note("check", {"assert": source, "holds": bool(value)})
        if not value:
            shown = ", ".join(f"{name} = {namespace[name]!r}" for name in expression.names
                              if name in namespace)
            raise StepFailed(f"assert {source!r} does not hold", expected=source,
                             actual=shown or repr(value))


STEPS: dict[str, StepRunner] = {"wait": wait, "assert": check}
