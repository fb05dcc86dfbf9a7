"""The student stage: one model actor, or data-parallel Ray Train when there are several workers.

With one worker the student trains on one :class:`~cluster.model_actor.ModelActor` like any
other model (all the node's cores, or one GPU): Ray Train's start-up cost (a worker group,
a distributed backend, a run directory) buys nothing for one process. With ``workers > 1``
each of the ``workers`` Ray Train processes builds the same student (same source and seed),
wraps it with ``ray.train.torch.prepare_model`` (DistributedDataParallel: gradients are
averaged) and runs :func:`kd_core.train.train` on its shard of every global batch. Either
way, per-step metrics go to MLflow, checkpoints are written, and the final student is saved
in ``save_pretrained`` form in ``output_dir``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer
from transformers import AutoTokenizer

from cluster.fanout import CALL_TIMEOUT_S
from cluster.model_actor import create_model_actor
from cluster.runtime import Placement
from cluster.tracking import RunRef, Tracker
from kd_core.models import load_qa_model, save_model
from kd_core.objectives import Objective
from kd_core.train import TrainConfig, train, unwrap


@dataclass(frozen=True)
class StudentJob:
    """What the student workers need; ``arrays`` is an ObjectRef to the feature/knowledge arrays."""

    source: str
    seed: int
    tokenizer_dir: str
    arrays: Any
    objective: Objective
    config: TrainConfig
    output_dir: str
    checkpoint_dir: str
    run: RunRef | None


def _worker_loop(loop_config: dict[str, Any]) -> None:
    job: StudentJob = loop_config["job"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(loop_config["threads"])
    tokenizer = AutoTokenizer.from_pretrained(job.tokenizer_dir)
    model, _ = load_qa_model(job.source, job.seed, tokenizer)
    model = ray.train.torch.prepare_model(model)
    callbacks = [Tracker(job.run.tracking_uri).metrics_callback(job.run)] if rank == 0 and job.run else []
    result = train(model, ray.get(job.arrays), job.objective, job.config, callbacks=callbacks,
                   checkpoint_dir=job.checkpoint_dir, progress=False, shard=(rank, world))
    if rank == 0:
        save_model(unwrap(model), tokenizer, job.output_dir)
    ray.train.report({"steps": result.steps, **{k: v for k, v in result.last_metrics.items() if k != "step"}})


def train_student(job: StudentJob, workers: int, storage_dir: str | Path) -> dict[str, float]:
    """Run the student stage on one actor, or on ``workers`` Ray Train workers (one GPU each when there are)."""
    return train_on_one_actor(job) if workers == 1 else train_on_ray_train(job, workers, storage_dir)


def train_on_ray_train(job: StudentJob, workers: int, storage_dir: str | Path) -> dict[str, float]:
    """The student on ``workers`` data-parallel Ray Train workers (module doc)."""
    resources = ray.cluster_resources()
    use_gpu = resources.get("GPU", 0) >= workers
    cpus = resources.get("CPU", 1)
    # Reserve at most one CPU per worker (so the group can start while small actors live on),
    # but let each worker use its fair share of the node's cores.
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"job": job, "threads": max(1, math.floor(cpus / workers))},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": min(1.0, cpus / workers)}),
        run_config=ray.train.RunConfig(name="student", storage_path=str(Path(storage_dir).resolve())),
    )
    result = trainer.fit()
    return dict(result.metrics or {})


def train_on_one_actor(job: StudentJob) -> dict[str, float]:
    """The student on one :class:`~cluster.model_actor.ModelActor` with the node's cores (or one GPU)."""
    resources = ray.cluster_resources()
    cpus = resources.get("CPU", 1)
    placement = Placement(num_cpus=min(1.0, cpus), num_gpus=1.0 if resources.get("GPU", 0) >= 1 else 0.0,
                          torch_threads=max(1, math.floor(cpus)))
    actor = create_model_actor(job.source, job.seed, job.tokenizer_dir, job.output_dir, placement)
    try:
        return ray.get(actor.train.remote(job.arrays, job.objective, job.config, job.checkpoint_dir, job.run),
                       timeout=CALL_TIMEOUT_S)
    finally:
        ray.kill(actor, no_restart=True)
