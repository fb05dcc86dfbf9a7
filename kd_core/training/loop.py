"""The one training loop: any QA model, features plus optional knowledge, any :class:`Objective`.

* AdamW with ``transformers``' linear schedule (``get_linear_schedule_with_warmup``): a
  warm-up from 0 to ``learning_rate`` over ``warmup_ratio`` of the steps, then a linear decay
  to 0; gradients clipped to ``max_grad_norm``.
* Seeded and deterministic on CPU: the batches of epoch ``e`` come from a plan seeded with
  ``(seed, e)`` (:mod:`kd_core.training.sampling`: shuffled rows, or MT-DNN's single-task batches
  shuffled across tasks), and dropout uses the global torch generator, seeded
  once and saved in checkpoints. Two runs with the same seed give the same weights.
* Checkpoints (``checkpoint_dir/``): the model in ``save_pretrained`` form (safetensors),
  ``optimizer.safetensors`` (AdamW moments, the torch CPU RNG state and, on a GPU machine,
  every CUDA device's RNG state) and ``state.json`` (step, config, the last logged metrics,
  so a run resumed at its last step reports the same losses). They are written to a
  temporary folder and renamed, so a folder that
  exists is complete. :func:`train` resumes from one and ends with the same weights as an
  uninterrupted run (the learning rate is a pure function of the step: the schedule is
  moved to the checkpoint's step). A checkpoint damaged since (``state.json`` not a checkpoint
  state, a weights, optimizer or ``extra`` file whose safetensors header is unreadable or whose
  size disagrees with it: :func:`check_checkpoint`) is named in one warning line and training
  starts from the start (the loop keeps one checkpoint only; the next one written replaces the
  damaged folder); a run from the start ends with the same weights too.
* Data parallel: with ``shard=(rank, world_size)`` every process takes its share of each
  global batch of ``batch_size * world_size`` rows (the last global batch of an epoch is
  completed from the start of the epoch order, so every rank gets rows); the model may be
  wrapped in ``DistributedDataParallel``, which averages the gradients, and only rank 0
  writes checkpoints. ``shard=(0, 1)`` is the plain single-process loop.
* ``extra`` modules (e.g. the projections of layer distillation, :mod:`kd_core.objectives.layer_distillation`)
  train with the model: the same optimizer, clipping and checkpoints (``extra.safetensors``).
* ``perturb(batch, epoch, rows)`` may change a batch before the forward pass as a pure
  function of the epoch and the rows (the noisy teacher, :mod:`kd_core.objectives.noise`), so a resumed
  run sees the same batches.
* How it uses the hardware (:class:`~kd_core.training.compute.Compute`): the forward runs
  under the precision's autocast and the objective outside it (fp32 losses); fp16 adds a
  gradient scaler (its state is checkpointed); on CUDA, AdamW is fused, batches are copied
  from pinned memory without blocking, and fp32 matmuls use TF32. ``accumulate_steps = K``:
  an optimizer step takes ``K * batch_size`` rows per process, as ``K`` consecutive
  micro-batches whose losses are scaled by their share of the rows' example weight
  (``sum_{b in m} v_b / sum_b v_b``), so the summed gradient is that of one batch of the
  product size; steps, warm-up and ``checkpoint_every`` count optimizer steps. With
  ``dynamic_padding`` each micro-batch is cut to its longest row; ``group_by_length`` batches
  rows of similar length (:mod:`kd_core.training.sampling`).
* No host synchronisation per step: the loss and the terms stay on the device and are read
  every ``log_every`` steps (and at epoch ends and checkpoints). A loss that is not finite
  is found there and stops training with :class:`FloatingPointError` naming the steps,
  before any checkpoint or model is written after it, so no NaN reaches saved weights.
* Every ``log_every`` steps the callbacks receive a dict of metrics (step, epoch, lr, total
  loss and each term's value and weight, all of the last step): cluster code plugs MLflow in
  here. A tqdm bar shows progress.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from kd_core.data.batches import batch_at, num_question_tokens
from kd_core.io.errors import ConfigError
from kd_core.io.file_checks import CorruptFile, check_model_folder, corrupt, read_json_mapping, safetensors_header, warn
from kd_core.models.forward import qa_forward
from kd_core.objectives.terms import Objective
from kd_core.training.compute import Compute, prepare_device
from kd_core.training.config import TrainConfig
from kd_core.training.sampling import batch_plan

MetricsCallback = Callable[[dict[str, float]], None]
#: ``forward(model, batch, question_tokens)``: the output the objective reads (``question_tokens > 0``
#: asks a span-QA model for its question-passage attention as well).
Forward = Callable[[torch.nn.Module, dict[str, torch.Tensor], int], Any]
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
EXTRA_FILE = "extra.safetensors"
#: ``perturb(batch, epoch, rows)``: a batch changed as a pure function of the epoch and its rows.
Perturb = Callable[[dict[str, torch.Tensor], int, np.ndarray], dict[str, torch.Tensor]]


@dataclass
class TrainResult:
    """What a finished (or resumed) run reports."""

    steps: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int = 0


def unwrap(model: torch.nn.Module) -> PreTrainedModel:
    """The Hugging Face model inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return getattr(model, "module", model)


def _optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW (fused on CUDA); biases and LayerNorm weights get no weight decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=device.type == "cuda")


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device``: on CUDA from pinned memory, without blocking the host."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def micro_batches(rows: np.ndarray, count: int, weights: np.ndarray | None) -> list[tuple[np.ndarray, float]]:
    """``rows`` cut into ``count`` consecutive micro-batches, each with its share of the rows' example weight.

    The shares sum to 1: ``share_m = sum_{b in m} v_b / sum_b v_b`` (``v_b = 1`` without weights),
    so ``sum_m share_m * mean_m^{(v)} L`` is the weighted mean over all rows.
    """
    parts = [part for part in np.array_split(rows, count) if len(part)]
    mass = [float(weights[part].sum()) if weights is not None else float(len(part)) for part in parts]
    total = sum(mass)
    return [(part, m / total if total > 0 else 1.0 / len(parts)) for part, m in zip(parts, mass)]


def save_checkpoint(
    directory: Path, model: PreTrainedModel, optimizer: torch.optim.Optimizer, step: int, config: TrainConfig,
    extra: torch.nn.Module | None = None, metrics: Mapping[str, float] | None = None,
    scaler: torch.amp.GradScaler | None = None, precision: str = "fp32",
) -> None:
    """Write a complete checkpoint folder atomically (see the module doc); fp16's ``scaler`` state goes in it, and
    ``state.json`` names the ``precision`` the steps so far ran in."""
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    if extra is not None:
        save_file({k: v.contiguous() for k, v in extra.state_dict().items()}, str(partial / EXTRA_FILE))
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"rng.cuda.{device}": state for device, state in enumerate(torch.cuda.get_rng_state_all())}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"state.{index}.{key}"] = torch.as_tensor(value).contiguous()
    save_file(tensors, str(partial / OPTIMIZER_FILE))
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.state_dict()["param_groups"]]
    state = {"step": step, "param_groups": groups, "config": asdict(config), "metrics": dict(metrics or {}),
             "precision": precision}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    (partial / STATE_FILE).write_text(json.dumps(state, indent=1))
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)


def check_checkpoint(directory: Path, with_extra: bool = False) -> None:
    """The checkpoint folder ``directory`` is whole (module doc), checked before anything is restored from it, so a
    corrupt one leaves the model and optimizer as they were; else :class:`~kd_core.io.file_checks.CorruptFile`."""
    state = read_json_mapping(directory / STATE_FILE)
    if not isinstance(state.get("step"), int) or not isinstance(state.get("param_groups"), list):
        raise corrupt(directory / STATE_FILE, "not a checkpoint state (no step and param_groups)")
    check_model_folder(directory, require_weights=True)
    if "rng.torch" not in safetensors_header(directory / OPTIMIZER_FILE):
        raise corrupt(directory / OPTIMIZER_FILE, "no torch RNG state")
    if with_extra:
        safetensors_header(directory / EXTRA_FILE)


def resumable(directory: Path | None, with_extra: bool = False) -> bool:
    """Whether ``directory`` holds a checkpoint to resume from; a corrupt one is named in a warning line (training
    then starts from the start; every data-parallel rank judges the same files the same way)."""
    if directory is None or not directory.is_dir() or not any(directory.iterdir()):
        return False
    try:
        check_checkpoint(directory, with_extra)
    except CorruptFile as err:
        warn(err.source, err.what, "training starts from the start (the loop keeps one checkpoint)")
        return False
    return True


def load_checkpoint(directory: Path, model: PreTrainedModel, optimizer: torch.optim.Optimizer,
                    extra: torch.nn.Module | None = None,
                    scaler: torch.amp.GradScaler | None = None) -> tuple[int, dict[str, float]]:
    """Restore model, optimizer, RNG (``extra``, ``scaler``) from ``directory``; return its step and last metrics.

    CUDA RNG states are restored when the checkpoint has them and this machine has as many CUDA
    devices; otherwise (a GPU checkpoint resumed on CPU) they are not needed and are left.
    """
    state = json.loads((directory / STATE_FILE).read_text())
    weights = load_file(str(directory / "model.safetensors"))
    unexpected = model.load_state_dict(weights, strict=False).unexpected_keys
    if unexpected:
        raise ConfigError(str(directory), "model.safetensors", f"checkpoint has unknown weights {unexpected[:3]}")
    if extra is not None:
        extra.load_state_dict(load_file(str(directory / EXTRA_FILE)))
    tensors = load_file(str(directory / OPTIMIZER_FILE))
    torch.set_rng_state(tensors.pop("rng.torch"))
    cuda = [tensors.pop(key) for key in sorted((k for k in tensors if k.startswith("rng.cuda.")),
                                                key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        opt_state.setdefault(int(index), {})[name] = value
    saved = optimizer.state_dict()
    groups = [{**group, "params": saved["param_groups"][i]["params"]} for i, group in enumerate(state["param_groups"])]
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    return int(state["step"]), dict(state.get("metrics", {}))


def train(
    model: PreTrainedModel,
    arrays: Mapping[str, np.ndarray],
    objective: Objective,
    config: TrainConfig,
    *,
    callbacks: Sequence[MetricsCallback] = (),
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    desc: str = "train",
    shard: tuple[int, int] = (0, 1),
    forward: Forward | None = None,
    epoch_end: Callable[[int, int], None] | None = None,
    extra: torch.nn.Module | None = None,
    perturb: Perturb | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    compute: Compute = Compute(),
) -> TrainResult:
    """Train ``model`` in place on ``arrays`` (features, knowledge, optional ``weight``) for ``objective``.

    With ``checkpoint_dir`` set, a checkpoint found there is resumed from, and new ones are
    written during training (by rank 0); the final weights are those of the model object.
    ``forward(model, batch, question_tokens)`` reads the model's output for the objective (a
    task's ``forward``; by default the span-QA :func:`~kd_core.models.forward.qa_forward`);
    ``question_tokens`` is above 0 when the objective needs attention maps.
    ``epoch_end(epoch, step)`` is called after every epoch (1-based; a fractional last epoch
    counts), before its checkpoint is written. ``on_checkpoint(folder)`` is called after each
    checkpoint is written (to copy it to shared storage). ``extra``, ``perturb`` and
    ``compute`` (precision, accumulation, padding): module doc.
    """
    rank, world = shard
    if not 0 <= rank < world:
        raise ConfigError("train", "shard", f"rank {rank} is not in [0, {world})")
    missing = objective.missing_columns(arrays)
    if missing:
        term, column = missing[0]
        raise ConfigError("train", "knowledge", f"the loss term {term!r} needs the column {column!r}; it was not given "
                          "(no teacher knowledge, or knowledge stored without it)")
    size = len(arrays["input_ids"])
    if size == 0:
        raise ConfigError("train", "features", "no training features")
    accumulate = compute.accumulate_steps
    plan = batch_plan(config.sampler, dict(arrays), config.batch_size * accumulate, config.seed, shard,
                      group_lengths=compute.group_by_length)
    steps_per_epoch = plan.steps_per_epoch
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    warmup = max(1, round(config.warmup_ratio * total_steps)) if config.warmup_ratio > 0 else 0
    question_tokens = num_question_tokens(arrays) if objective.needs_attention else 0

    device = next(model.parameters()).device
    prepare_device(device)
    torch.manual_seed(config.seed)
    trained = torch.nn.ModuleList([model, extra]) if extra is not None else model
    optimizer = _optimizer(trained, config, device)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    scaler = compute.scaler(device)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    resuming = resumable(ckpt, extra is not None)
    start_step, metrics = load_checkpoint(ckpt, unwrap(model), optimizer, extra, scaler) if resuming else (0, {})
    scheduler.last_epoch = start_step  # the restored learning rate is the schedule's at this step
    weights = arrays.get("weight")
    no_sync = getattr(model, "no_sync", None) if world > 1 else None  # DDP: all-reduce on the last micro-batch only

    trained.train()
    bar = tqdm(total=total_steps, initial=start_step, desc=desc, disable=not progress, leave=False)
    step = start_step
    finite = torch.ones((), dtype=torch.bool, device=device)  # every loss since the last check was finite
    checked = step  # the last step whose losses are known to be finite
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        parts_sum: dict[str, torch.Tensor | float] = {}
        loss_sum = torch.zeros((), device=device)
        optimizer.zero_grad(set_to_none=True)
        micros = micro_batches(plan.rows(epoch, offset), accumulate, weights)
        for index, (rows, share) in enumerate(micros):
            batch = batch_at(arrays, rows, trim=compute.dynamic_padding)
            if perturb is not None:
                batch = perturb(batch, epoch, rows)
            batch = _to_device(batch, device)
            last = index == len(micros) - 1
            with contextlib.nullcontext() if last or no_sync is None else no_sync():
                with compute.autocast(device):
                    outputs = (forward or qa_forward)(model, batch, question_tokens)
                loss, parts = objective(outputs, batch, progress=step / total_steps)
                scaled = loss * share
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            loss_sum += scaled.detach()
            for key, value in parts.items():  # a term's value over the whole batch; its weight as it is
                parts_sum[key] = parts_sum.get(key, 0.0) + value * share if key.startswith("loss/") else value
        finite &= torch.isfinite(loss_sum)
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trained.parameters(), config.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        at_epoch_end = step % steps_per_epoch == 0 or step == total_steps
        due = at_epoch_end or (config.checkpoint_every and step % config.checkpoint_every == 0)
        logging = step % config.log_every == 0 or step == total_steps
        if logging or due:  # the one host synchronisation: are the losses since the last check finite?
            if not bool(finite):
                raise FloatingPointError(f"the loss became non-finite between steps {checked + 1} and {step}; "
                                         f"training stopped, nothing after step {checked} was saved")
            checked = step
        if logging:
            loss_value = float(loss_sum)
            metrics = {"step": step, "epoch": step / steps_per_epoch, "lr": lr, "loss": loss_value,
                       **{key: float(value) for key, value in parts_sum.items()}}
            bar.set_postfix(loss=f"{loss_value:.3f}")
            for callback in callbacks:
                callback(metrics)
        if at_epoch_end and epoch_end is not None:
            epoch_end(math.ceil(step / steps_per_epoch), step)
            trained.train()  # the hook may have evaluated the model
        if ckpt is not None and rank == 0 and due:
            save_checkpoint(ckpt, unwrap(model), optimizer, step, config, extra, metrics, scaler,
                            compute.resolved(device))
            if on_checkpoint is not None:
                on_checkpoint(ckpt)
    bar.close()
    trained.eval()
    return TrainResult(steps=step, last_metrics=metrics, resumed_from_step=start_step)
