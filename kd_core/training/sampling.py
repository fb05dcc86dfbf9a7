"""Which rows make each training batch: plain shuffled rows, or MT-DNN's single-task batches.

A :class:`BatchPlan` gives the number of steps per epoch and, for ``(epoch, offset)``, the
rows of that batch. Plans are pure functions of their seed and the epoch, so a run resumed
at any step sees the same batches as an uninterrupted one.

* :class:`RowBatches`: epoch ``e`` is a permutation drawn from a generator seeded with
  ``(seed, e)``, cut into consecutive batches. Data parallel (``shard=(rank, world)``): each
  global batch of ``batch_size * world`` rows is dealt out to the ranks (the last one is
  completed from the start of the epoch order, so every rank gets rows).
* :class:`TaskBatches` (MT-DNN's Algorithm 1): every task's rows are shuffled and packed
  into mini-batches of that task only, then all tasks' batches are shuffled together; each
  row is seen exactly once per epoch, and an epoch has ``sum_t ceil(n_t / batch_size)``
  steps.

**Length grouping** (``group_by_length``, either plan): after shuffling, consecutive runs of
``MEGABATCH`` batches are sorted by row length (longest first, ties in shuffled order) and cut
into batches, so a batch holds rows of similar length and a cut-to-length batch
(:func:`kd_core.data.batches.batch_at`) carries little padding; the batches of a run are then
put in a seeded random order, so training does not sweep from long to short rows within each
run as a plain sorted run would. The plan stays a pure function of ``(seed, epoch)``.
A row's length is the number of positions it attends to (``attention_mask``).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch

from kd_core.io.errors import ConfigError
from kd_core.training.config import SAMPLERS

#: Batches per length-sorted run (Hugging Face's ``LengthGroupedSampler`` uses 50 too).
MEGABATCH = 50


class BatchPlan(Protocol):
    """See the module doc."""

    steps_per_epoch: int

    def rows(self, epoch: int, offset: int) -> np.ndarray:
        """This process's rows of batch ``offset`` of epoch ``epoch``."""
        ...


def _permutation(size: int, seed: int) -> np.ndarray:
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed)).numpy()


def group_by_length(order: np.ndarray, lengths: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """``order`` with each run of ``MEGABATCH * batch_size`` rows sorted by length (stable), then the run's full
    batches put in an order drawn with ``seed``, so that a run does not go from its longest batch to its shortest
    (a partial last batch stays last, where every plan has it)."""
    run = MEGABATCH * batch_size
    out = []
    for index, start in enumerate(range(0, len(order), run)):
        part = order[start : start + run]
        part = part[np.argsort(-lengths[part], kind="stable")]
        full = len(part) // batch_size
        blocks = [part[i * batch_size : (i + 1) * batch_size] for i in _permutation(full, seed * 1009 + index)]
        out += [*blocks, part[full * batch_size :]]
    return np.concatenate(out) if out else order


class RowBatches:
    """Shuffled rows in consecutive batches (module doc); with ``lengths``, grouped by length."""

    def __init__(self, size: int, batch_size: int, seed: int, shard: tuple[int, int] = (0, 1),
                 lengths: np.ndarray | None = None) -> None:
        self.size, self.seed, self.shard, self.lengths = size, seed, shard, lengths
        self.global_batch = batch_size * shard[1]
        self.steps_per_epoch = math.ceil(size / self.global_batch)
        self._epoch: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        """Every row of epoch ``epoch``, in the order they are trained on (all ranks together)."""
        if self._epoch is None or self._epoch[0] != epoch:
            order = _permutation(self.size, self.seed * 100_003 + epoch)
            if self.lengths is not None:
                order = group_by_length(order, self.lengths, self.global_batch, self.seed * 100_003 + epoch)
            self._epoch = (epoch, order)
        return self._epoch[1]

    def rows(self, epoch: int, offset: int) -> np.ndarray:
        order = self.order(epoch)
        rows = order[offset * self.global_batch : (offset + 1) * self.global_batch]
        rank, world = self.shard
        if world == 1:
            return rows
        if len(rows) < self.global_batch:
            rows = np.concatenate([rows, np.resize(order, self.global_batch - len(rows))])
        return rows[rank::world]


class TaskBatches:
    """Single-task batches shuffled across tasks (module doc); ``tasks[i]`` is row ``i``'s task index."""

    def __init__(self, tasks: np.ndarray, batch_size: int, seed: int, shard: tuple[int, int] = (0, 1),
                 lengths: np.ndarray | None = None) -> None:
        if shard[1] != 1:
            raise ConfigError("train", "sampler", "single-task batches are not split across data-parallel workers")
        self.tasks, self.batch_size, self.seed, self.lengths = np.asarray(tasks), batch_size, seed, lengths
        self.groups = [np.flatnonzero(self.tasks == t) for t in np.unique(self.tasks)]
        self.steps_per_epoch = sum(math.ceil(len(g) / batch_size) for g in self.groups)
        self._epoch: tuple[int, list[np.ndarray]] | None = None

    def batches(self, epoch: int) -> list[np.ndarray]:
        """Every batch of epoch ``epoch``, in the order they are trained on."""
        if self._epoch is None or self._epoch[0] != epoch:
            batches = []
            for index, group in enumerate(self.groups):
                shuffled = group[_permutation(len(group), (self.seed * 100_003 + epoch) * 101 + index)]
                if self.lengths is not None:
                    shuffled = group_by_length(shuffled, self.lengths, self.batch_size,
                                               (self.seed * 100_003 + epoch) * 101 + index)
                batches += [shuffled[i : i + self.batch_size] for i in range(0, len(shuffled), self.batch_size)]
            order = _permutation(len(batches), self.seed * 100_003 + epoch)
            self._epoch = (epoch, [batches[i] for i in order])
        return self._epoch[1]

    def rows(self, epoch: int, offset: int) -> np.ndarray:
        return self.batches(epoch)[offset]


def row_lengths(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Positions each row attends to (``attention_mask`` summed; the full width without a mask)."""
    if "attention_mask" in arrays:
        return np.asarray(arrays["attention_mask"]).sum(axis=1)
    ids = np.asarray(arrays["input_ids"])
    return np.full(len(ids), ids.shape[1] if ids.ndim > 1 else 1)


def batch_plan(sampler: str, arrays: dict[str, np.ndarray], batch_size: int, seed: int,
               shard: tuple[int, int] = (0, 1), group_lengths: bool = False) -> BatchPlan:
    """The plan ``sampler`` (:data:`SAMPLERS`) makes for ``arrays`` (``tasks`` reads their ``task_index``);
    ``group_lengths``: batches of similar length (module doc)."""
    lengths = row_lengths(arrays) if group_lengths else None
    if sampler == "rows":
        return RowBatches(len(arrays["input_ids"]), batch_size, seed, shard, lengths)
    if sampler == "tasks":
        if "task_index" not in arrays:
            raise ConfigError("train", "sampler", "single-task batches need a task index per row (a multi-task set)")
        return TaskBatches(arrays["task_index"], batch_size, seed, shard, lengths)
    raise ConfigError("train", "sampler", f"must be one of {SAMPLERS}, got {sampler!r}")
