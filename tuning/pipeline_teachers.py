"""The teacher stages of the A2D and IMM sweeps, which run on those methods' own pipelines.

A2D: the teacher ensemble trains on actors and reads the training data once into
``<run dir>/knowledge.parquet``. IMM: the iteration-0 domain models train on actors and each
reads its own data once; ``--knowledge-from`` an IMM job reuses its iteration 0. (Engine
recipes need none of this: :mod:`tuning.recipe_sweep` runs any recipe's teacher steps.)
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from cluster.ensemble import Ensemble
from cluster.imm import Coordinator, JobState
from cluster.runtime import model_placement
from cluster.tracking import RunRef, Tracker
from kd_core.distill import merge_member_tables
from kd_core.errors import ConfigError
from kd_core.imm import CurrentModel, PlanResult, RunLayout, initial_plans
from kd_core.knowledge.table import write_knowledge
from kd_core.objectives import a2d_objective
from kd_core.predict import ensemble_outputs, scores_from_outputs

if TYPE_CHECKING:
    from tuning.sweep import Prepared


def a2d_teachers(p: Prepared, run_dir: Path, tracker: Tracker, parent: RunRef) -> tuple[Path, int]:
    """The ensemble's knowledge table (computed once, or reused) and how many teacher passes that took."""
    if p.config.knowledge_from:
        return Path(p.config.knowledge_from) / "knowledge.parquet", 0
    base, data = p.base, p.data
    seeds = [base.seed + 1000 * i for i in range(p.config.members)]
    run = tracker.start_child(parent, "teachers", tags={"kd.role": "teacher"},
                              params={"members": p.config.members, "model": base.teacher_model,
                                      "epochs": base.teacher_epochs})
    ensemble = Ensemble.create(base.teacher_model, seeds, run_dir / "tokenizer", run_dir / "members",
                               model_placement(len(seeds), len(seeds)), len(seeds))
    train_ref = ray.put(data.train_arrays)
    if base.teacher_epochs > 0:
        ensemble.train(train_ref, a2d_objective(base.a2d, use_knowledge=False), [replace(base.teacher_training(), seed=s) for s in seeds],
                       run_dir / "checkpoints", [None] * len(seeds))
    # Attention maps are stored whenever delta may be searched above 0.
    knowledge_config = replace(base.knowledge, with_attention=base.delta > 0 or "delta" in p.space)
    tables, infer_s = ensemble.knowledge(train_ref, data.train_features["feature_id"], knowledge_config)
    path = write_knowledge(merge_member_tables(tables, data), run_dir / "knowledge.parquet")
    outputs = [o for o, _ in ensemble.outputs(ray.put(data.dev_arrays))]
    f1 = scores_from_outputs(data.dev_examples, data.dev_features, data.dev_arrays,
                             ensemble_outputs(outputs, data.dev_arrays["span_mask"]), base.max_answer_length)["f1"]
    ensemble.shutdown()
    tracker.log_metrics(run, {"teacher_passes": 1, "dev_f1": f1, "infer_s": infer_s,
                              "knowledge_bytes": path.stat().st_size})
    tracker.end_run(run)
    return path, 1


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
