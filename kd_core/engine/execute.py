"""Run one step in this process, resumably (see :mod:`kd_core.engine.steps` for the step kinds).

:func:`execute` returns the step's stored result when its result file exists and is whole;
otherwise it does the work and writes the result file last, atomically. A train step
checkpoints while it trains (``<step dir>/checkpoint``) and resumes from there when run again
after a crash, so an interrupted job finishes with the same weights as an uninterrupted one.
Models are saved by writing a temporary folder and renaming it.

A stored result that is corrupt (not a JSON mapping with its kind's keys, of another kind than
the step, or naming a model folder or knowledge table of its own that is cut short or
overwritten: :meth:`~kd_core.engine.workspace.Workspace.check_outputs`) is named in one warning
line on stderr and discarded, and the step runs again (a train step from its last good
checkpoint, else from the start), so it ends as an uninterrupted run would
(:func:`stored_result`).

With a run directory in an object store (:mod:`kd_core.io.run_store`) results are read from the
store, a step's files are uploaded when it ends and its checkpoints as they are written, and
a step that starts again (on any node) first fetches its last checkpoint from there.

What a step reads (models, objective, arrays, knowledge checked against its manifest) is in
:mod:`kd_core.engine.inputs`; the train step itself in :mod:`kd_core.engine.train_step`. Each step
kind imports its own code when it runs (a select step loads no model code, a merge step no
training loop), so a process that runs steps pays at its start for none of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kd_core.engine.steps import CollectStep, EvaluateStep, MergeStep, Result, SelectStep, SpeedStep, Step, TrainStep
from kd_core.io.errors import ConfigError
from kd_core.io.file_checks import CorruptFile, corrupt, warn
from kd_core.io.run_files import writing

if TYPE_CHECKING:
    from kd_core.engine.train_step import EpochHook, Wrap
    from kd_core.engine.workspace import Workspace
    from kd_core.training.loop import MetricsCallback

CallbacksFor = Callable[[Step], Sequence["MetricsCallback"]]


def stored_result(step: Step, ws: Workspace) -> Result | None:
    """The result of ``step`` if it has finished (its result file exists in the run's store) and is whole, else
    ``None``; a corrupt one is named in a warning line and discarded, so the step runs again (module doc)."""
    found: Result | None = None
    try:
        found = ws.result(step.name)
        if found is None:
            return None
        if found["kind"] != step_kind(step):
            raise corrupt(ws.location(ws.result_path(step.name)), f"a {found['kind']} step's result, not a "
                          f"{step_kind(step)} step's")
        ws.check_outputs(found)
        return found
    except CorruptFile as err:
        warn(err.source, err.what, f"step {step.name} runs again")
        ws.discard_result(step.name, found)
        return None


def step_kind(step: Step) -> str:
    """The kind a step's result records: ``TrainStep`` -> ``train``."""
    return type(step).__name__.removesuffix("Step").lower()


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
        from kd_core.engine.train_step import train_step

        callbacks = list(callbacks_for(step)) if callbacks_for is not None else []
        trained = train_step(step, ws, device, callbacks, progress, on_epoch, shard, wrap)
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
    result.update(kind=step_kind(step), name=step.name,
                  seconds=round(time.perf_counter() - started, 3))
    ws.save_result(step.name, result)
    return result


def _check_options(step: CollectStep | MergeStep, known: Sequence[str], ws: Workspace) -> None:
    unknown = sorted(set(dict(step.options)) - set(known))
    if unknown:
        kind = "collect" if isinstance(step, CollectStep) else "merge"
        raise ConfigError("engine", step.name, f"task kind {ws.task.kind} has no {kind} option {unknown[0]!r}")


def _collect(step: CollectStep, ws: Workspace, device: str) -> Result:
    from kd_core.engine.inputs import load_model, model_location
    from kd_core.knowledge.manifest import Manifest, Teacher, attach_manifest, weights_hash
    from kd_core.knowledge.table import KNOWLEDGE_FILE, write_knowledge
    from kd_core.training.compute import inference

    features, arrays = ws.features(step.tokenizer, step.split)
    _check_options(step, ws.task.collect_options, ws)
    model = load_model(step.model, 0, step.tokenizer, ws, device)
    context = ws.feature_context(step.tokenizer, step.split)
    manifest = Manifest(task=ws.task.name, kind=ws.task.kind, key=ws.task.key, data=context.data,
                        teachers=(Teacher(model_location(step.model, ws), weights_hash(model)),),
                        tokenizer=context.tokenizer, max_length=context.max_length, doc_stride=context.doc_stride,
                        max_query_length=context.max_query_length)
    with inference(ws.compute, device):
        collected = ws.task.collect(model, features, arrays, **dict(step.options))
    table = attach_manifest(collected, manifest)
    path = write_knowledge(table, ws.step_dir(step.name) / KNOWLEDGE_FILE)
    return {"path": ws.location(path), "rows": table.num_rows, "bytes": path.stat().st_size}


def _merge(step: MergeStep, ws: Workspace) -> Result:
    from kd_core.engine.inputs import knowledge_path
    from kd_core.knowledge.manifest import attach_manifest, check_manifest, read_manifest
    from kd_core.knowledge.table import KNOWLEDGE_FILE, read_knowledge, write_knowledge

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
    path = write_knowledge(table, ws.step_dir(step.name) / KNOWLEDGE_FILE)
    return {"path": ws.location(path), "rows": table.num_rows, "bytes": path.stat().st_size, "members": len(tables)}


def _evaluate(step: EvaluateStep, ws: Workspace, device: str) -> Result:
    from kd_core.engine.inputs import finished_result, load_model
    from kd_core.models.build import count_parameters
    from kd_core.training.compute import inference

    features, arrays = ws.features(step.tokenizer, step.split)
    outputs, seconds, parameters = [], [], 0
    for name in step.models:
        model = load_model(name, 0, step.tokenizer, ws, device)
        parameters += count_parameters(model)
        started = time.perf_counter()
        with inference(ws.compute, device):
            outputs.append(ws.task.infer(model, arrays))
        seconds.append(time.perf_counter() - started)
    combined = outputs[0] if len(outputs) == 1 else ws.task.ensemble(outputs, arrays)
    options: dict[str, float] = {}
    if step.threshold_from is not None:  # SQuAD v2: the null threshold chosen by that (dev) evaluation
        source = finished_result(step.threshold_from, ws, step.name)
        chosen = source["scores"]
        if source["kind"] == "train":  # a train step's scores on its evaluation split
            chosen = chosen[next(iter(chosen))]
        if "best_f1_threshold" in chosen:
            options["null_threshold"] = chosen["best_f1_threshold"]
    scores = ws.task.scores(ws.examples(step.split), features, arrays, combined, **options)
    return {"split": step.split, "models": list(step.models), "scores": scores,
            "primary": scores[ws.task.primary_metric], "infer_s": float(sum(seconds)), "parameters": parameters}


def _select(step: SelectStep, ws: Workspace) -> Result:
    from kd_core.engine.inputs import finished_result

    kept: tuple[str, Result] | None = None
    candidates = {name: finished_result(name, ws, step.name) for name in step.candidates}
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
    """Every model timed side by side (:func:`~kd_core.evaluation.speed.measure_speed`), with its parameters and size on disk."""
    import torch

    from kd_core.engine.inputs import load_model, model_source
    from kd_core.evaluation.speed import measure_speed
    from kd_core.models.build import count_parameters
    from kd_core.training.compute import inference

    timed, sizes = [], {}
    for label, name, tokenizer in step.models:
        model = load_model(name, 0, tokenizer, ws, device).eval()
        _, arrays = ws.features(tokenizer, step.split)
        source = Path(ws.local(model_source(name, ws)))
        sizes[label] = {"parameters": count_parameters(model),
                        "disk_bytes": sum(f.stat().st_size for f in source.glob("*.safetensors")) if source.is_dir()
                        else 0}
        timed.append((label, model, arrays))
    with inference(ws.compute, device):
        speeds = measure_speed(timed, lambda model, arrays, batch: ws.task.infer(model, arrays, batch), step.examples,
                               step.repeats)
    return {"split": step.split, "device": device, "precision": ws.compute.resolved(device),
            "threads": torch.get_num_threads(),
            "models": {label: {**sizes[label], **speeds[label]} for label in speeds}}
