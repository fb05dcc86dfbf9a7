"""A train step on Ray Train: ``step.workers`` data-parallel processes (one GPU each when there are).

Each Ray Train worker runs the engine's executor on its shard
(:func:`kd_core.engine.execute.execute` with ``shard=(rank, world)``): it builds the same
model (same source and seed), ``ray.train.torch.prepare_model`` wraps it in
DistributedDataParallel (gradients averaged), and every process takes its share of each
global batch. Rank 0 logs per-step metrics to the step's MLflow run, checkpoints, evaluates,
saves the model and writes the step's result file, which the caller reads back. Each worker
first sets the job's credentials in its environment (:func:`cluster.secrets.receive`); a run
directory in an object store is given to Ray Train as its file system and a path
(:func:`cluster.secrets.ray_storage`), so the credentials of an ``s3://KEY:SECRET@bucket/...``
URI are in no path Ray Train prints or saves. A job uses
this only for a step with more than one worker: for one process, a
:class:`~cluster.worker.StepWorker` does the same without Ray Train's start-up cost.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer
from transformers.utils import logging as hf_logging

from cluster.secrets import ray_storage, receive
from cluster.tracking import RunRef, Tracker
from kd_core.engine.execute import execute, stored_result
from kd_core.engine.steps import Result, Step, TrainStep
from kd_core.engine.workspace import Workspace
from kd_core.io.run_store import clear_staging


def _worker_loop(loop_config: dict[str, Any]) -> None:
    receive()  # the job's credentials, before anything touches MLflow or the store
    step: TrainStep = loop_config["step"]
    run: RunRef | None = loop_config["run"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(loop_config["threads"])
    hf_logging.disable_progress_bar()
    ws: Workspace = ray.get(loop_config["ws"])

    def callbacks_for(_: Step) -> list:
        return [Tracker(run.tracking_uri).metrics_callback(run)] if rank == 0 and run is not None else []

    try:
        result = execute(step, ws, device=str(ray.train.torch.get_device()), callbacks_for=callbacks_for,
                         shard=(rank, world), wrap=ray.train.torch.prepare_model)
    finally:
        clear_staging()  # this worker's copies of a URI run directory
    ray.train.report({"steps": result.get("steps", 0)})


def train_on_ray_train(step: TrainStep, ws: Workspace, ws_ref: ray.ObjectRef, run: RunRef | None,
                       storage_dir: str | Path) -> Result:
    """Run ``step`` on ``step.workers`` Ray Train workers (module doc) and return its result."""
    resources = ray.cluster_resources()
    workers = step.workers
    use_gpu = resources.get("GPU", 0) >= workers
    cpus = resources.get("CPU", 1)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"step": step, "ws": ws_ref, "run": run, "threads": max(1, math.floor(cpus / workers))},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": min(1.0, cpus / workers)}),
        run_config=ray.train.RunConfig(name=step.name, **ray_storage(storage_dir)),
    )
    trainer.fit()
    result = stored_result(step, ws)
    if result is None:
        raise RuntimeError(f"Ray Train finished step {step.name!r} without its result file")
    return result
