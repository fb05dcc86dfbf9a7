"""Steps on a pool of workers as :func:`kd_core.engine.local.flow` hands them out: the runners of the Ray jobs.

:class:`PoolSteps` runs each step it is given on a free :class:`~cluster.scheduler.WorkerPool`
worker, the node's cores shared among the steps running at once (a step running alone gets
all of them), and takes a finished step's stored result instead of running it again
(:func:`~kd_core.engine.execute.stored_result`: a corrupt one is named and the step runs
again). A train step with ``workers > 1`` waits until no other step runs, then has the whole
pool's resources on Ray Train (:mod:`cluster.data_parallel`). Every start and finish is
recorded (:attr:`PoolSteps.events`, monotonic seconds) and heard by ``on_start``/``on_done``.

:class:`JobSteps` adds what a job keeps around each step: its MLflow child run (opened at
the start, closed with the step's metrics and logged model at its end) and the progress
lines (:mod:`cluster.progress`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import ray

from cluster.progress import StepProgress
from cluster.scheduler import WorkerPool
from kd_core.engine.execute import stored_result
from kd_core.engine.steps import Result, Step, TrainStep
from kd_core.io.run_store import RunStore

if TYPE_CHECKING:
    from cluster.tracking import RunRef
    from kd_core.engine.workspace import Workspace


class StepRecords(Protocol):
    """What :class:`JobSteps` uses of its job (:class:`cluster.job.JobRuntime`)."""

    pool: WorkerPool | None
    store: RunStore
    run_dir: Path
    progress: StepProgress
    state: Any  # cluster.job_options.JobState: ``state.steps[name]["finished"]``
    reused_steps: list[str]
    train_steps: dict[str, TrainStep]

    def step_run(self, step: Step, ws: Workspace) -> RunRef: ...

    def finish_step(self, step: Step, run: RunRef, result: Result, ws: Workspace) -> None: ...


def data_parallel(step: Step) -> bool:
    """Whether ``step`` trains on Ray Train (more than one worker)."""
    return isinstance(step, TrainStep) and step.workers > 1


class PoolSteps:
    """A :class:`~kd_core.engine.local.Runner` on ``pool`` (module doc)."""

    def __init__(self, pool: WorkerPool, ws: Workspace, ws_ref: ray.ObjectRef, storage_dir: str = "") -> None:
        self.pool = pool
        self.ws = ws
        self.ws_ref = ws_ref
        self.storage_dir = storage_dir  # where Ray Train keeps a data-parallel step's records
        self.running: dict[ray.ObjectRef, Step] = {}
        self.finished: list[tuple[Step, Result]] = []  # finished without the pool (data-parallel steps)
        #: ``(event, step, seconds)`` for every ``"start"`` and ``"done"``, seconds on the monotonic clock.
        self.events: list[tuple[str, str, float]] = []

    def reuse(self, step: Step) -> Result | None:
        return stored_result(step, self.ws)

    def can_start(self, step: Step, starting: Sequence[Step]) -> bool:
        if data_parallel(step):
            return not self.running and not starting and not self.finished
        return not any(data_parallel(s) for s in starting) and self.pool.idle() > len(starting)

    def start(self, steps: Sequence[Step], stages: Sequence[int | None]) -> None:
        threads = self.pool.threads(len(self.running) + len(steps))
        for step, stage in zip(steps, stages):
            run = self.opened(step)
            self.events.append(("start", step.name, time.monotonic()))
            if data_parallel(step):
                from cluster.data_parallel import train_on_ray_train  # Ray Train and torch: only for such a step

                assert isinstance(step, TrainStep)
                self.on_start(step, stage, f"Ray Train, {step.workers} workers")
                with self.pool.paused():  # the Ray Train group gets the workers' CPUs (and GPUs)
                    result = train_on_ray_train(step, self.ws, self.ws_ref, run, self.storage_dir)
                self.finished.append((step, result))
                continue
            ref, place = self.pool.submit(lambda worker, s=step, r=run: worker.run.remote(s, self.ws_ref, r, threads))
            self.running[ref] = step
            self.on_start(step, stage, place)

    def wait(self) -> list[tuple[Step, Result]]:
        finished, self.finished = self.finished, []
        if not finished:
            finished = [(self.running.pop(ref), result) for ref, result in self.pool.wait()]
        for step, result in finished:
            self.events.append(("done", step.name, time.monotonic()))
            self.on_done(step, result)
        return finished

    def opened(self, step: Step) -> RunRef | None:
        """The MLflow run a step's training metrics go to (none here)."""
        return None

    def on_start(self, step: Step, stage: int | None, place: str) -> None:
        """Step ``step`` of ``stage`` started on ``place``."""

    def on_done(self, step: Step, result: Result) -> None:
        """Step ``step`` finished with ``result``."""


class JobSteps(PoolSteps):
    """:class:`PoolSteps` for a job: child runs, the job's state and progress lines (module doc)."""

    def __init__(self, job: StepRecords, ws: Workspace, ws_ref: ray.ObjectRef) -> None:
        assert job.pool is not None
        super().__init__(job.pool, ws, ws_ref, job.store.location_of(job.run_dir / "ray_train"))
        self.job = job
        self.runs: dict[str, RunRef] = {}

    def reuse(self, step: Step) -> Result | None:
        if isinstance(step, TrainStep):
            self.job.train_steps[step.name] = step
        result = super().reuse(step)
        if result is not None:
            self.job.reused_steps.append(step.name)
            self.job.progress.reused(step.name)
            if not self.job.state.steps.get(step.name, {"finished": True})["finished"]:
                self.job.finish_step(step, self.job.step_run(step, self.ws), result, self.ws)  # done as the driver died
        return result

    def opened(self, step: Step) -> RunRef:
        self.runs[step.name] = self.job.step_run(step, self.ws)
        return self.runs[step.name]

    def on_start(self, step: Step, stage: int | None, place: str) -> None:
        self.job.progress.step_started(step.name, stage, place)

    def on_done(self, step: Step, result: Result) -> None:
        self.job.progress.step_finished(step.name)
        self.job.finish_step(step, self.runs.pop(step.name), result, self.ws)
