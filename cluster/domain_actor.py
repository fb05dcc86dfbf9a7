"""A Ray actor that owns one device and runs one IMM domain's plans on it.

The actor is created once per job with every domain's features (one object-store copy,
read by all actors) and the shared tokenizer. It keeps no model between calls: every plan
starts from a model on disk (a base model or a saved ``theta``) and ends with its result on
disk (:func:`kd_core.imm.run_plan`). That makes restarts simple: Ray re-runs ``__init__``
and retries the call (``max_restarts=2``, ``max_task_retries=1``), and the retried plan
resumes from its last training checkpoint in the run directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import ray
import torch
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from cluster.runtime import Placement, device_for_actor
from cluster.tracking import RunRef, Tracker
from kd_core.imm import DomainPlan, IMMSettings, run_plan, write_domain_knowledge
from kd_core.data.domains import DomainData


class DomainActor:
    """Runs :class:`~kd_core.imm.DomainPlan` s and writes domain knowledge (module doc)."""

    def __init__(self, domains: Mapping[str, DomainData], tokenizer_dir: str, settings: IMMSettings,
                 torch_threads: int) -> None:
        torch.set_num_threads(torch_threads)
        hf_logging.disable_progress_bar()
        self.domains = domains
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.settings = settings
        self.device = device_for_actor()

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "device": self.device, "threads": torch.get_num_threads()}

    def run_plan(self, plan: DomainPlan, run: RunRef | None = None) -> dict[str, Any]:
        """Execute ``plan``; per-step losses go to ``run`` as ``<stage>/<metric>``. Returns the result as a dict."""
        tracker = Tracker(run.tracking_uri) if run is not None else None

        def callbacks_for(stage: str) -> list:
            return [tracker.metrics_callback(run, prefix=f"{stage}/")] if tracker is not None and run else []

        result = run_plan(plan, self.domains, self.tokenizer, device=self.device, callbacks_for=callbacks_for,
                          settings=self.settings)
        return result.__dict__

    def write_knowledge(self, domain: str, model_dir: str, path: str) -> str:
        """Store the outputs of the model in ``model_dir`` on ``domain``'s training features at ``path``."""
        return str(write_domain_knowledge(model_dir, self.domains[domain], self.tokenizer, path, self.device))


def create_domain_actor(data: ray.ObjectRef, tokenizer_dir: str, settings: IMMSettings,
                        placement: Placement) -> ray.actor.ActorHandle:
    """Start a :class:`DomainActor` with the placement's resources; restartable twice, calls retried once."""
    remote = ray.remote(max_restarts=2, max_task_retries=1)(DomainActor)
    return remote.options(**placement.actor_options()).remote(data, tokenizer_dir, settings, placement.torch_threads)
