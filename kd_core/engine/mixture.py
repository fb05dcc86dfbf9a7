"""A train step's data: one split (plus knowledge), or a weighted mixture of splits.

A mixture (:class:`~kd_core.engine.steps.Source` s; IMM's ``phi_i`` on the other domains)
up-samples every part to the size of the largest (:func:`upsample_indices`), so each part
contributes equally often per epoch, and gives every row its part's weight in a ``weight``
column; the objective then averages per-example losses as ``sum_b w_b L_b / sum_b w_b``
(:func:`kd_core.objectives.losses.weighted_mean`). A one-part mixture is the split as it is, with the
weight column. Knowledge is read per part, checked against that part's features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from kd_core.engine.steps import Source
from kd_core.engine.workspace import Workspace

#: ``knowledge(step name, tokenizer, split)``: a table's training arrays aligned with those features.
KnowledgeReader = Callable[[str, str, str], dict[str, np.ndarray]]


def upsample_indices(size: int, target: int, seed: int) -> np.ndarray:
    """Rows of a ``size``-row set repeated up to ``target`` rows: whole copies, then a seeded sample.

    ``target // size`` full copies of ``0..size-1`` and ``target % size`` rows drawn without
    replacement, so every row appears ``floor(target/size)`` or one more times.
    """
    if size < 1 or target < size:
        raise ValueError(f"cannot up-sample {size} rows to {target}")
    copies, rest = divmod(target, size)
    extra = np.random.default_rng(seed).choice(size, rest, replace=False) if rest else np.empty(0, np.int64)
    return np.concatenate([np.tile(np.arange(size), copies), np.sort(extra)]).astype(np.int64)


def mixture_arrays(sources: Sequence[Source], tokenizer: str, ws: Workspace, seed: int,
                   knowledge: KnowledgeReader) -> dict[str, np.ndarray]:
    """The training arrays of a mixture (module doc); part ``i`` is up-sampled with seed ``seed * 1009 + i``."""
    parts = []
    for source in sources:
        _, arrays = ws.features(tokenizer, source.split)
        if source.knowledge is not None:
            arrays = {**arrays, **knowledge(source.knowledge, tokenizer, source.split)}
        parts.append(arrays)
    target = max(len(arrays["input_ids"]) for arrays in parts)
    pieces = []
    for index, (source, arrays) in enumerate(zip(sources, parts)):
        size = len(arrays["input_ids"])
        rows = upsample_indices(size, target, seed * 1_009 + index) if len(sources) > 1 else np.arange(size)
        piece = {name: values[rows] for name, values in arrays.items()}
        piece["weight"] = np.full(len(rows), source.weight, np.float32)
        pieces.append(piece)
    return {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}
