"""A train step run here: the model built as the step says, its objective and knowledge, checkpoints, the best epoch.

The model is loaded (or built) with the task's head, optionally cut to chosen teacher layers,
given a BiLSTM's word vectors from a trained teacher, or its dropout set; a step with layer
terms gets a frozen layer teacher and captures (:mod:`kd_core.objectives.layer_distillation`). Training
checkpoints to ``<step dir>/checkpoint`` (and to the run's store) and resumes from there; with
``keep_best`` the best-scoring epoch's model is kept (:class:`BestEpoch`). The model is saved
by writing a temporary folder and renaming it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from kd_core.engine.inputs import load_model, model_source, objective_for, training_arrays
from kd_core.engine.steps import LAYER_TERMS, Result, TrainStep
from kd_core.engine.workspace import Workspace
from kd_core.io.errors import ConfigError
from kd_core.io.run_files import replace_dir, write_atomic
from kd_core.models.bilstm import init_embeddings_from_teacher
from kd_core.models.build import count_parameters, keep_layers, set_dropout
from kd_core.models.presets import is_preset
from kd_core.models.tokenizers import load_tokenizer
from kd_core.objectives.layer_distillation import LayerDistillation
from kd_core.objectives.noise import noisy_teacher
from kd_core.training.compute import inference
from kd_core.training.loop import MetricsCallback, train, unwrap

#: Called at the end of every epoch of a train step with the epoch, the scores on the step's eval
#: split and the model being trained (to save it before a scheduler may stop the process).
EpochHook = Callable[[TrainStep, int, dict[str, float], PreTrainedModel], None]


#: Wraps a freshly built model for data-parallel training (e.g. ``ray.train.torch.prepare_model``).
Wrap = Callable[[PreTrainedModel], torch.nn.Module]


def train_step(step: TrainStep, ws: Workspace, device: str, callbacks: list[MetricsCallback], progress: bool,
           on_epoch: EpochHook | None, shard: tuple[int, int], wrap: Wrap | None) -> Result | None:
    if shard[1] != step.workers:
        raise ConfigError("engine", step.name, f"planned for {step.workers} data-parallel workers, run on {shard[1]}")
    arrays = training_arrays(step, ws)
    model = load_model(step.model, step.seed, step.tokenizer, ws, device)
    if step.keep_layers is not None:
        model = keep_layers(model, step.keep_layers)
    if step.embeddings_from is not None:
        init_embeddings(model, step, ws)
    if step.dropout is not None:
        set_dropout(model, step.dropout)
    layers = _layer_distillation(step, ws, model, device)
    perturb = noisy_teacher(arrays, step.teacher_noise, step.config.seed) if step.teacher_noise > 0 else None
    folder = ws.step_dir(step.name)
    hooks: list[EpochHook] = [on_epoch] if on_epoch is not None else []
    if step.score_epochs:
        hooks.append(_report_scores(callbacks))
    if shard[0] == 0:  # a step re-run on another node resumes from the checkpoint in the run's store
        ws.store.pull_version(folder / "checkpoint")
        if step.keep_best:
            ws.store.pull_version(folder / "best")
            ws.store.pull(folder / BestEpoch.CURVE)
    best = BestEpoch(folder / "best", ws.task.primary_metric,
                     lambda kept, path: ws.save_model(kept, step.tokenizer, path)) if step.keep_best else None
    if best is not None:
        hooks.append(best.consider)
    wrapped = wrap(model) if wrap is not None else model
    forward = ws.task.forward if layers is None else layers.forward(ws.task.forward)
    outcome = train(wrapped, arrays, objective_for(step.objective, ws.task, layers), step.config, callbacks=callbacks,
                    checkpoint_dir=folder / "checkpoint", progress=progress, desc=step.name, forward=forward,
                    shard=shard, epoch_end=_epoch_scores(step, ws, model, hooks) if hooks and shard[0] == 0 else None,
                    extra=None if layers is None or not len(layers.projections) else layers.projections,
                    perturb=perturb, on_checkpoint=lambda checkpoint: _persist(ws, checkpoint, best), compute=ws.compute)
    if layers is not None:
        layers.remove()
    model = unwrap(wrapped)
    if shard[0] != 0:
        return None
    chosen: dict[str, Any] = {}
    if best is not None and best.chosen is not None:
        scores, chosen["best_epoch"] = best.chosen["scores"], best.chosen["epoch"]
        chosen["epochs_primary"] = best.history
        replace_dir(best.model_dir, folder / "model")
    else:
        eval_features, eval_arrays = ws.features(step.tokenizer, step.eval_split)
        with inference(ws.compute, device):
            scores = ws.task.evaluate(model, ws.examples(step.eval_split), eval_features, eval_arrays)
        partial = folder / "model.partial"
        shutil.rmtree(partial, ignore_errors=True)
        ws.save_model(model.cpu(), step.tokenizer, partial)
        replace_dir(partial, folder / "model")
    for spent in ("checkpoint", "best"):  # optimizer states and the best-so-far copy are no longer needed
        shutil.rmtree(folder / spent, ignore_errors=True)
        ws.store.drop_versions(folder / spent)
    return {"model_dir": ws.location(folder / "model"), "scores": {step.eval_split: scores},
            "primary": scores[ws.task.primary_metric], "parameters": count_parameters(model),
            "precision": ws.compute.resolved(device),
            "steps": outcome.steps, "resumed_from_step": outcome.resumed_from_step,
            "last_metrics": outcome.last_metrics, **chosen}


def _persist(ws: Workspace, checkpoint: Path, best: BestEpoch | None) -> None:
    """Copy a new checkpoint (and the best epoch's model it goes with, when that changed) to the run's store."""
    if best is not None and best.unsaved:
        ws.store.push_version(best.folder)
        best.unsaved = False
    if best is not None and best.curve_file.exists():  # a few bytes: the model is not uploaded again for it
        ws.store.push(best.curve_file)
    ws.store.push_version(checkpoint)


class BestEpoch:
    """Keeps the model of the best-scoring epoch so far in ``folder`` (``model/`` and ``best.json``), and every
    epoch's score (``history``, in :attr:`CURVE` beside ``folder``: the dev curve that shows whether the score
    stopped rising).

    Written atomically, the model after each improvement and the curve after each epoch, so a step
    resumed after a crash keeps comparing with the best epoch before the crash and keeps its curve
    (a step begun before the curve was kept has none: its earlier epochs read as unknown, ``None``).
    """

    CURVE = "epochs.json"

    def __init__(self, folder: Path, metric: str, save: Callable[[PreTrainedModel, Path], Any]) -> None:
        self.folder, self.metric, self.save = folder, metric, save
        record, self.curve_file = folder / "best.json", folder.with_name(self.CURVE)
        self.chosen: dict[str, Any] | None = json.loads(record.read_text()) if record.exists() else None
        self.history: list[float | None] = json.loads(self.curve_file.read_text()) if self.curve_file.exists() else []
        self.unsaved = False  # a better epoch was kept here since the run's store last got a copy

    @property
    def model_dir(self) -> Path:
        return self.folder / "model"

    def consider(self, step: TrainStep, epoch: int, scores: dict[str, float], model: PreTrainedModel) -> None:
        """An epoch hook: record the epoch's score; keep its weights when it beats the best so far (strictly)."""
        self.history = [*(self.history + [None] * epoch)[:epoch - 1], scores[self.metric]]
        write_atomic(self.curve_file, json.dumps(self.history))
        if self.chosen is not None and scores[self.metric] <= self.chosen["scores"][self.metric]:
            return
        partial = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        self.save(model, partial / "model")
        self.chosen = {"epoch": epoch, "scores": scores}
        write_atomic(partial / "best.json", json.dumps(self.chosen))
        replace_dir(partial, self.folder)
        self.unsaved = True


def init_embeddings(model: PreTrainedModel, step: TrainStep, ws: Workspace) -> None:
    """A BiLSTM student's word vectors from the word embeddings of the trained model ``step.embeddings_from``."""
    source = ws.local(model_source(step.embeddings_from, ws))
    if is_preset(source):
        raise ConfigError("engine", step.name, f"embeddings_from names an untrained preset {source!r}; name a trained "
                          "model ('@step' or a path)")
    teacher, _ = ws.task.build_model(source, 0, None)
    init_embeddings_from_teacher(model, ws.tokenizer(step.tokenizer), teacher.get_input_embeddings().weight.detach(),
                                 load_tokenizer(source))


def _layer_distillation(step: TrainStep, ws: Workspace, model: PreTrainedModel,
                        device: str) -> LayerDistillation | None:
    """The frozen layer teacher and captures of a step with layer terms (``None`` without any)."""
    kinds = [t.kind for t in step.objective if t.kind in LAYER_TERMS and t.active]
    if not kinds:
        return None
    assert step.layer_teacher is not None
    teacher = load_model(step.layer_teacher, 0, step.tokenizer, ws, device)
    return LayerDistillation(model, teacher, step.layer_map, kinds, step.projection, step.relation_heads,
                             seed=step.seed)


def _epoch_scores(step: TrainStep, ws: Workspace, model: PreTrainedModel,
                  hooks: Sequence[EpochHook]) -> Callable[[int, int], None]:
    """A training epoch-end hook that scores ``model`` on the eval split and hands the scores to ``hooks``."""
    features, arrays = ws.features(step.tokenizer, step.eval_split)

    def at_epoch_end(epoch: int, at: int) -> None:
        with inference(ws.compute, next(model.parameters()).device):
            scores = ws.task.evaluate(model, ws.examples(step.eval_split), features, arrays)
        for hook in hooks:
            hook(step, epoch, scores, model)

    return at_epoch_end


def _report_scores(callbacks: Sequence[MetricsCallback]) -> EpochHook:
    """An epoch hook that sends the epoch's scores to the training metrics callbacks (``<split>/<metric>``)."""

    def report(step: TrainStep, epoch: int, scores: dict[str, float], model: PreTrainedModel) -> None:
        metrics = {"step": epoch, **{f"{step.eval_split}/{name}": value for name, value in scores.items()}}
        for callback in callbacks:
            callback(metrics)

    return report
