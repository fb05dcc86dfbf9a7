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
  moved to the checkpoint's step).
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
* A loss that is not finite stops training before the optimizer step, so no NaN reaches
  the weights or a checkpoint.
* Every ``log_every`` steps the callbacks receive a dict of metrics (step, epoch, lr, total
  loss and each term's value and weight): cluster code plugs MLflow in here. A tqdm bar
  shows progress.
"""

from __future__ import annotations

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
from kd_core.models.forward import qa_forward
from kd_core.objectives.terms import Objective
from kd_core.training.sampling import SAMPLERS, batch_plan

MetricsCallback = Callable[[dict[str, float]], None]
#: ``forward(model, batch, question_tokens)``: the output the objective reads (``question_tokens > 0``
#: asks a span-QA model for its question-passage attention as well).
Forward = Callable[[torch.nn.Module, dict[str, torch.Tensor], int], Any]
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
EXTRA_FILE = "extra.safetensors"
#: ``perturb(batch, epoch, rows)``: a batch changed as a pure function of the epoch and its rows.
Perturb = Callable[[dict[str, torch.Tensor], int, np.ndarray], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings, validated at construction."""

    epochs: float = 2.0
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end of each epoch
    sampler: str = "rows"  # batches of shuffled rows, or single-task batches ("tasks"; kd_core.training.sampling)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs > 0,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "max_grad_norm": self.max_grad_norm > 0,
            "log_every": self.log_every >= 1,
            "checkpoint_every": self.checkpoint_every >= 0,
            "sampler": self.sampler in SAMPLERS,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError("train", name, f"invalid value {getattr(self, name)!r}")


@dataclass
class TrainResult:
    """What a finished (or resumed) run reports."""

    steps: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int = 0


def unwrap(model: torch.nn.Module) -> PreTrainedModel:
    """The Hugging Face model inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return getattr(model, "module", model)


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights get no weight decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def save_checkpoint(
    directory: Path, model: PreTrainedModel, optimizer: torch.optim.Optimizer, step: int, config: TrainConfig,
    extra: torch.nn.Module | None = None, metrics: Mapping[str, float] | None = None,
) -> None:
    """Write a complete checkpoint folder atomically (see the module doc)."""
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
    (partial / STATE_FILE).write_text(json.dumps({"step": step, "param_groups": groups, "config": asdict(config),
                                                  "metrics": dict(metrics or {})}, indent=1))
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)


def load_checkpoint(directory: Path, model: PreTrainedModel, optimizer: torch.optim.Optimizer,
                    extra: torch.nn.Module | None = None) -> tuple[int, dict[str, float]]:
    """Restore model, optimizer, RNG (and ``extra``) from ``directory``; return its step and last metrics.

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
) -> TrainResult:
    """Train ``model`` in place on ``arrays`` (features, knowledge, optional ``weight``) for ``objective``.

    With ``checkpoint_dir`` set, a checkpoint found there is resumed from, and new ones are
    written during training (by rank 0); the final weights are those of the model object.
    ``forward(model, batch, question_tokens)`` reads the model's output for the objective (a
    task's ``forward``; by default the span-QA :func:`~kd_core.models.forward.qa_forward`);
    ``question_tokens`` is above 0 when the objective needs attention maps.
    ``epoch_end(epoch, step)`` is called after every epoch (1-based; a fractional last epoch
    counts), before its checkpoint is written. ``on_checkpoint(folder)`` is called after each
    checkpoint is written (to copy it to shared storage). ``extra`` and ``perturb``: module doc.
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
    plan = batch_plan(config.sampler, dict(arrays), config.batch_size, config.seed, shard)
    steps_per_epoch = plan.steps_per_epoch
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    warmup = max(1, round(config.warmup_ratio * total_steps)) if config.warmup_ratio > 0 else 0
    question_tokens = num_question_tokens(arrays) if objective.needs_attention else 0

    torch.manual_seed(config.seed)
    trained = torch.nn.ModuleList([model, extra]) if extra is not None else model
    optimizer = _optimizer(trained, config)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    resuming = ckpt is not None and (ckpt / STATE_FILE).exists()
    start_step, metrics = load_checkpoint(ckpt, unwrap(model), optimizer, extra) if resuming else (0, {})
    scheduler.last_epoch = start_step  # the restored learning rate is the schedule's at this step

    device = next(model.parameters()).device
    trained.train()
    bar = tqdm(total=total_steps, initial=start_step, desc=desc, disable=not progress, leave=False)
    step = start_step
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        rows = plan.rows(epoch, offset)
        batch = batch_at(arrays, rows)
        if perturb is not None:
            batch = perturb(batch, epoch, rows)
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = (forward or qa_forward)(model, batch, question_tokens)
        loss, parts = objective(outputs, batch, progress=step / total_steps)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {step + 1}; no update was made")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), config.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        if step % config.log_every == 0 or step == total_steps:
            metrics = {"step": step, "epoch": step / steps_per_epoch, "lr": lr, "loss": loss_value, **parts}
            bar.set_postfix(loss=f"{loss_value:.3f}")
            for callback in callbacks:
                callback(metrics)
        at_epoch_end = step % steps_per_epoch == 0 or step == total_steps
        if at_epoch_end and epoch_end is not None:
            epoch_end(math.ceil(step / steps_per_epoch), step)
            trained.train()  # the hook may have evaluated the model
        due = at_epoch_end or (config.checkpoint_every and step % config.checkpoint_every == 0)
        if ckpt is not None and rank == 0 and due:
            save_checkpoint(ckpt, unwrap(model), optimizer, step, config, extra, metrics)
            if on_checkpoint is not None:
                on_checkpoint(ckpt)
    bar.close()
    trained.eval()
    return TrainResult(steps=step, last_metrics=metrics, resumed_from_step=start_step)
