"""Feature (and knowledge) columns as aligned NumPy arrays, served to PyTorch in batches.

Training and inference read features through :func:`feature_arrays`, which adds the
``span_mask`` (passage tokens plus the ``[CLS]`` position, the legal span ends) used by
every loss; knowledge columns (see :mod:`kd_core.knowledge`) and per-example weights are
extra arrays with the same first dimension. Knowledge columns are float16 views of a
memory-mapped table (or :class:`~kd_core.knowledge.table.Rows` over them): a batch reads its rows
and converts them to float32, so the table is never converted whole.

**Dynamic padding.** Rows are padded to the longest window of the whole set; a batch can be
cut to its own longest row (``trim=True``): every column with a sequence axis
(:data:`LENGTH_AXES`: the token columns, and the knowledge columns that are per position) keeps
its first ``L`` positions, ``L`` being the last position any row of the batch attends to
(``attention_mask``, padded on the right). The positions cut are padding, masked by every
model and loss, so outputs on the kept positions are the same up to rounding.
:func:`pad_positions` puts per-position outputs back to the full width (0 beyond ``L``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np
from datasets import Dataset

if TYPE_CHECKING:
    from torch import Tensor

FEATURE_TENSORS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "passage_mask",
    "question_mask",
    "start_position",
    "end_position",
)


#: Columns with a sequence (position) axis, and which axis it is: what :func:`batch_at` cuts.
LENGTH_AXES = {"input_ids": 1, "attention_mask": 1, "token_type_ids": 1, "passage_mask": 1, "question_mask": 1,
               "span_mask": 1, "teacher_start_logits": -1, "teacher_end_logits": -1, "teacher_attention": 1}


def feature_arrays(features: Dataset) -> dict[str, np.ndarray]:
    """The model-facing columns of a feature dataset as arrays, plus ``span_mask``."""
    table = features.with_format("numpy", columns=list(FEATURE_TENSORS))[:]
    arrays = {name: np.asarray(table[name]) for name in FEATURE_TENSORS}
    span_mask = arrays["passage_mask"].astype(bool).copy()
    span_mask[:, 0] = True
    arrays["span_mask"] = span_mask
    return arrays


def num_question_tokens(arrays: Mapping[str, np.ndarray]) -> int:
    """Longest question in a set of features, in tokens (the width ``Q`` of attention maps)."""
    return int(arrays["question_mask"].sum(axis=1).max()) if len(arrays["question_mask"]) else 0


def batch_length(arrays: Mapping[str, np.ndarray], indices: np.ndarray) -> int:
    """The positions rows ``indices`` need: one past the last position any of them attends to (at least 1)."""
    mask = arrays["attention_mask"][indices]
    used = np.flatnonzero(mask.any(axis=0))
    return int(used[-1]) + 1 if len(used) else 1


def batch_at(arrays: Mapping[str, np.ndarray], indices: np.ndarray, trim: bool = False) -> dict[str, Tensor]:
    """Rows ``indices`` of every array, as tensors; with ``trim``, cut to the batch's longest row (module doc).
    float16 columns (knowledge read in place) become float32 here, a batch at a time."""
    import torch  # here: the driver reads feature arrays without torch

    length = batch_length(arrays, indices) if trim and "attention_mask" in arrays else None
    batch = {}
    for name, values in arrays.items():
        rows = values[indices]
        if length is not None and name in LENGTH_AXES:
            rows = rows[(slice(None),) * (LENGTH_AXES[name] % rows.ndim) + (slice(0, length),)]
        batch[name] = torch.from_numpy(np.ascontiguousarray(rows, np.float32 if rows.dtype == np.float16 else None))
    return batch


def pad_positions(values: np.ndarray, width: int, axis: int = 1) -> np.ndarray:
    """``values`` widened to ``width`` along ``axis`` with zeros (outputs of a trimmed batch, full width again)."""
    missing = width - values.shape[axis]
    if missing <= 0:
        return values
    pad = [(0, 0)] * values.ndim
    pad[axis] = (0, missing)
    return np.pad(values, pad)


def iterate_batches(arrays: Mapping[str, np.ndarray], batch_size: int,
                    trim: bool = True) -> Iterator[dict[str, Tensor]]:
    """Batches in row order (for inference), each cut to its longest row unless ``trim=False``."""
    total = len(next(iter(arrays.values())))
    for start in range(0, total, batch_size):
        yield batch_at(arrays, np.arange(start, min(start + batch_size, total)), trim)
