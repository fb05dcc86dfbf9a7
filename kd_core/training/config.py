"""The training loop's settings, :class:`TrainConfig`, without the loop: plain data, no torch.

The recipes and step definitions hold a :class:`TrainConfig` per train step, so a job's options are
checked without importing the loop (:mod:`kd_core.training.loop`) or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from kd_core.io.errors import ConfigError
from kd_core.io.values import check_finite

#: How a train step draws its batches (:func:`kd_core.training.sampling.batch_plan`): shuffled rows, or MT-DNN's
#: single-task batches.
SAMPLERS = ("rows", "tasks")


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
        check_finite(self, "train")
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
