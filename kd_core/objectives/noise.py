"""The noisy teacher (Sau & Balasubramanian 2016): teacher logits perturbed afresh every epoch.

Every teacher logit a knowledge term reads is multiplied by ``1 + xi`` with
``xi ~ N(0, sigma^2)`` drawn independently per example, member and class:

    z'_{e,i} = (1 + xi_{e,i}) * z_i,

the paper's logit perturbation (a regulariser: the student sees a slightly different teacher
in every epoch ``e``). The noise of epoch ``e`` is a pure function of ``(seed, e)`` and the
row: one generator seeded with ``(seed, e)`` draws the whole epoch's ``[rows, ...]`` noise at
once, and a batch takes its rows of it. So the noise does not depend on batch order or size,
and a run resumed mid-epoch sees the same noise as an uninterrupted one. Departure: the
paper perturbs only a chosen share of each batch; here every example is perturbed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from kd_core.io.errors import ConfigError

#: The knowledge columns holding teacher logits (classification and span QA).
LOGIT_COLUMNS = ("teacher_logits", "teacher_start_logits", "teacher_end_logits")


def epoch_noise(shape: tuple[int, ...], sigma: float, seed: int, epoch: int) -> np.ndarray:
    """``xi ~ N(0, sigma^2)`` of shape ``shape`` for ``epoch``, from a generator seeded with ``(seed, epoch)``."""
    return (sigma * np.random.default_rng([seed, epoch]).standard_normal(shape)).astype(np.float32)


@dataclass
class NoisyTeacher:
    """``perturb(batch, epoch, rows)`` for :func:`kd_core.training.loop.train` (module doc).

    ``sizes`` maps each logit column to its full array shape (all rows); each column gets a
    stream of its own (the seed is offset by the column's place in :data:`LOGIT_COLUMNS`).
    """

    sigma: float
    seed: int
    sizes: dict[str, tuple[int, ...]]
    _cache: dict[tuple[str, int], np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.sigma < 0:
            raise ConfigError("noise", "sigma", f"must be >= 0, got {self.sigma}")
        if not self.sizes:
            raise ConfigError("noise", "knowledge", "a noisy teacher needs teacher logits to perturb")

    def noise(self, column: str, epoch: int) -> np.ndarray:
        """The whole epoch's noise of ``column`` (kept for the current epoch only)."""
        key = (column, epoch)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[1] == epoch}
            self._cache[key] = epoch_noise(self.sizes[column], self.sigma, self.seed + 7919 * LOGIT_COLUMNS.index(column),
                                           epoch)
        return self._cache[key]

    def __call__(self, batch: dict[str, torch.Tensor], epoch: int, rows: np.ndarray) -> dict[str, torch.Tensor]:
        out = dict(batch)
        for column in self.sizes:
            # a batch cut to its longest row (kd_core.data.batches) keeps the first positions: the noise too
            xi = torch.from_numpy(self.noise(column, epoch)[rows][..., :batch[column].shape[-1]])
            out[column] = batch[column].float() * (1.0 + xi.to(batch[column].device))
        return out


def noisy_teacher(arrays: dict[str, np.ndarray], sigma: float, seed: int) -> NoisyTeacher:
    """A :class:`NoisyTeacher` for the logit columns present in ``arrays``."""
    return NoisyTeacher(sigma, seed, {c: tuple(arrays[c].shape) for c in LOGIT_COLUMNS if c in arrays})
