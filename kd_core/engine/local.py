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


class Staged:
    """A recipe made of stages (callable like any recipe) that may say how many stages it runs.

    ``stages(done)`` yields the stages in order; a stage may be planned from the results of
    the stages before it (it is only asked for once those have finished). A call returns the
    unfinished steps of the first stage that has any, so a stage whose steps all ran in an
    earlier stage is no stage of its own.

    ``planned``: the stages a run goes through (the runner is called once per stage, a resumed
    run's finished stages included), when the recipe knows it from its settings; ``at_most``:
    the run may stop before (e.g. IMM when no domain improved). ``None`` when it is not known.
    """

    def __init__(self, stages: Callable[[Mapping[str, Result]], Iterable[Sequence[Step]]],
                 planned: int | None = None, at_most: bool = False) -> None:
        self.stages = stages
        self.planned = planned
        self.at_most = at_most

    def __call__(self, done: Mapping[str, Result]) -> list[Step]:
        for stage in self.stages(done):
            pending = [step for step in stage if step.name not in done]
            if pending:
                return pending
        return []


def staged(stages: Callable[[Mapping[str, Result]], Iterable[Sequence[Step]]], planned: int | None = None,
           at_most: bool = False) -> Staged:
    """A recipe from its stages (:class:`Staged`)."""
    return Staged(stages, planned, at_most)


def in_order(*stages: Sequence[Step]) -> Staged:
    """A recipe of stages all planned up front (none depends on results): it knows how many it runs.

    An empty stage, or one whose steps all came in earlier stages, is skipped (and not counted).
    """
    seen: set[str] = set()
    planned = 0
    for stage in stages:
        names = {step.name for step in stage}
        if names - seen:
            planned += 1
        seen |= names
    return Staged(lambda done: stages, planned)


def stage_plan(recipe: Recipe) -> tuple[int | None, bool]:
    """``(planned stages or None, at_most)`` of a recipe (:class:`Staged`); ``(None, False)`` for any other."""
    return getattr(recipe, "planned", None), bool(getattr(recipe, "at_most", False))


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
