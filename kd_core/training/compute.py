"""How steps use the hardware: numeric precision, gradient accumulation, padding and length grouping.

:class:`Compute` is one job's setting for every step it runs (train, collect, evaluate,
speed); it travels with the :class:`~kd_core.engine.workspace.Workspace` to every Ray worker
and Tune trial. None of it changes what a step computes beyond rounding, except
``accumulate_steps``, which sets the optimizer's batch (see below).

* ``precision``: ``auto`` (default) is bf16 autocast on a CUDA device that supports it and
  fp32 elsewhere (CPU, older GPUs); ``bf16`` and ``fp16`` ask for autocast explicitly (bf16
  autocast also runs on CPU; fp16 adds a gradient scaler, :class:`torch.amp.GradScaler`);
  ``fp32`` turns autocast off. Weights, optimizer states, checkpoints and saved models stay
  fp32 (autocast casts per operation), and knowledge tables keep their schema. On CUDA,
  fp32 matmuls use TF32 (``torch.set_float32_matmul_precision("high")``) and AdamW runs fused.
  Only the model's forward runs under autocast: every objective is computed outside it, and
  the losses cast logits to fp32 before their softmaxes (:mod:`kd_core.objectives.losses`),
  so losses and softmaxes of the objectives are fp32.
* ``accumulate_steps = K``: one optimizer step takes ``K`` micro-batches of ``batch_size``
  rows and sums their gradients, each micro-batch's loss scaled by its share of the step's
  example weight, so a step equals one batch of ``K * batch_size`` rows (up to rounding and
  dropout draws; :func:`kd_core.training.loop.train`). As in Hugging Face's Trainer, the
  effective batch is ``batch_size * accumulate_steps`` (per data-parallel worker).
* ``dynamic_padding`` (default on): a training batch is cut to its longest row
  (:func:`kd_core.data.batches.batch_at`); inference always is, with outputs padded back.
  The positions cut are padding, which every model masks, so the result is the same up to
  rounding.
* ``group_by_length``: training batches take rows of similar length (seeded, so resumed and
  repeated runs see the same batches; :mod:`kd_core.training.sampling`), so less is padding.

This module imports torch only when a device is asked about, so option parsing stays light.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kd_core.io.errors import ConfigError
from kd_core.io.options import option

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class Compute:
    """See the module doc; validated at construction."""

    precision: str = option("auto", "numeric precision: auto (bf16 autocast on a CUDA GPU that supports it, fp32 "
                            "elsewhere), bf16, fp16 (with a gradient scaler) or fp32", "compute", choices=PRECISIONS)
    accumulate_steps: int = option(1, "micro-batches summed per optimizer step (effective batch = batch size x N)",
                                   "compute")
    dynamic_padding: bool = option(True, "cut each training batch to its longest row", "compute")
    group_by_length: bool = option(False, "batch rows of similar length together (seeded; less padding)", "compute")

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError("compute", "precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if isinstance(self.accumulate_steps, bool) or not isinstance(self.accumulate_steps, int) \
                or self.accumulate_steps < 1:
            raise ConfigError("compute", "accumulate_steps", f"must be an integer >= 1, got {self.accumulate_steps!r}")

    def resolved(self, device: str | torch.device) -> str:
        """The precision steps use on ``device``: ``bf16``, ``fp16`` or ``fp32`` (``auto`` decided)."""
        if self.precision != "auto":
            return self.precision
        import torch

        return "bf16" if torch.device(device).type == "cuda" and _cuda_bf16() else "fp32"

    def autocast(self, device: str | torch.device) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of this precision on ``device`` (no autocast for fp32)."""
        import torch

        precision = self.resolved(device)
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(torch.device(device).type, dtype=dtype)

    def scaler(self, device: str | torch.device) -> torch.amp.GradScaler | None:
        """fp16's gradient scaler (``None`` for the other precisions)."""
        import torch

        if self.resolved(device) != "fp16":
            return None
        return torch.amp.GradScaler(torch.device(device).type)


@functools.cache
def _cuda_bf16() -> bool:
    """Whether this process's CUDA device runs bf16 (asked once: autocast asks at every micro-batch)."""
    import torch

    return torch.cuda.is_bf16_supported()


def local_device() -> str:
    """Where a single-process run puts its models: ``cuda:0`` when this process sees a GPU, else ``cpu``."""
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def prepare_device(device: str | torch.device) -> None:
    """On CUDA: TF32 for the fp32 matmuls (autocast runs the others in bf16/fp16). Nothing elsewhere."""
    import torch

    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high")


@contextlib.contextmanager
def inference(compute: Compute, device: str | torch.device) -> Iterator[None]:
    """The context a collect, evaluate or speed step runs its model in: :func:`prepare_device`, then autocast."""
    prepare_device(device)
    with compute.autocast(device):
        yield
