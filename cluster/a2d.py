"""A2D on Ray (Hu et al., EMNLP 2018): an ensemble of N readers teaches one student.

Stages, each reported to MLflow (one parent run, a child run per member and one for the
student):

1. **Members** (actors, one model each, different seeds) train concurrently with span CE.
2. **Knowledge**: every member reads the training features at once; the Arrow tables come
   back through the object store and are merged once (member logits, top-K spans, the
   confusing answer, averaged attention) into ``knowledge.parquet`` in the run directory.
3. **Student**: trained on one actor, or on Ray Train with ``student_workers > 1`` data-parallel workers, with
   ``L = CE + tau^2 KD + gamma ANS + delta ATT`` (plain CE with ``no_kd``).
4. **Evaluation**: EM/F1 of each member, the ensemble (averaged probabilities) and the
   student on dev and on every extra evaluation file; the speed table (parameters and
   inference seconds of the ensemble versus the student over the dev set).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
from datasets import Dataset

from cluster.ensemble import Ensemble
from cluster.model_actor import create_model_actor
from cluster.runtime import connect, model_placement
from cluster.student import StudentJob, train_student
from cluster.tracking import RunRef, Tracker, bar_chart, resolve_tracking_uri
from kd_core.batches import feature_arrays
from kd_core.data.features import featurize
from kd_core.data.loaders import load_examples
from kd_core.distill import DistillConfig, PreparedData, initial_student, merge_member_tables, prepare_data
from kd_core.errors import ConfigError
from kd_core.knowledge.span import knowledge_arrays
from kd_core.knowledge.table import write_knowledge
from kd_core.models import save_model
from kd_core.objectives import a2d_objective
from kd_core.predict import ModelOutputs, ensemble_outputs, scores_from_outputs
from kd_core.run_files import remove_outputs


@dataclass(frozen=True)
class A2DJobConfig(DistillConfig):
    """A2D job options: the single-process ones plus the ensemble, evaluation and cluster settings."""

    members: int = 2
    eval: tuple[str, ...] = ()
    student_workers: int = 1
    max_concurrency: int = 2
    tracking_uri: str | None = None
    experiment: str = "a2d"
    run_dir: str = "runs/a2d"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("members", "student_workers", "max_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError("a2d", name, f"must be >= 1, got {getattr(self, name)}")
        if self.compare:
            raise ConfigError("a2d", "compare", "not an option of the A2D job; run it again with --no-kd for the baseline")
        object.__setattr__(self, "eval", tuple(self.eval))


@dataclass
class EvalSet:
    """One evaluation set, featurised with the shared tokenizer."""

    name: str
    examples: Dataset
    features: Dataset
    arrays: dict[str, np.ndarray]
    ref: Any = field(default=None, repr=False)

    def f1(self, outputs: ModelOutputs, max_answer_length: int) -> float:
        return scores_from_outputs(self.examples, self.features, self.arrays, outputs, max_answer_length)["f1"]


def check_inputs(config: A2DJobConfig) -> tuple[PreparedData, list[EvalSet]]:
    """Load and featurise every input (extra evaluation files first, then train and dev): bad data stops here."""
    extra = [(Path(path).name, load_examples(path)) for path in config.eval]
    data = prepare_data(config)
    sets = [EvalSet("dev", data.dev_examples, data.dev_features, data.dev_arrays)]
    for name, examples in extra:
        features = featurize(examples, data.tokenizer, config.features)
        sets.append(EvalSet(name, examples, features, feature_arrays(features)))
    return data, sets


def _member_runs(tracker: Tracker, parent: RunRef, config: A2DJobConfig, seeds: list[int]) -> list[RunRef]:
    return [
        tracker.start_child(parent, f"member-{i}", tags={"kd.role": "member", "kd.member": str(i)},
                            params={"seed": seed, "model": config.teacher_model, "epochs": config.teacher_epochs})
        for i, seed in enumerate(seeds)
    ]


def _log_evaluation(tracker: Tracker, parent: RunRef, summary: dict[str, Any]) -> None:
    bars = {f"member {i}": f1 for i, f1 in enumerate(summary["members_f1"])}
    bars |= {"ensemble": summary["ensemble_f1"], "student": summary["student_f1"]}
    tracker.log_figure(parent, bar_chart(bars, "Dev F1: members, ensemble, student", "F1"), "plots/f1.png")
    tracker.log_dict(parent, summary["speed_table"], "speed_table.json")
    tracker.log_metrics(parent, {
        "ensemble_f1": summary["ensemble_f1"], "student_f1": summary["student_f1"],
        "members_mean_f1": float(np.mean(summary["members_f1"])), "speedup": summary["speedup"],
        "ensemble_infer_s": summary["ensemble_infer_s"], "student_infer_s": summary["student_infer_s"],
        **({"knowledge_bytes_per_feature": summary["knowledge_bytes_per_feature"]}
           if summary["knowledge_bytes_per_feature"] is not None else {}),
        **{f"eval/{name}/{who}": f1 for name, scores in summary["eval"].items() for who, f1 in scores.items()},
    })


#: What a run writes into its run directory; a new run removes an earlier run's copies first, so
#: that stale member weights or checkpoints are never resumed from by mistake.
STAGE_OUTPUTS = ("tokenizer", "members", "checkpoints", "student-init", "student", "ray_train", "knowledge.parquet",
                 "summary.json")


def run_a2d(config: A2DJobConfig, address: str | None = None) -> dict[str, Any]:
    """Run the whole A2D job (module doc) and return its summary."""
    started = time.perf_counter()
    run_dir = Path(config.run_dir).resolve()
    tracking_uri = resolve_tracking_uri(config.tracking_uri)
    data, eval_sets = check_inputs(config)
    remove_outputs(run_dir, STAGE_OUTPUTS)
    tokenizer_dir = run_dir / "tokenizer"
    data.tokenizer.save_pretrained(tokenizer_dir)

    connect(tracking_uri, address)
    tracker = Tracker(tracking_uri)
    parent = tracker.start_run(config.experiment, "a2d", tags={"kd.method": "a2d"}, params=asdict(config))
    with tracker.scope(parent):
        summary = _run_stages(config, data, eval_sets, tokenizer_dir, run_dir, tracker, parent)
        summary.update(mlflow_run_id=parent.run_id, tracking_uri=tracking_uri, run_dir=str(run_dir),
                       seconds=round(time.perf_counter() - started, 1))
        _log_evaluation(tracker, parent, summary)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _run_stages(config: A2DJobConfig, data: PreparedData, eval_sets: list[EvalSet], tokenizer_dir: Path,
                run_dir: Path, tracker: Tracker, parent: RunRef) -> dict[str, Any]:
    seeds = [config.seed + 1000 * i for i in range(config.members)]
    placement = model_placement(config.members, config.max_concurrency)
    train_ref = ray.put(data.train_arrays)
    for eval_set in eval_sets:
        eval_set.ref = ray.put(eval_set.arrays)

    ensemble = Ensemble.create(config.teacher_model, seeds, tokenizer_dir, run_dir / "members", placement,
                               config.max_concurrency)
    member_runs = _member_runs(tracker, parent, config, seeds)
    timings: dict[str, float] = {}
    if config.teacher_epochs > 0:
        _, timings["members_train_s"] = ensemble.train(
            train_ref, a2d_objective(config.a2d, use_knowledge=False),
            [replace(config.teacher_training(), seed=seed) for seed in seeds], run_dir / "checkpoints", member_runs)

    knowledge = None
    knowledge_bytes = None
    if not config.no_kd:
        tables, timings["teacher_infer_s"] = ensemble.knowledge(train_ref, data.train_features["feature_id"],
                                                                config.knowledge)
        merged = merge_member_tables(tables, data)
        path = write_knowledge(merged, run_dir / "knowledge.parquet")
        knowledge_bytes = path.stat().st_size / len(data.train_features)
        knowledge = knowledge_arrays(merged, data.train_features["feature_id"])
        tracker.log_metrics(parent, {"knowledge_bytes": path.stat().st_size})

    evaluation: dict[str, dict[str, float]] = {}
    member_seconds: list[float] = []
    members_f1: list[float] = []
    for eval_set in eval_sets:
        results = ensemble.outputs(eval_set.ref)
        outputs = [r[0] for r in results]
        f1s = [eval_set.f1(o, config.max_answer_length) for o in outputs]
        ensemble_f1 = eval_set.f1(ensemble_outputs(outputs, eval_set.arrays["span_mask"]), config.max_answer_length)
        evaluation[eval_set.name] = {"ensemble": ensemble_f1, "members_mean": float(np.mean(f1s))}
        if eval_set.name == "dev":
            members_f1, member_seconds = f1s, [r[1] for r in results]
    member_parameters = sum(info["parameters"] for info in ensemble.info())
    for run, f1 in zip(member_runs, members_f1):
        tracker.log_metrics(run, {"dev_f1": f1})
        tracker.end_run(run)
    ensemble.shutdown()

    student_dir = run_dir / "student"
    # Every worker starts from the same saved initial student (cut to student_layers if set).
    student_init = save_model(initial_student(config, data), data.tokenizer, run_dir / "student-init")
    student_run = tracker.start_child(parent, "student", tags={"kd.role": "student"},
                                      params={"model": config.student_model, "kd": not config.no_kd,
                                              "workers": config.student_workers})
    arrays = {**data.train_arrays, **knowledge} if knowledge is not None else data.train_arrays
    student_started = time.perf_counter()
    train_student(
        StudentJob(str(student_init), config.seed + 1, str(tokenizer_dir), ray.put(arrays),
                   a2d_objective(config.a2d, use_knowledge=knowledge is not None), config.student_training(seed_offset=1),
                   str(student_dir), str(run_dir / "checkpoints" / "student"), student_run),
        config.student_workers, run_dir / "ray_train",
    )
    timings["student_train_s"] = time.perf_counter() - student_started

    # Same placement (and torch threads) as one member, so the speed table compares like with like.
    student = create_model_actor(str(student_dir), config.seed, tokenizer_dir, student_dir, placement)
    student_parameters = ray.get(student.info.remote(), timeout=600)["parameters"]
    student_seconds = 0.0
    for eval_set in eval_sets:
        outputs, seconds = ray.get(student.outputs.remote(eval_set.ref), timeout=3600)
        evaluation[eval_set.name]["student"] = eval_set.f1(outputs, config.max_answer_length)
        if eval_set.name == "dev":
            student_seconds = seconds
    ray.kill(student, no_restart=True)
    tracker.log_metrics(student_run, {"dev_f1": evaluation["dev"]["student"], **timings})
    tracker.log_artifacts(student_run, student_dir, "student")
    tracker.end_run(student_run)

    ensemble_seconds = float(sum(member_seconds))
    speed_table = {
        "ensemble": {"parameters": member_parameters, "infer_s": ensemble_seconds},
        "student": {"parameters": student_parameters, "infer_s": student_seconds},
        "speedup": ensemble_seconds / max(student_seconds, 1e-9),
    }
    return {
        "members_f1": members_f1,
        "ensemble_f1": evaluation["dev"]["ensemble"],
        "student_f1": evaluation["dev"]["student"],
        "eval": {name: {"ensemble": s["ensemble"], "student": s["student"]}
                 for name, s in evaluation.items() if name != "dev"},
        "ensemble_infer_s": ensemble_seconds,
        "student_infer_s": student_seconds,
        "speedup": speed_table["speedup"],
        "speed_table": speed_table,
        "knowledge_bytes_per_feature": knowledge_bytes,
        "timings": timings,
    }
