"""A Ray actor that holds one QA model on one device and can train it, read its knowledge and run it.

The actor is created once per job and keeps its model in memory between calls. It is
restartable: ``restore_dir`` is where the actor saves its model after every training call
(``save_pretrained`` form), and a restarted actor (Ray re-runs ``__init__``) loads the model
from there instead of building a fresh one, so a retried call sees the trained weights.
Training itself checkpoints to ``checkpoint_dir`` and resumes from it when retried.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch
from transformers import AutoTokenizer

from cluster.runtime import Placement, device_for_actor
from cluster.tracking import RunRef, Tracker
from kd_core.knowledge.span import KnowledgeConfig, member_knowledge
from kd_core.models import count_parameters, load_qa_model, save_model
from kd_core.objectives import Objective
from kd_core.predict import ModelOutputs, run_model
from kd_core.train import TrainConfig, train


class ModelActor:
    """One model on one device (see the module doc). Create it with :func:`create_model_actor`."""

    def __init__(self, source: str, seed: int, tokenizer_dir: str, restore_dir: str, torch_threads: int) -> None:
        torch.set_num_threads(torch_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.restore_dir = Path(restore_dir)
        restored = (self.restore_dir / "config.json").exists()
        self.model, _ = load_qa_model(str(self.restore_dir) if restored else source, seed, self.tokenizer)
        self.model.to(device_for_actor())
        self.restored = restored

    def info(self) -> dict[str, Any]:
        """Process, device, thread count, size and whether the model was restored from disk."""
        return {
            "pid": os.getpid(), "device": str(next(self.model.parameters()).device),
            "threads": torch.get_num_threads(), "parameters": count_parameters(self.model), "restored": self.restored,
        }

    def train(
        self,
        arrays: Mapping[str, np.ndarray],
        objective: Objective,
        config: TrainConfig,
        checkpoint_dir: str | None = None,
        run: RunRef | None = None,
    ) -> dict[str, float]:
        """Train in place (kd_core's loop), log per-step metrics to ``run``, save to ``restore_dir``."""
        callbacks = [Tracker(run.tracking_uri).metrics_callback(run)] if run is not None else []
        started = time.perf_counter()
        result = train(self.model, arrays, objective, config, callbacks=callbacks, checkpoint_dir=checkpoint_dir,
                       progress=False)
        save_model(self.model, self.tokenizer, self.restore_dir)
        return {**result.last_metrics, "train_s": time.perf_counter() - started}

    def outputs(self, arrays: Mapping[str, np.ndarray], batch_size: int = 64) -> tuple[ModelOutputs, float]:
        """Start/end logits over ``arrays`` and the wall time the forward passes took."""
        started = time.perf_counter()
        outputs = run_model(self.model, arrays, batch_size)
        return outputs, time.perf_counter() - started

    def knowledge(self, arrays: Mapping[str, np.ndarray], feature_ids: Sequence[str], config: KnowledgeConfig) -> pa.Table:
        """This model's member knowledge table (an Arrow table through the object store)."""
        return member_knowledge(self.model, arrays, feature_ids, config)


def create_model_actor(
    source: str, seed: int, tokenizer_dir: str | Path, restore_dir: str | Path, placement: Placement
) -> ray.actor.ActorHandle:
    """Start a :class:`ModelActor` with the placement's resources; restartable twice, calls retried once."""
    remote = ray.remote(max_restarts=2, max_task_retries=1)(ModelActor)
    return remote.options(**placement.actor_options()).remote(
        source, seed, str(tokenizer_dir), str(restore_dir), placement.torch_threads
    )
