"""The teacher stage of the IMM sweep, which runs on IMM's own pipeline.

The iteration-0 domain models train on actors and each reads its own data once;
``--knowledge-from`` an IMM job reuses its iteration 0. (Engine recipes need none of this:
:mod:`tuning.recipe_sweep` runs any recipe's teacher steps.)
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any


from cluster.imm import Coordinator, JobState
from cluster.tracking import RunRef, Tracker
from kd_core.errors import ConfigError
from kd_core.imm import CurrentModel, PlanResult, RunLayout, initial_plans

if TYPE_CHECKING:
    from tuning.sweep import Prepared


def reused_imm_teachers(run_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Iteration-0 models, F1 and knowledge of an earlier IMM job in ``run_dir``."""
    layout = RunLayout(run_dir.resolve())
    initial = {}
    for name in names:
        result_path = layout.result_dir("imm", name, 0) / "result.json"
        knowledge = layout.knowledge_path(name, 0)
        if not result_path.exists() or not knowledge.exists():
            raise ConfigError(str(run_dir), f"domain {name!r}",
                              "no iteration-0 model and knowledge for this domain (run jobs/imm.py there first)")
        result = PlanResult.read(result_path)
        initial[name] = {"model_dir": str(result.model_dir), "f1": result.target_f1, "knowledge": str(knowledge)}
    return initial


def imm_teachers(p: Prepared, run_dir: Path, tracker: Tracker, parent: RunRef) -> tuple[dict[str, dict[str, Any]], int]:
    """IMM's iteration 0 (every theta_i^(0) and its knowledge), computed once or reused."""
    names = list(p.domains)
    if p.reused_initial is not None:
        return p.reused_initial, 0
    teachers = run_dir / "teachers"
    job = replace(p.base, run_dir=str(teachers), tracking_uri=tracker.tracking_uri)
    teachers.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run_dir / "tokenizer", teachers / "tokenizer")
    coordinator = Coordinator(job, p.domains, p.similarity, teachers, JobState(config=asdict(job)), tracker, parent)
    try:
        results = coordinator.run_plans(initial_plans(coordinator.layout, job.settings, names, job.model), "initial")
        current = {r.domain: CurrentModel(0, str(r.model_dir), r.target_f1) for r in results}
        coordinator.write_knowledge(current, 0)
    finally:
        coordinator.shutdown()
    return {n: {"model_dir": current[n].model_dir, "f1": current[n].f1,
                "knowledge": str(coordinator.layout.knowledge_path(n, 0))} for n in names}, 1
