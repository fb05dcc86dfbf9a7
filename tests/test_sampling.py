"""Batch plans: shuffled rows (data-parallel shares) and MT-DNN's single-task batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kd_core.io.errors import ConfigError
from kd_core.training.sampling import RowBatches, TaskBatches, batch_plan


def test_data_parallel_shards_split_each_global_batch():
    seed, epoch = 3, 1
    order = torch.randperm(10, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    rank0, rank1 = RowBatches(10, 4, seed, (0, 2)), RowBatches(10, 4, seed, (1, 2))
    assert rank0.steps_per_epoch == 2
    # global batch of 8 = 2 ranks x 4; batch 1 holds the epoch's rows 8, 9 and is completed from its start
    assert rank0.rows(epoch, 1).tolist() == [order[8], order[0], order[2], order[4]]
    assert rank1.rows(epoch, 1).tolist() == [order[9], order[1], order[3], order[5]]
    assert RowBatches(10, 4, seed).rows(epoch, 0).tolist() == order[:4]


def test_task_batches_are_single_task_and_cover_every_row_once_per_epoch():
    tasks = np.array([0] * 7 + [1] * 3 + [2] * 5)
    rng = np.random.default_rng(0)
    tasks = tasks[rng.permutation(len(tasks))]  # rows of a task need not be contiguous
    plan = TaskBatches(tasks, 2, seed=5)
    assert plan.steps_per_epoch == 4 + 2 + 3  # ceil(7/2) + ceil(3/2) + ceil(5/2)
    for epoch in range(3):
        batches = [plan.rows(epoch, i) for i in range(plan.steps_per_epoch)]
        assert all(len(set(tasks[b])) == 1 for b in batches)
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(tasks)))


def test_task_batches_are_shuffled_across_tasks_and_seeded():
    tasks = np.repeat(np.arange(4), 20)
    plan = TaskBatches(tasks, 4, seed=1)
    order = [int(tasks[plan.rows(0, i)[0]]) for i in range(plan.steps_per_epoch)]
    assert order != sorted(order)  # not task by task
    assert [plan.rows(0, i).tolist() for i in range(20)] == [TaskBatches(tasks, 4, seed=1).rows(0, i).tolist()
                                                             for i in range(20)]
    assert [plan.rows(1, i).tolist() for i in range(20)] != [plan.rows(0, i).tolist() for i in range(20)]
    assert [plan.rows(0, i).tolist() for i in range(20)] != [TaskBatches(tasks, 4, seed=2).rows(0, i).tolist()
                                                             for i in range(20)]


def test_task_sampler_needs_task_indices_and_one_process():
    with pytest.raises(ConfigError, match="task index"):
        batch_plan("tasks", {"input_ids": np.zeros((4, 2))}, 2, 0)
    with pytest.raises(ConfigError, match="data-parallel"):
        TaskBatches(np.zeros(4), 2, 0, (0, 2))
    with pytest.raises(ConfigError, match="sampler"):
        batch_plan("mixed", {"input_ids": np.zeros((4, 2))}, 2, 0)


def _mask(lengths, width=64):
    return {"input_ids": np.zeros((len(lengths), width), np.int64),
            "attention_mask": (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)}


def test_length_grouped_batches_cover_every_row_once_are_seeded_and_carry_less_padding():
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 64, size=1000)
    arrays = _mask(lengths)
    grouped, plain = batch_plan("rows", arrays, 8, seed=3, group_lengths=True), batch_plan("rows", arrays, 8, seed=3)
    again = batch_plan("rows", arrays, 8, seed=3, group_lengths=True)

    def padding(plan, epoch):  # positions a batch cut to its longest row holds beyond its rows' lengths
        return sum(len(r) * lengths[r].max() - lengths[r].sum() for r in (plan.rows(epoch, i)
                                                                          for i in range(plan.steps_per_epoch)))

    for epoch in range(2):
        rows = np.concatenate([grouped.rows(epoch, i) for i in range(grouped.steps_per_epoch)])
        assert sorted(rows.tolist()) == list(range(1000))
        assert all(np.array_equal(grouped.rows(epoch, i), again.rows(epoch, i)) for i in range(grouped.steps_per_epoch))
        # by hand: 1000 rows of lengths uniform in [5, 64): random batches of 8 waste ~40%, sorted runs of 400 ~2%
        assert padding(grouped, epoch) < 0.1 * padding(plain, epoch)
    assert not np.array_equal(grouped.rows(0, 0), grouped.rows(1, 0))  # each epoch is its own shuffle


def test_length_grouping_keeps_task_batches_single_task():
    tasks = np.repeat([0, 1], 150)
    lengths = np.random.default_rng(2).integers(3, 40, size=300)
    plan = batch_plan("tasks", {**_mask(lengths, 40), "task_index": tasks}, 10, seed=0, group_lengths=True)
    batches = [plan.rows(0, i) for i in range(plan.steps_per_epoch)]
    assert all(len(set(tasks[b])) == 1 for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == list(range(300))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 3  # sorted runs of 150 rows with lengths in [3, 40): neighbours differ by a token or so


def test_length_grouped_batches_do_not_sweep_from_long_to_short_within_a_run():
    lengths = np.random.default_rng(3).integers(5, 64, size=800)  # one run of 50 batches of 16
    plan = batch_plan("rows", _mask(lengths), 16, seed=0, group_lengths=True)
    widths = [lengths[plan.rows(0, i)].max() for i in range(plan.steps_per_epoch)]
    assert sorted(widths, reverse=True) != widths  # the sorted run's batches come in a shuffled order
    assert abs(np.corrcoef(np.arange(len(widths)), widths)[0, 1]) < 0.5
