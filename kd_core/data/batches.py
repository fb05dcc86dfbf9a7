"""Feature (and knowledge) columns as aligned NumPy arrays, served to PyTorch in batches.

Training and inference read features through :func:`feature_arrays`, which adds the
``span_mask`` (passage tokens plus the ``[CLS]`` position, the legal span ends) used by
every loss; knowledge columns (see :mod:`kd_core.knowledge`) and per-example weights are
extra arrays with the same first dimension.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
from datasets import Dataset
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


def batch_at(arrays: Mapping[str, np.ndarray], indices: np.ndarray) -> dict[str, Tensor]:
    """Rows ``indices`` of every array, as tensors."""
    return {name: torch.from_numpy(np.ascontiguousarray(values[indices])) for name, values in arrays.items()}


def iterate_batches(arrays: Mapping[str, np.ndarray], batch_size: int) -> Iterator[dict[str, Tensor]]:
    """Batches in row order (for inference)."""
    total = len(next(iter(arrays.values())))
    for start in range(0, total, batch_size):
        yield batch_at(arrays, np.arange(start, min(start + batch_size, total)))
