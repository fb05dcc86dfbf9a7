"""What a step reads: models named by source or by step, the objective of its terms, its arrays and knowledge.

A model named ``"@step"`` is the folder that train step's result names (:func:`model_source`),
so a sweep's trials can share teacher steps that ran once elsewhere. Knowledge is read through
its manifest: a table made for other features (another task, data, tokenizer or window
setting; see :func:`~kd_core.knowledge.manifest.check_manifest`) is refused before training
starts. An input found corrupt as it is read (a result file, a table whose footer, rows or manifest
disagree with its result, a model folder with a cut safetensors file) is refused with one line
naming the file (:class:`~kd_core.io.file_checks.CorruptFile`); the driver checks finished steps
before it starts a stage, so this is the rare case of a file damaged while the job runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from transformers import PreTrainedModel

from kd_core.engine.mixture import mixture_arrays
from kd_core.engine.steps import LAYER_TERMS, Result, TermSpec, TrainStep, referenced_step
from kd_core.engine.workspace import Workspace
from kd_core.io.errors import ConfigError
from kd_core.knowledge.manifest import check_manifest, read_manifest
from kd_core.knowledge.table import read_knowledge
from kd_core.models.presets import is_preset
from kd_core.objectives.layer_distillation import LayerDistillation
from kd_core.objectives.terms import Constant, Objective
from kd_core.tasks.base import Task


def model_source(model: str, ws: Workspace) -> str:
    """A model name as a source: ``"@step"`` -> the folder that train step's result names, resolved in this run
    directory (a path or URI); any other name (a preset, a hub id, a path given by the user) as it is.

    Going through the result (not a fixed path) lets a sweep's trials share teacher steps
    that ran once elsewhere: a trial's run directory holds their result files only, which
    name the teachers' folders absolutely.
    """
    return model if referenced_step(model) is None else ws.resolve(model_location(model, ws))


def model_location(model: str, ws: Workspace) -> str:
    """A model name as results name it: ``"@step"`` -> that train step's ``model_dir`` as its result holds it
    (relative to the run directory for a model of this run, so a manifest naming it moves with the run)."""
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


def knowledge_path(step_name: str, ws: Workspace) -> str:
    """Where the collect or merge step ``step_name`` wrote its table (it must have finished), as a local path."""
    done = ws.result(step_name)
    if done is None:
        raise ConfigError("engine", step_name, "its knowledge has not been collected yet")
    ws.check_outputs(done)  # footer, rows and manifest as its step wrote them
    return ws.local(ws.resolve(done["path"]))


def finished_result(name: str, ws: Workspace, needed_by: str) -> Result:
    """The result of step ``name``, which step ``needed_by`` reads (it must have finished)."""
    done = ws.result(name)
    if done is None:
        raise ConfigError("engine", needed_by, f"step {name!r} has not finished")
    return done
