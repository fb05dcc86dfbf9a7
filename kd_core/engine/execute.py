"""Run one step in this process, resumably (see :mod:`kd_core.engine.steps` for the step kinds).

:func:`execute` returns the step's stored result when its result file exists; otherwise it
does the work and writes the result file last, atomically. A train step checkpoints while it
trains (``<step dir>/checkpoint``) and resumes from there when run again after a crash, so
an interrupted job finishes with the same weights as an uninterrupted one. Models are saved
by writing a temporary folder and renaming it.

With a run directory in an object store (:mod:`kd_core.run_store`) results are read from the
store, a step's files are uploaded when it ends and its checkpoints as they are written, and
a step that starts again (on any node) first fetches its last checkpoint from there.

Knowledge is read through its manifest: a table made for other features (another task,
data, tokenizer or window setting; see :func:`~kd_core.knowledge.manifest.check_manifest`)
is refused before training starts.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from kd_core.engine.steps import (
    LAYER_TERMS, CollectStep, EvaluateStep, MergeStep, SelectStep, SpeedStep, Step, TermSpec, TrainStep,
    referenced_step,
)
from kd_core.engine.mixture import mixture_arrays
from kd_core.engine.workspace import Workspace
from kd_core.errors import ConfigError
from kd_core.knowledge.manifest import (
    Manifest, Teacher, attach_manifest, check_manifest, read_manifest, weights_hash,
)
from kd_core.knowledge.table import read_knowledge, write_knowledge
from kd_core.bilstm import init_embeddings_from_teacher
from kd_core.layer_distillation import LayerDistillation
from kd_core.models import count_parameters, is_preset, keep_layers, load_tokenizer, save_model, set_dropout
from kd_core.noise import noisy_teacher
from kd_core.speed import measure_speed
from kd_core.objectives import Constant, Objective
from kd_core.run_files import replace_dir, write_atomic, writing
from kd_core.tasks.base import Task
from kd_core.train import MetricsCallback, train, unwrap

Result = dict[str, Any]
CallbacksFor = Callable[[Step], Sequence[MetricsCallback]]
#: Called at the end of every epoch of a train step with the epoch, the scores on the step's eval
#: split and the model being trained (to save it before a scheduler may stop the process).
EpochHook = Callable[[TrainStep, int, dict[str, float], PreTrainedModel], None]
#: Wraps a freshly built model for data-parallel training (e.g. ``ray.train.torch.prepare_model``).
Wrap = Callable[[PreTrainedModel], torch.nn.Module]


def stored_result(step: Step, ws: Workspace) -> Result | None:
    """The result of ``step`` if it has finished (its result file exists in the run's store), else ``None``."""
    return ws.result(step.name)


def execute(step: Step, ws: Workspace, *, device: str = "cpu", callbacks_for: CallbacksFor | None = None,
            on_epoch: EpochHook | None = None, progress: bool = False, shard: tuple[int, int] = (0, 1),
            wrap: Wrap | None = None) -> Result:
    """Run ``step`` here (module doc) and return its result.

    ``on_epoch`` makes a train step score itself on its eval split after every epoch (a sweep
    reports these so its scheduler can stop weak trials). ``shard=(rank, world)`` runs this
    process's share of a data-parallel train step, with the model wrapped by ``wrap`` (e.g.
    in ``DistributedDataParallel``); only rank 0 evaluates, saves the model and writes the
    result (other ranks return ``{}``).
    """
    done = stored_result(step, ws)
    if done is not None:
        return done
    task = getattr(step, "task", None)
    if task is not None:
        ws = ws.view(task)
    with writing(ws.run_dir / "steps" / step.name, f"step {step.name}"):  # a full or read-only run dir: one line
        return _execute(step, ws, device, callbacks_for, on_epoch, progress, shard, wrap)


def _execute(step: Step, ws: Workspace, device: str, callbacks_for: CallbacksFor | None, on_epoch: EpochHook | None,
             progress: bool, shard: tuple[int, int], wrap: Wrap | None) -> Result:
    started = time.perf_counter()
    if isinstance(step, TrainStep):
        callbacks = list(callbacks_for(step)) if callbacks_for is not None else []
        trained = _train(step, ws, device, callbacks, progress, on_epoch, shard, wrap)
        if trained is None:
            return {}
        result = trained
    elif isinstance(step, CollectStep):
        result = _collect(step, ws, device)
    elif isinstance(step, MergeStep):
        result = _merge(step, ws)
    elif isinstance(step, EvaluateStep):
        result = _evaluate(step, ws, device)
    elif isinstance(step, SelectStep):
        result = _select(step, ws)
    elif isinstance(step, SpeedStep):
        result = _speed(step, ws, device)
    else:
        raise TypeError(f"not a step: {step!r}")
    result.update(kind=type(step).__name__.removesuffix("Step").lower(), name=step.name,
                  seconds=round(time.perf_counter() - started, 3))
    ws.save_result(step.name, result)
    return result


# ---------------------------------------------------------------------------- models


def model_source(model: str, ws: Workspace) -> str:
    """A model name as a source: ``"@step"`` -> the folder that train step's result names (a path or URI).

    Going through the result (not a fixed path) lets a sweep's trials share teacher steps
    that ran once elsewhere: a trial's run directory holds their result files only.
    """
    step = referenced_step(model)
    if step is None:
        return model
    done = ws.result(step)
    if done is None:
        raise ConfigError("engine", model, f"step {step!r} has not trained a model yet")
    return done["model_dir"]


def load_model(model: str, seed: int, tokenizer: str, ws: Workspace, device: str) -> PreTrainedModel:
    """The model ``model`` with the task's head, reading features of tokenizer ``tokenizer``."""
    source = ws.local(model_source(model, ws))
    wanted = ws.tokenizer(tokenizer)
    loaded, own = ws.task.build_model(source, seed, wanted if is_preset(source) else None)
    if own.get_vocab() != wanted.get_vocab():
        raise ConfigError("engine", model, f"the model's vocabulary is not the one of tokenizer {tokenizer!r}")
    return loaded.to(device)


def objective_for(specs: Sequence[TermSpec], task: Task, layers: LayerDistillation | None = None) -> Objective:
    """The objective of a train step: each spec's term of ``task`` (or of ``layers``) at its weight (zeros left out)."""
    terms = []
    for spec in specs:
        if not spec.active:
            continue
        weight = Constant(float(spec.weight)) if isinstance(spec.weight, (int, float)) else spec.weight
        if spec.kind in LAYER_TERMS:
            if layers is None:
                raise ConfigError("objective", spec.kind, "a layer term needs a layer teacher")
            term = layers.term(spec.kind)
        else:
            term = task.term(spec.kind, spec.tau)
        terms.append(replace(term, weight=weight))
    return Objective(tuple(terms))


def training_arrays(step: TrainStep, ws: Workspace) -> dict[str, np.ndarray]:
    """What ``step`` trains on: its split's arrays (plus knowledge), or its mixture of sources."""
    if step.sources:
        return mixture_arrays(step.sources, step.tokenizer, ws, step.config.seed,
                              lambda name, tokenizer, split: knowledge_for(name, tokenizer, split, ws))
    _, arrays = ws.features(step.tokenizer, step.split)
    if step.knowledge is not None:
        arrays = {**arrays, **knowledge_for(step.knowledge, step.tokenizer, step.split, ws)}
    return arrays


def knowledge_for(step_names: str | Sequence[str], tokenizer: str, split: str, ws: Workspace) -> dict[str, np.ndarray]:
    """The knowledge arrays of the steps' tables, checked against and aligned with these features.

    One table of the workspace's task is read as it is; tables of the parts of a multi-task
    workspace (one per task with a teacher) are each checked against their task's view and
    gathered into the multi-task rows (:meth:`~kd_core.tasks.base.Task.gather_knowledge`).
    """
    names = (step_names,) if isinstance(step_names, str) else tuple(step_names)
    features, _ = ws.features(tokenizer, split)
    tables = {}
    for name in names:
        path = knowledge_path(name, ws)
        table = read_knowledge(path)
        manifest = read_manifest(table, path)
        if len(names) == 1 and manifest.task == ws.task.name:
            check_manifest(manifest, ws.feature_context(tokenizer, split), path)
            return ws.task.knowledge_arrays(table, features)
        check_manifest(manifest, ws.view(manifest.task).feature_context(tokenizer, split), path)
        tables[manifest.task] = table
    return ws.task.gather_knowledge(tables, features)


# ---------------------------------------------------------------------------- the four kinds


def _train(step: TrainStep, ws: Workspace, device: str, callbacks: list[MetricsCallback], progress: bool,
           on_epoch: EpochHook | None, shard: tuple[int, int], wrap: Wrap | None) -> Result | None:
    if shard[1] != step.workers:
        raise ConfigError("engine", step.name, f"planned for {step.workers} data-parallel workers, run on {shard[1]}")
    arrays = training_arrays(step, ws)
    model = load_model(step.model, step.seed, step.tokenizer, ws, device)
    if step.keep_layers is not None:
        model = keep_layers(model, step.keep_layers)
    if step.embeddings_from is not None:
        _init_embeddings(model, step, ws)
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
    best = BestEpoch(folder / "best", ws.task.primary_metric, ws.tokenizer(step.tokenizer)) if step.keep_best else None
    if best is not None:
        hooks.append(best.consider)
    wrapped = wrap(model) if wrap is not None else model
    forward = ws.task.forward if layers is None else layers.forward(ws.task.forward)
    outcome = train(wrapped, arrays, objective_for(step.objective, ws.task, layers), step.config, callbacks=callbacks,
                    checkpoint_dir=folder / "checkpoint", progress=progress, desc=step.name, forward=forward,
                    shard=shard, epoch_end=_epoch_scores(step, ws, model, hooks) if hooks and shard[0] == 0 else None,
                    extra=None if layers is None or not len(layers.projections) else layers.projections,
                    perturb=perturb, on_checkpoint=lambda checkpoint: _persist(ws, checkpoint, best))
    if layers is not None:
        layers.remove()
    model = unwrap(wrapped)
    if shard[0] != 0:
        return None
    chosen: dict[str, Any] = {}
    if best is not None and best.chosen is not None:
        scores, chosen["best_epoch"] = best.chosen["scores"], best.chosen["epoch"]
        replace_dir(best.model_dir, folder / "model")
    else:
        eval_features, eval_arrays = ws.features(step.tokenizer, step.eval_split)
        scores = ws.task.evaluate(model, ws.examples(step.eval_split), eval_features, eval_arrays)
        partial = folder / "model.partial"
        shutil.rmtree(partial, ignore_errors=True)
        save_model(model.cpu(), ws.tokenizer(step.tokenizer), partial)
        replace_dir(partial, folder / "model")
    for spent in ("checkpoint", "best"):  # optimizer states and the best-so-far copy are no longer needed
        shutil.rmtree(folder / spent, ignore_errors=True)
        ws.store.drop_versions(folder / spent)
    return {"model_dir": ws.location(folder / "model"), "scores": {step.eval_split: scores},
            "primary": scores[ws.task.primary_metric], "parameters": count_parameters(model),
            "steps": outcome.steps, "resumed_from_step": outcome.resumed_from_step,
            "last_metrics": outcome.last_metrics, **chosen}


def _persist(ws: Workspace, checkpoint: Path, best: BestEpoch | None) -> None:
    """Copy a new checkpoint (and the best epoch's model it goes with, when that changed) to the run's store."""
    if best is not None and best.unsaved:
        ws.store.push_version(best.folder)
        best.unsaved = False
    ws.store.push_version(checkpoint)


class BestEpoch:
    """Keeps the model of the best-scoring epoch so far in ``folder`` (``model/`` and ``best.json``).

    Written atomically after each improvement, so a step resumed after a crash keeps comparing
    with the best epoch before the crash.
    """

    def __init__(self, folder: Path, metric: str, tokenizer: PreTrainedTokenizerFast) -> None:
        self.folder, self.metric, self.tokenizer = folder, metric, tokenizer
        record = folder / "best.json"
        self.chosen: dict[str, Any] | None = json.loads(record.read_text()) if record.exists() else None
        self.unsaved = False  # a better epoch was kept here since the run's store last got a copy

    @property
    def model_dir(self) -> Path:
        return self.folder / "model"

    def consider(self, step: TrainStep, epoch: int, scores: dict[str, float], model: PreTrainedModel) -> None:
        """An epoch hook: keep this epoch's weights when its score beats the best so far (strictly)."""
        if self.chosen is not None and scores[self.metric] <= self.chosen["scores"][self.metric]:
            return
        partial = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        save_model(model, self.tokenizer, partial / "model")
        self.chosen = {"epoch": epoch, "scores": scores}
        write_atomic(partial / "best.json", json.dumps(self.chosen))
        replace_dir(partial, self.folder)
        self.unsaved = True


def _init_embeddings(model: PreTrainedModel, step: TrainStep, ws: Workspace) -> None:
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


def _check_options(step: CollectStep | MergeStep, known: Sequence[str], ws: Workspace) -> None:
    unknown = sorted(set(dict(step.options)) - set(known))
    if unknown:
        kind = "collect" if isinstance(step, CollectStep) else "merge"
        raise ConfigError("engine", step.name, f"task kind {ws.task.kind} has no {kind} option {unknown[0]!r}")


def _collect(step: CollectStep, ws: Workspace, device: str) -> Result:
    features, arrays = ws.features(step.tokenizer, step.split)
    _check_options(step, ws.task.collect_options, ws)
    model = load_model(step.model, 0, step.tokenizer, ws, device)
    context = ws.feature_context(step.tokenizer, step.split)
    manifest = Manifest(task=ws.task.name, kind=ws.task.kind, key=ws.task.key, data=context.data,
                        teachers=(Teacher(model_source(step.model, ws), weights_hash(model)),),
                        tokenizer=context.tokenizer, max_length=context.max_length, doc_stride=context.doc_stride)
    table = attach_manifest(ws.task.collect(model, features, arrays, **dict(step.options)), manifest)
    path = write_knowledge(table, ws.step_dir(step.name) / "knowledge.parquet")
    return {"path": ws.location(path), "rows": table.num_rows, "bytes": path.stat().st_size}


def _merge(step: MergeStep, ws: Workspace) -> Result:
    _check_options(step, ws.task.merge_options, ws)
    paths = [knowledge_path(member, ws) for member in step.members]
    tables = [read_knowledge(path) for path in paths]
    manifests = [read_manifest(table, path) for table, path in zip(tables, paths)]
    first = manifests[0]
    for path, manifest in zip(paths[1:], manifests[1:]):
        if manifest.with_teachers(first.teachers) != first:
            raise ConfigError(path, "manifest", f"member made for other features than {paths[0]}; cannot merge")
    check_manifest(first, ws.feature_context(step.tokenizer, step.split), paths[0])
    features, arrays = ws.features(step.tokenizer, step.split)
    merged = ws.task.merge(tables, ws.examples(step.split), features, arrays, **dict(step.options))
    teachers = [teacher for manifest in manifests for teacher in manifest.teachers]
    table = attach_manifest(merged, first.with_teachers(teachers))
    path = write_knowledge(table, ws.step_dir(step.name) / "knowledge.parquet")
    return {"path": ws.location(path), "rows": table.num_rows, "bytes": path.stat().st_size, "members": len(tables)}


def _evaluate(step: EvaluateStep, ws: Workspace, device: str) -> Result:
    features, arrays = ws.features(step.tokenizer, step.split)
    outputs, seconds, parameters = [], [], 0
    for name in step.models:
        model = load_model(name, 0, step.tokenizer, ws, device)
        parameters += count_parameters(model)
        started = time.perf_counter()
        outputs.append(ws.task.infer(model, arrays))
        seconds.append(time.perf_counter() - started)
    combined = outputs[0] if len(outputs) == 1 else ws.task.ensemble(outputs, arrays)
    options: dict[str, float] = {}
    if step.threshold_from is not None:  # SQuAD v2: the null threshold chosen by that (dev) evaluation
        chosen = _finished(step.threshold_from, ws, step.name)["scores"]
        if "best_f1_threshold" in chosen:
            options["null_threshold"] = chosen["best_f1_threshold"]
    scores = ws.task.scores(ws.examples(step.split), features, arrays, combined, **options)
    return {"split": step.split, "models": list(step.models), "scores": scores,
            "primary": scores[ws.task.primary_metric], "infer_s": float(sum(seconds)), "parameters": parameters}


def _select(step: SelectStep, ws: Workspace) -> Result:
    kept: tuple[str, Result] | None = None
    candidates = {name: _finished(name, ws, step.name) for name in step.candidates}
    for name, candidate in candidates.items():
        if step.split not in candidate.get("scores", {}):
            raise ConfigError("engine", step.name, f"candidate {name!r} has no scores on {step.split!r}")
        if kept is None or candidate["scores"][step.split][ws.task.primary_metric] > kept[1]["primary"]:
            kept = (name, {**candidate, "primary": candidate["scores"][step.split][ws.task.primary_metric]})
    assert kept is not None
    name, result = kept
    return {"kept": name, "model_dir": result["model_dir"], "primary": result["primary"],
            "scores": {step.split: result["scores"][step.split]},
            "candidates": {c: done["scores"][step.split][ws.task.primary_metric] for c, done in candidates.items()}}


def _speed(step: SpeedStep, ws: Workspace, device: str) -> Result:
    """Every model timed side by side (:func:`~kd_core.speed.measure_speed`), with its parameters and size on disk."""
    timed, sizes = [], {}
    for label, name, tokenizer in step.models:
        model = load_model(name, 0, tokenizer, ws, device).eval()
        _, arrays = ws.features(tokenizer, step.split)
        source = Path(ws.local(model_source(name, ws)))
        sizes[label] = {"parameters": count_parameters(model),
                        "disk_bytes": sum(f.stat().st_size for f in source.glob("*.safetensors")) if source.is_dir()
                        else 0}
        timed.append((label, model, arrays))
    speeds = measure_speed(timed, lambda model, arrays, batch: ws.task.infer(model, arrays, batch), step.examples,
                           step.repeats)
    return {"split": step.split, "device": device, "threads": torch.get_num_threads(),
            "models": {label: {**sizes[label], **speeds[label]} for label in speeds}}


def knowledge_path(step_name: str, ws: Workspace) -> str:
    """Where the collect or merge step ``step_name`` wrote its table (it must have finished), as a local path."""
    done = ws.result(step_name)
    if done is None:
        raise ConfigError("engine", step_name, "its knowledge has not been collected yet")
    return ws.local(done["path"])


def _finished(name: str, ws: Workspace, needed_by: str) -> Result:
    """The result of step ``name``, which step ``needed_by`` reads (it must have finished)."""
    done = ws.result(name)
    if done is None:
        raise ConfigError("engine", needed_by, f"step {name!r} has not finished")
    return done
