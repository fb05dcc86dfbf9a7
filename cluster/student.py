"""The student stage on Ray Train: data-parallel ``TorchTrainer`` over kd_core's training loop.

Each of the ``workers`` processes builds the same student (same source and seed), wraps it
with ``ray.train.torch.prepare_model`` (DistributedDataParallel when there are several
workers: gradients are averaged) and runs :func:`kd_core.train.train` on its shard of every
global batch. Rank 0 logs per-step metrics to MLflow, writes checkpoints and saves the
final student in ``save_pretrained`` form.
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
    """Run the student stage on ``workers`` Ray Train workers (one GPU each when the cluster has them)."""
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
