"""What one Ray Tune trial runs: any engine recipe (A2D, plain KD) or the IMM transfer iterations, from shared teachers.

Trials never run a teacher. The sweep computes the teachers' knowledge once (or reuses it
from a run directory) and hands every trial the same read-only inputs through
``tune.with_parameters`` (one object-store copy):

* **An engine recipe** (:data:`kd_core.methods.METHODS`): the recipe's teacher steps ran
  once; their result files are put into the trial's run directory (they name the shared
  models and tables), and the trial drives the recipe on from there in its own process,
  reporting the dev score of the method's metric step after every epoch.
* **IMM**: the shared ``theta^(0)`` models and their knowledge are iteration 0; the trial runs
  ``K`` transfer iterations (:mod:`kd_core.imm`) with its lambda schedule and reports the
  average dev F1 after each one; the kept domain models are its output.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune
from transformers import AutoTokenizer, PreTrainedModel

from kd_core.engine.execute import Result
from kd_core.engine.local import run_locally
from kd_core.engine.steps import TrainStep
from kd_core.engine.workspace import Workspace
from kd_core.imm import CurrentModel, IMMSettings, PlanResult, RunLayout, run_plan, transfer_plans, write_domain_knowledge
from kd_core.data.domains import DomainData
from kd_core.methods import METHODS
from kd_core.models import save_model
from kd_core.run_files import write_atomic

#: Where a trial keeps its output model(s), under the sweep's trial folder.
TRIAL_OUTPUT = "output"


def trial_dir(trials_root: str) -> Path:
    """This trial's folder (named by its Tune trial id)."""
    return Path(trials_root) / tune.get_context().get_trial_id()


@dataclass(frozen=True)
class IMMTrialInputs:
    """What every IMM trial shares: base settings, domains, iteration-0 models and their knowledge."""

    base: IMMSettings
    model: str
    domains: dict[str, DomainData]
    similarity_rows: list[list[float]]
    initial: dict[str, dict[str, Any]]  # domain -> {"model_dir", "f1", "knowledge"}
    tokenizer_dir: str
    trials_root: str
    threads: int


def imm_trial(params: dict[str, Any], inputs: IMMTrialInputs) -> None:
    """Run ``K`` IMM iterations at ``params`` (``lambda_schedule``, ``iterations``...), reporting average dev F1."""
    torch.set_num_threads(inputs.threads)
    settings = replace(inputs.base, **params)
    tokenizer = AutoTokenizer.from_pretrained(inputs.tokenizer_dir)
    names = list(inputs.domains)
    layout = RunLayout(trial_dir(inputs.trials_root))
    for name, initial in inputs.initial.items():  # iteration 0 is shared: its knowledge is copied, not recomputed
        target = layout.knowledge_path(name, 0)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(initial["knowledge"], target)
    current = {n: CurrentModel(0, inputs.initial[n]["model_dir"], inputs.initial[n]["f1"]) for n in names}
    similarity = np.asarray(inputs.similarity_rows)
    for k in range(settings.iterations):
        for name in names:
            write_domain_knowledge(current[name].model_dir, inputs.domains[name], tokenizer,
                                   layout.knowledge_path(name, current[name].iteration))
        for plan in transfer_plans(layout, settings, names, inputs.model, similarity, current, k):
            result: PlanResult = run_plan(plan, inputs.domains, tokenizer, settings=settings)
            if result.kept:
                current[plan.domain] = CurrentModel(k + 1, str(result.model_dir), result.target_f1)
        for name in names:  # the kept models so far, saved before reporting (Tune may stop the trial there)
            shutil.copytree(current[name].model_dir, layout.root / TRIAL_OUTPUT / name, dirs_exist_ok=True)
        f1 = {n: current[n].f1 for n in names}
        tune.report({"average_f1": float(np.mean(list(f1.values()))), **{f"f1/{n}": v for n, v in f1.items()},
                     "iteration": k + 1})


#: The name under which recipe trials report the primary metric of the task on dev.
RECIPE_METRIC = "dev_metric"


@dataclass(frozen=True)
class RecipeTrialInputs:
    """What every trial of a recipe sweep shares: the method, base settings, workspace, the teachers' results."""

    method: str
    settings: Any
    ws: Workspace
    teachers: dict[str, Result]
    trials_root: str
    threads: int


def recipe_trial(params: dict[str, Any], inputs: RecipeTrialInputs) -> None:
    """Drive the recipe at ``params`` from the shared teachers, reporting the metric step's dev score per epoch."""
    torch.set_num_threads(inputs.threads)
    spec = METHODS[inputs.method]
    settings = replace(inputs.settings, **params)
    root = trial_dir(inputs.trials_root)
    ws = replace(inputs.ws, run_dir=root, _features={}, _hashes={})
    for name, result in inputs.teachers.items():
        write_atomic(ws.result_path(name), json.dumps(result, indent=1))

    best = -math.inf

    def report(step: TrainStep, epoch: int, scores: dict[str, float], model: PreTrainedModel) -> None:
        nonlocal best
        if step.name != spec.metric_step:
            return
        metric = scores[ws.task.primary_metric]
        if metric > best:  # saved before reporting: the scheduler may stop the trial at the report
            best = metric
            save_model(model, ws.tokenizer(step.tokenizer), root / TRIAL_OUTPUT)
        tune.report({RECIPE_METRIC: metric, "epoch": epoch, **{f"dev/{name}": value for name, value in scores.items()}})

    run_locally(spec.recipe(settings, ws), ws, on_epoch=report)
