"""What one Ray Tune trial runs: any engine recipe (A2D, IMM, plain KD) from shared teachers.

Trials never run a teacher. The sweep runs the recipe's teacher steps once (or reuses them
from a run directory) and hands every trial the same read-only inputs through
``tune.with_parameters`` (one object-store copy). Their result files are put into the
trial's run directory (they name the shared models and tables absolutely, where the sweep's
teacher run directory holds them), and the trial drives the
recipe on from there in its own process, reporting either

* the dev score of the method's metric step after every epoch (A2D, plain KD: a student),
  the best epoch's model being the trial's output; or
* the method's progress after every stage that makes some (IMM: the average dev F1 of the
  kept domain models after every iteration), with the models it stands for as the output.

Outputs are saved before each report: the scheduler may stop the trial at a report. A trial
first sets the job's credentials in its environment (:func:`cluster.secrets.receive`).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from ray import tune
from transformers import PreTrainedModel

from cluster.secrets import receive
from kd_core.engine.execute import execute
from kd_core.engine.local import drive
from kd_core.engine.steps import Result, Step, TrainStep
from kd_core.engine.workspace import Workspace
from kd_core.io.run_store import clear_staging, join
from kd_core.methods.registry import METHODS
from tuning.spaces import RECIPE_METRIC

#: Where a trial keeps its output model(s), under the sweep's trial folder.
TRIAL_OUTPUT = "output"


def trial_dir(trials_root: str) -> str:
    """This trial's run directory (named by its Tune trial id): a path, or a URI under a URI sweep's."""
    return join(trials_root, tune.get_context().get_trial_id())


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
    """Drive the recipe at ``params`` from the shared teachers, reporting as the module doc says."""
    receive()  # the job's credentials, before anything touches the store
    torch.set_num_threads(inputs.threads)
    spec = METHODS[inputs.method]
    settings = replace(inputs.settings, **params)
    root = trial_dir(inputs.trials_root)
    ws = replace(inputs.ws, run_dir=root, _features={}, _hashes={})
    for name, result in inputs.teachers.items():
        ws.save_result(name, result)
    output = ws.run_dir / TRIAL_OUTPUT
    best = -math.inf
    target = spec.metric_step_of(settings)

    def report_epoch(step: TrainStep, epoch: int, scores: dict[str, float], model: PreTrainedModel) -> None:
        nonlocal best
        if step.name != target:
            return
        metric = scores[ws.task.primary_metric]
        if metric > best:
            best = metric
            ws.save_model(model, step.tokenizer, output)
            ws.store.push(output)
        tune.report({RECIPE_METRIC: metric, "epoch": epoch, **{f"dev/{name}": value for name, value in scores.items()}})

    results: dict[str, Result] = dict(inputs.teachers)
    reported = 0

    def run_and_report(steps: Sequence[Step]) -> list[Result]:
        nonlocal best, reported
        done = [execute(step, ws, on_epoch=report_epoch if target else None) for step in steps]
        results.update({step.name: result for step, result in zip(steps, done)})
        progress = spec.progress(results, ws) if spec.progress is not None else None
        if progress is not None and progress.index > reported:
            reported = progress.index
            if progress.metric > best:
                best = progress.metric
                shutil.rmtree(output, ignore_errors=True)
                for name, model_dir in progress.models.items():
                    shutil.copytree(ws.local(ws.resolve(model_dir)), output / name)
                ws.store.push(output)
            tune.report({RECIPE_METRIC: progress.metric, "index": progress.index})
        return done

    try:
        drive(spec.recipe(settings, ws), run_and_report, done=inputs.teachers)
    finally:
        clear_staging()  # Tune may reuse this process for another trial: no copies of this one's files
