"""Driving a recipe: ask it for the next steps given the finished ones, run them, repeat.

A **recipe** is a function from the results finished so far (``{step name: result}``) to the
steps to run next (an empty list when the method is done). Steps returned together do not
depend on each other, so a runner may execute them at once (on Ray workers). Because every
step stores its result, re-running a recipe after a crash re-plans the same steps, finished
ones return at once, and the job ends as an uninterrupted one would.

``until`` stops the drive before the first step it rejects: a sweep runs a recipe's teacher
steps once (``until=is_teacher``) and then every trial continues from those results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kd_core.engine.execute import execute
from kd_core.engine.steps import Result, Step
from kd_core.engine.workspace import Workspace

Recipe = Callable[[Mapping[str, Result]], list[Step]]
Runner = Callable[[Sequence[Step]], list[Result]]


def staged(stages: Callable[[Mapping[str, Result]], Iterable[Sequence[Step]]]) -> Recipe:
    """A recipe from its stages: the unfinished steps of the first stage that has any.

    ``stages(done)`` yields the stages in order; a stage may be planned from the results of
    the stages before it (it is only asked for once those have finished).
    """

    def next_steps(done: Mapping[str, Result]) -> list[Step]:
        for stage in stages(done):
            pending = [step for step in stage if step.name not in done]
            if pending:
                return pending
        return []

    return next_steps


def is_teacher(step: Step) -> bool:
    """The steps a sweep shares between its trials."""
    return step.teacher


def drive(recipe: Recipe, runner: Runner, done: Mapping[str, Result] | None = None,
          until: Callable[[Step], bool] | None = None) -> dict[str, Result]:
    """Run ``recipe`` to its end (or while ``until`` accepts its next steps); return every result by step name."""
    results: dict[str, Result] = dict(done or {})
    while True:
        steps = recipe(results)
        if not steps:
            return results
        if until is not None and not all(until(step) for step in steps):
            return results
        repeated = [step.name for step in steps if step.name in results]
        if repeated:
            raise RuntimeError(f"recipe planned finished step {repeated[0]!r} again")
        for step, result in zip(steps, runner(steps)):
            results[step.name] = result


def run_locally(recipe: Recipe, ws: Workspace, **kwargs: Any) -> dict[str, Result]:
    """:func:`drive` with every step executed here, one after another (``kwargs`` go to :func:`execute`)."""
    return drive(recipe, lambda steps: [execute(step, ws, **kwargs) for step in steps])
