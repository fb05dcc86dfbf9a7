"""Sweeping any engine recipe (:data:`kd_core.methods.registry.METHODS`): teacher steps once, then the trials.

Nothing here knows a method. The recipe marks its teacher steps; the sweep drives the recipe
until its first non-teacher step on a pool of workers (once for all trials), or reads those
steps' results from an earlier job's run directory (``--knowledge-from``: their knowledge
tables are checked against this sweep's data through their manifests). Either way the results
name their models and tables absolutely (:func:`~kd_core.engine.workspace.absolute_result`),
since each trial writes them into a run directory of its own. Every trial then
continues the same recipe from those results (:func:`tuning.trials.recipe_trial`). A
searched setting that would change a teacher step is refused before any cluster work.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import ray

from cluster.job_steps import PoolSteps
from cluster.scheduler import WorkerPool
from cluster.tracking import RunRef, Tracker
from kd_core.engine.local import flow, is_teacher
from kd_core.engine.steps import Result
from kd_core.engine.workspace import Workspace, absolute_result
from kd_core.io.config_files import build_config, unknown_key
from kd_core.io.run_store import join
from kd_core.methods.registry import METHODS, MethodSpec
from tuning.spaces import Param


@dataclass
class RecipeSweep:
    """A validated recipe sweep: method, data, base settings, workspace, reused teacher results (if any)."""

    spec: MethodSpec
    data: Any
    settings: Any
    ws: Workspace
    reused: dict[str, Result] | None = None

    @property
    def horizon(self) -> int:
        return self.spec.horizon(self.settings)


def prepare_recipe_sweep(method: str, job: dict[str, Any], seed: int, space: dict[str, Param], run_dir: str,
                         knowledge_from: str | None) -> RecipeSweep:
    """Validate options, space and data (module doc); no cluster work."""
    spec = METHODS[method]
    data_fields = {f.name for f in fields(spec.data)}
    setting_fields = {f.name for f in fields(spec.settings)}
    unknown = sorted(set(job) - data_fields - setting_fields)
    if unknown:
        raise unknown_key("sweep.job", unknown[0], data_fields | setting_fields, of=f" of {method}")
    data = build_config(spec.data, {k: v for k, v in job.items() if k in data_fields}, {"seed": seed}, "sweep.job")
    own = {k: v for k, v in job.items() if k in setting_fields}
    settings = build_config(spec.settings, {**spec.sweep_defaults, **own}, {"seed": seed}, "sweep.job")
    ws = spec.workspace(data, settings, join(run_dir, "teachers"))
    for param in space.values():
        for value in param.values:
            spec.check_searchable(settings, ws, param.name, value)
        spec.check_changes_trials(settings, ws, param.name, param.values)
    reused = spec.reused_teachers(settings, ws, knowledge_from) if knowledge_from else None
    return RecipeSweep(spec, data, settings, ws, reused)


def run_teachers(sweep: RecipeSweep, tracker: Tracker, parent: RunRef) -> tuple[dict[str, Result], int]:
    """The teacher steps' results, computed once on workers (or reused); and the passes that took."""
    if sweep.reused is not None:
        return sweep.reused, 0
    plan = sweep.spec.teacher_plan(sweep.settings, sweep.ws)
    workers = max(1, min(len(plan), int(ray.cluster_resources().get("CPU", 1))))
    run = tracker.start_child(parent, "teachers", tags={"kd.role": "teacher", "kd.method": sweep.spec.name},
                              params={"steps": [s.name for s in plan]})
    pool = WorkerPool(workers)
    steps = PoolSteps(pool, sweep.ws, ray.put(sweep.ws), sweep.ws.store.location_of(sweep.ws.run_dir / "ray_train"))
    try:  # each teacher step as soon as the ones it reads are done
        results = flow(sweep.spec.recipe(sweep.settings, sweep.ws), steps, until=is_teacher)
    finally:
        pool.shutdown()
    tracker.log_metrics(run, {"teacher_passes": 1, **{f"{name}/dev_primary": r["primary"]
                                                      for name, r in results.items() if "primary" in r}})
    tracker.end_run(run)
    return {name: absolute_result(result, sweep.ws.store) for name, result in results.items()}, 1
