"""Span-QA teacher knowledge: what teachers know about each feature, as Arrow tables keyed by feature id.

A **member table** holds one teacher's outputs per feature:

* ``start_logits`` / ``end_logits``: raw logits (``S`` float16 each). We store logits, not
  probabilities, so that soft targets at any temperature ``tau`` can be re-derived. float16
  halves the table; on a trained teacher (logits in [-6, 6]) it moved no soft target by
  more than 5.5e-4 absolute, 0.28% relative (tau = 1; less at higher tau);
* ``topk_start`` / ``topk_end`` / ``topk_score``: the member's ``K`` best legal spans with
  score ``log p_start(i) + log p_end(j)`` (normalised, so comparable across members);
* ``attention`` (optional): the question-passage attention ``[S, Q]`` (float16).

:func:`merge_knowledge` combines the ``N`` members of an ensemble once into the table that
training reads: the members' logits side by side (``[N, S]``; losses average their
*probabilities* at the temperature they need), all members' top-K spans, the averaged
attention, and the **confusing answer**, a wrong answer (its text has zero F1 overlap with
every gold answer) that the student's gold span must beat by a margin. Two rules
(:data:`CONFUSING_RULES`):

* ``"question"`` (Hu et al. 2018, the default): per *question*, over every member's top-K
  spans in every window of the question, the wrong answer with "the highest confidence score
  among all models", a member's own ``log p_start(i) + log p_end(j)``. Each window of the
  question that contains that answer's text span gets its token positions; a window that
  does not gets none;
* ``"window"``: per *window*, among the ``N*K`` candidate spans of that window, the wrong one
  with the highest ensemble confidence ``q_start(i) * q_end(j)`` (``q`` = member-averaged
  probabilities at tau = 1).

Either way ``-1`` marks "no confusing answer" (every candidate overlaps a gold answer, or the
question has no gold answer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from transformers import PreTrainedModel

from kd_core.data.batches import num_question_tokens
from kd_core.evaluation.decode import batch_top_k_spans
from kd_core.evaluation.predict import run_model
from kd_core.evaluation.squad_metrics import normalize_answer, token_f1_zero
from kd_core.io.errors import ConfigError, DataError
from kd_core.knowledge.confusing import CONFUSING_RULES
from kd_core.knowledge.table import (
    METADATA_KEY,
    column_rows,
    fixed,
    metadata_entry,
    row_indices,
    unfixed,
    with_metadata,
)
from kd_core.objectives.losses import masked_log_softmax

ConfusingRule = Literal["question", "window"]


@dataclass(frozen=True)
class KnowledgeConfig:
    """How teachers are read: top-K spans, longest answer, attention maps, batch size."""

    top_k: int = 4
    max_answer_length: int = 30
    with_attention: bool = True
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError("knowledge", "top_k", f"must be >= 1, got {self.top_k}")
        if self.max_answer_length < 1:
            raise ConfigError("knowledge", "max_answer_length", f"must be >= 1, got {self.max_answer_length}")
        if self.batch_size < 1:
            raise ConfigError("knowledge", "batch_size", f"must be >= 1, got {self.batch_size}")


def knowledge_metadata(table: pa.Table) -> dict[str, int | str]:
    """Shapes and kind recorded with a span knowledge table."""
    return metadata_entry(table, METADATA_KEY)


def member_table(
    feature_ids: Sequence[str],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    top_start: np.ndarray,
    top_end: np.ndarray,
    top_score: np.ndarray,
    attention: np.ndarray | None = None,
) -> pa.Table:
    """A member table from arrays: logits ``[F, S]``, top-K ``[F, K]``, attention ``[F, S, Q]``."""
    columns = {
        "feature_id": pa.array(list(feature_ids), pa.string()),
        "start_logits": fixed(np.asarray(start_logits, np.float16), pa.float16()),
        "end_logits": fixed(np.asarray(end_logits, np.float16), pa.float16()),
        "topk_start": fixed(np.asarray(top_start, np.int32), pa.int32()),
        "topk_end": fixed(np.asarray(top_end, np.int32), pa.int32()),
        "topk_score": fixed(np.asarray(top_score, np.float32), pa.float32()),
    }
    if attention is not None:
        columns["attention"] = fixed(np.asarray(attention, np.float16), pa.float16())
    meta = {
        "kind": "member", "members": 1, "seq_len": int(start_logits.shape[1]), "top_k": int(top_start.shape[1]),
        "num_question_tokens": int(attention.shape[2]) if attention is not None else 0,
    }
    return with_metadata(pa.table(columns), {METADATA_KEY: meta})


def member_knowledge(
    model: PreTrainedModel,
    arrays: Mapping[str, np.ndarray],
    feature_ids: Sequence[str],
    config: KnowledgeConfig,
    progress: bool = False,
) -> pa.Table:
    """One teacher's knowledge over a feature set (see the module doc)."""
    q = num_question_tokens(arrays) if config.with_attention else 0
    outputs = run_model(model, arrays, config.batch_size, q, progress=progress, desc="teacher")
    span_mask = torch.from_numpy(arrays["span_mask"])
    top_start, top_end, top_score = batch_top_k_spans(
        masked_log_softmax(torch.from_numpy(outputs.start_logits), span_mask),
        masked_log_softmax(torch.from_numpy(outputs.end_logits), span_mask),
        torch.from_numpy(arrays["passage_mask"]).bool(),
        config.top_k,
        config.max_answer_length,
    )
    return member_table(feature_ids, outputs.start_logits, outputs.end_logits, top_start.numpy(), top_end.numpy(),
                        top_score.numpy(), outputs.attention)


def _averaged_probabilities(logits: np.ndarray, span_mask: np.ndarray) -> np.ndarray:
    """``1/N sum_n softmax(t_n)`` over legal positions; ``logits`` is ``[F, N, S]``."""
    mask = torch.from_numpy(span_mask).unsqueeze(1).expand(-1, logits.shape[1], -1)
    return masked_log_softmax(torch.from_numpy(logits), mask).exp().mean(dim=1).numpy()


def _wrong(text: str, references: Sequence[str]) -> bool:
    """A candidate answer that counts as confusing: it says something and overlaps no reference."""
    return bool(normalize_answer(text)) and token_f1_zero(text, references)


def choose_confusing_answers(
    candidates_start: np.ndarray,
    candidates_end: np.ndarray,
    q_start: np.ndarray,
    q_end: np.ndarray,
    contexts: Sequence[str],
    offsets: Sequence[Sequence[Sequence[int]]],
    references: Sequence[Sequence[str]],
) -> tuple[np.ndarray, np.ndarray]:
    """The ``"window"`` rule: per feature, the most confident candidate span with zero F1 against every reference.

    ``candidates_*`` are ``[F, C]`` token positions (``-1`` = no candidate); confidence is
    ``q_start[f, i] * q_end[f, j]``; texts that normalise to nothing (e.g. "the") never qualify.
    Returns ``(start, end)`` arrays with ``-1`` where no candidate qualifies.
    """
    n = len(candidates_start)
    chosen_start = np.full(n, -1, dtype=np.int32)
    chosen_end = np.full(n, -1, dtype=np.int32)
    for f in range(n):
        if not references[f]:
            continue
        best = -1.0
        for i, j in {(int(i), int(j)) for i, j in zip(candidates_start[f], candidates_end[f]) if i >= 0}:
            confidence = float(q_start[f, i] * q_end[f, j])
            if confidence <= best:
                continue
            if _wrong(contexts[f][offsets[f][i][0] : offsets[f][j][1]], references[f]):
                best, chosen_start[f], chosen_end[f] = confidence, i, j
    return chosen_start, chosen_end


def choose_confusing_per_question(
    candidates_start: np.ndarray,
    candidates_end: np.ndarray,
    candidates_score: np.ndarray,
    example_ids: Sequence[str],
    contexts: Sequence[str],
    offsets: Sequence[Sequence[Sequence[int]]],
    references: Sequence[Sequence[str]],
) -> tuple[np.ndarray, np.ndarray]:
    """The ``"question"`` rule (Hu et al.): one wrong answer per question, placed in every window that holds it.

    ``candidates_*`` are ``[F, C]`` (every member's top-K spans of feature ``f``; ``-1`` = none)
    with ``candidates_score`` the proposing member's ``log p_start(i) + log p_end(j)``. Per
    example id, the candidate with the highest score among those whose text has zero F1 against
    every reference is the question's confusing answer, a character span of the context. Each
    of the example's features gets the token positions that start and end exactly at that
    span's characters, or ``-1`` when the window does not contain it.
    """
    best: dict[str, tuple[float, int, int]] = {}
    for f, example_id in enumerate(example_ids):
        if not references[f]:
            continue
        for i, j, score in zip(candidates_start[f], candidates_end[f], candidates_score[f]):
            if i < 0 or (example_id in best and float(score) <= best[example_id][0]):
                continue
            char_start, char_end = int(offsets[f][i][0]), int(offsets[f][j][1])
            if _wrong(contexts[f][char_start:char_end], references[f]):
                best[example_id] = (float(score), char_start, char_end)
    chosen_start = np.full(len(example_ids), -1, dtype=np.int32)
    chosen_end = np.full(len(example_ids), -1, dtype=np.int32)
    for f, example_id in enumerate(example_ids):
        if example_id not in best:
            continue
        _, char_start, char_end = best[example_id]
        starts = {int(o[0]): t for t, o in enumerate(offsets[f]) if o[0] >= 0}
        ends = {int(o[1]): t for t, o in enumerate(offsets[f]) if o[0] >= 0}
        if char_start in starts and char_end in ends:
            chosen_start[f], chosen_end[f] = starts[char_start], ends[char_end]
    return chosen_start, chosen_end


def merge_knowledge(
    members: Sequence[pa.Table],
    arrays: Mapping[str, np.ndarray],
    example_ids: Sequence[str],
    contexts: Sequence[str],
    offsets: Sequence[Sequence[Sequence[int]]],
    references: Sequence[Sequence[str]],
    confusing: ConfusingRule = "question",
) -> pa.Table:
    """Merge ``N`` member tables over the same features into one ensemble table (module doc).

    ``example_ids``, ``contexts``, ``offsets`` and ``references`` are per feature, in the
    members' row order; ``confusing`` is the rule that picks the confusing answer.
    """
    if confusing not in CONFUSING_RULES:
        raise ConfigError("knowledge", "confusing", f"must be one of {CONFUSING_RULES}, got {confusing!r}")
    if not members:
        raise ConfigError("knowledge", "members", "merge needs at least one member table")
    feature_ids = members[0].column("feature_id")
    metas = [knowledge_metadata(t) for t in members]
    for index, table in enumerate(members[1:], start=1):
        if not table.column("feature_id").equals(feature_ids):
            raise DataError("knowledge", f"member {index}", "covers different features (or order) than member 0")
    seq_len, top_k = int(metas[0]["seq_len"]), int(metas[0]["top_k"])
    count = len(feature_ids)

    def stacked(name: str, width: int, dtype: type) -> np.ndarray:
        return np.stack([unfixed(t.column(name), (width,), dtype) for t in members], axis=1)  # [F, N, width]

    start = stacked("start_logits", seq_len, np.float32)
    end = stacked("end_logits", seq_len, np.float32)
    cand_start = stacked("topk_start", top_k, np.int32).reshape(count, -1)
    cand_end = stacked("topk_end", top_k, np.int32).reshape(count, -1)
    cand_score = stacked("topk_score", top_k, np.float32).reshape(count, -1)
    if confusing == "question":
        confusing_start, confusing_end = choose_confusing_per_question(
            cand_start, cand_end, cand_score, example_ids, contexts, offsets, references)
    else:
        confusing_start, confusing_end = choose_confusing_answers(
            cand_start, cand_end,
            _averaged_probabilities(start, arrays["span_mask"]), _averaged_probabilities(end, arrays["span_mask"]),
            contexts, offsets, references,
        )
    columns = {
        "feature_id": feature_ids,
        "start_logits": fixed(start.astype(np.float16), pa.float16()),
        "end_logits": fixed(end.astype(np.float16), pa.float16()),
        "topk_start": fixed(cand_start, pa.int32()),
        "topk_end": fixed(cand_end, pa.int32()),
        "topk_score": fixed(cand_score, pa.float32()),
        "confusing_start": pa.array(confusing_start, pa.int32()),
        "confusing_end": pa.array(confusing_end, pa.int32()),
    }
    q = int(metas[0]["num_question_tokens"])
    if all("attention" in t.column_names for t in members):
        columns["attention"] = fixed(_mean_attention(members, seq_len * q), pa.float16())
    meta = {"kind": "ensemble", "members": len(members), "seq_len": seq_len, "top_k": top_k, "num_question_tokens": q,
            "confusing": confusing}
    return with_metadata(pa.table(columns), {METADATA_KEY: meta})


def _mean_attention(members: Sequence[pa.Table], width: int, block: int = 1024) -> np.ndarray:
    """The members' attention maps averaged in float32 and stored as float16 ``[F, width]``, ``block`` rows at a
    time (the float32 work never holds more than a block of every member)."""
    views = [column_rows(t.column("attention"), (width,)) for t in members]
    mean = np.empty((len(views[0]), width), np.float16)
    for start in range(0, len(mean), block):
        rows = slice(start, start + block)
        mean[rows] = np.mean([view[rows].astype(np.float32) for view in views], axis=0)
    return mean


def knowledge_arrays(table: pa.Table, feature_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Training arrays from an ensemble table, in the order of ``feature_ids``, read in place.

    Keys: ``teacher_start_logits`` / ``teacher_end_logits`` ``[F, N, S]``, ``confusing_start``
    / ``confusing_end`` ``[F]`` and, when stored, ``teacher_attention`` ``[F, S, Q]``. The
    logits and attention are float16 views of the table (of a memory-mapped file: nothing is
    copied; rows in another order are picked per batch, :class:`~kd_core.knowledge.table.Rows`);
    each batch becomes float32 as it is served (:func:`~kd_core.data.batches.batch_at`).
    """
    meta = knowledge_metadata(table)
    if meta["kind"] != "ensemble":
        raise DataError("knowledge", "kind", "training reads merged tables; call merge_knowledge first")
    rows = row_indices(table, "feature_id", list(feature_ids))
    n, seq_len, q = int(meta["members"]), int(meta["seq_len"]), int(meta["num_question_tokens"])

    def small(name: str) -> np.ndarray:
        values = table.column(name).to_numpy().astype(np.int64)
        return values if rows is None else values[rows]

    arrays = {
        "teacher_start_logits": column_rows(table.column("start_logits"), (n, seq_len), rows),
        "teacher_end_logits": column_rows(table.column("end_logits"), (n, seq_len), rows),
        "confusing_start": small("confusing_start"),
        "confusing_end": small("confusing_end"),
    }
    if "attention" in table.column_names:
        arrays["teacher_attention"] = column_rows(table.column("attention"), (seq_len, q), rows)
    return arrays


def member_logits(table: pa.Table, feature_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One teacher's start and end logits ``[F, S]`` from a member table, in the order of ``feature_ids``: float16
    views of the table, read in place as :func:`knowledge_arrays` reads an ensemble's."""
    meta = knowledge_metadata(table)
    if meta["kind"] != "member":
        raise DataError("knowledge", "kind", f"expected a member table, got {meta['kind']!r}")
    rows = row_indices(table, "feature_id", list(feature_ids))
    seq_len = int(meta["seq_len"])
    return (column_rows(table.column("start_logits"), (seq_len,), rows),
            column_rows(table.column("end_logits"), (seq_len,), rows))
