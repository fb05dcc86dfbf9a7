"""Driving a recipe: start every step whose inputs are done, as workers free up, until the recipe is done.

A **recipe** is a function from the results finished so far (``{step name: result}``) to the
steps to run next (an empty list when the method is done). Because every step stores its
result, re-running a recipe after a crash re-plans the same steps, finished ones return at
once, and the job ends as an uninterrupted one would.

Most recipes are made of **stages** (:class:`Staged`): steps planned together, a later stage
possibly planned from earlier results (IMM's next iteration reads which model each domain
kept). A stage is a unit of planning, not a barrier: :func:`flow` asks the recipe for every
step it can plan now (:meth:`Staged.frontier`) and starts each one as soon as the steps it
reads have finished (:func:`~kd_core.engine.steps.step_inputs`) and the runner has room, the
earliest planned first. IMM's ``theta_i`` starts when ``phi_i`` is done, not when the slowest
``phi_j`` is; A2D's knowledge of member 0 is read while member 1 still trains.

``until`` limits a drive to the steps it accepts: a sweep runs a recipe's teacher steps once
(``until=is_teacher``) and then every trial continues from those results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from kd_core.engine.steps import Result, Step, step_inputs

if TYPE_CHECKING:
    from kd_core.engine.workspace import Workspace

Recipe = Callable[[Mapping[str, Result]], list[Step]]
#: Runs steps one call at a time, in the order given (:func:`drive`).
StepFunction = Callable[[Sequence[Step]], list[Result]]


class NotYet(Exception):
    """A recipe's planning read the result of a step that has not finished: nothing after it can be planned yet."""


class Finished(Mapping[str, Result]):
    """The finished results as a recipe's planning sees them: reading a missing one raises :class:`NotYet`
    (``in`` answers as usual)."""

    def __init__(self, results: Mapping[str, Result]) -> None:
        self.results = results

    def __getitem__(self, name: str) -> Result:
        if name not in self.results:
            raise NotYet(name)
        return self.results[name]

    def __contains__(self, name: object) -> bool:
        return name in self.results

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)


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

    def frontier(self, done: Mapping[str, Result]) -> list[tuple[int, Step]]:
        """Every unfinished step plannable from ``done``, with its stage's number (counted as ``planned`` is),
        in planning order: the stages up to the first whose planning reads a result not in ``done``."""
        planned: list[tuple[int, Step]] = []
        seen: set[str] = set()
        number = 0
        try:
            for stage in self.stages(Finished(done)):
                names = [step.name for step in stage]
                if set(names) - seen:
                    number += 1
                planned += [(number, step) for step in stage if step.name not in done and step.name not in seen]
                seen |= set(names)
        except NotYet:
            pass
        return planned


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


class Runner(Protocol):
    """Where :func:`flow` runs steps: a pool of workers (:mod:`cluster.job_steps`) or this process."""

    def reuse(self, step: Step) -> Result | None:
        """``step``'s stored result if it finished before (a resumed run), else ``None``; asked once per step."""

    def can_start(self, step: Step, starting: Sequence[Step]) -> bool:
        """Whether ``step`` can start now, besides the running steps and ``starting`` (about to start with it)."""

    def start(self, steps: Sequence[Step], stages: Sequence[int | None]) -> None:
        """Start ``steps`` (of the recipe's stages ``stages``) at once."""

    def wait(self) -> list[tuple[Step, Result]]:
        """Block until at least one started step has finished; those steps and their results."""


def planned_steps(recipe: Recipe, results: Mapping[str, Result]) -> list[tuple[int | None, Step]]:
    """The unfinished steps ``recipe`` plans from ``results``: a :class:`Staged` recipe's frontier, or the steps
    any other callable returns (stage unknown); a step planned again after it finished is a recipe bug."""
    if isinstance(recipe, Staged):
        return list(recipe.frontier(results))
    steps = recipe(results)
    repeated = [step.name for step in steps if step.name in results]
    if repeated:
        raise RuntimeError(f"recipe planned finished step {repeated[0]!r} again")
    return [(None, step) for step in steps]


def flow(recipe: Recipe, runner: Runner, done: Mapping[str, Result] | None = None,
         until: Callable[[Step], bool] | None = None) -> dict[str, Result]:
    """Run ``recipe`` to its end on ``runner`` (module doc); return every result by step name.

    Each round: plan, take the stored result of every ready step that has one (which may let
    more be planned), start the ready steps in planning order while the runner can (the first
    that cannot start ends the round, so a step that needs the whole pool is not overtaken),
    then wait for a step to finish. A step waits for the inputs this drive plans or runs; one it
    does not (a result from another drive, or none: the step's executor names what is missing)
    does not hold it back. With ``until``, steps it refuses are never started and the drive ends
    when none it accepts can run.
    """
    results: dict[str, Result] = dict(done or {})
    running: dict[str, Step] = {}
    checked: set[str] = set()
    while True:
        every = [(stage, step) for stage, step in planned_steps(recipe, results) if step.name not in running]
        coming = {step.name for _, step in every} | set(running)  # inputs worth waiting for
        planned = [(stage, step) for stage, step in every if until is None or until(step)]
        ready = [(stage, step) for stage, step in planned if not coming.intersection(step_inputs(step))]
        for _, step in ready:  # a resumed run's finished steps: no worker needed
            if step.name not in checked:
                checked.add(step.name)
                if (stored := runner.reuse(step)) is not None:
                    results[step.name] = stored
        if any(step.name in results for _, step in ready):
            continue  # their results may let the recipe plan further
        starting: list[tuple[int | None, Step]] = []
        for stage, step in ready:
            if not runner.can_start(step, [s for _, s in starting]):
                break
            starting.append((stage, step))
        if starting:
            runner.start([step for _, step in starting], [stage for stage, _ in starting])
            running |= {step.name: step for _, step in starting}
        if not running:
            return results
        for step, result in runner.wait():
            del running[step.name]
            results[step.name] = result


class InTurn:
    """A :class:`Runner` that runs one step at a time through ``run`` (a function of a list of steps)."""

    def __init__(self, run: StepFunction) -> None:
        self.run = run
        self.finished: list[tuple[Step, Result]] = []

    def reuse(self, step: Step) -> Result | None:
        return None  # ``run`` decides (the executor reads a stored result itself)

    def can_start(self, step: Step, starting: Sequence[Step]) -> bool:
        return not starting and not self.finished

    def start(self, steps: Sequence[Step], stages: Sequence[int | None]) -> None:
        self.finished += list(zip(steps, self.run(steps)))

    def wait(self) -> list[tuple[Step, Result]]:
        finished, self.finished = self.finished, []
        return finished


def drive(recipe: Recipe, run: StepFunction, done: Mapping[str, Result] | None = None,
          until: Callable[[Step], bool] | None = None) -> dict[str, Result]:
    """:func:`flow` one step at a time: ``run([step])`` for each step, in planning order as inputs allow."""
    return flow(recipe, InTurn(run), done, until)


def run_locally(recipe: Recipe, ws: Workspace, done: Mapping[str, Result] | None = None,
                **kwargs: Any) -> dict[str, Result]:
    """:func:`drive` with every step executed here, one after another, after the results ``done`` (the steps a
    recipe's steps may read that another drive ran); ``kwargs`` go to :func:`execute` (imported here: planning a
    recipe needs no training code)."""
    from kd_core.engine.execute import execute

    return drive(recipe, lambda steps: [execute(step, ws, **kwargs) for step in steps], done)
