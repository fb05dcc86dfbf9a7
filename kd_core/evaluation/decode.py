"""Span decoding: the best legal answer spans of a QA model and their text.

A span ``(i, j)`` of token positions is *legal* when both ends are passage tokens,
``i <= j`` and ``j - i + 1 <= max_answer_length``. Its score is the sum of pre-softmax
logits ``a_i + b_j`` (start plus end), the usual BERT decoding rule; scores are comparable
across the windows (features) of one example, so an example's answer is the best span of
any of its windows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kd_core.io.errors import ConfigError


@dataclass(frozen=True)
class Span:
    """A decoded answer: token positions (inclusive) and its score ``a_start + b_end``."""

    start: int
    end: int
    score: float


def _check_decoding_args(k: int, max_answer_length: int) -> None:
    if k < 1:
        raise ConfigError("decoding", "top_k", f"must be >= 1, got {k}")
    if max_answer_length < 1:
        raise ConfigError("decoding", "max_answer_length", f"must be >= 1, got {max_answer_length}")


def batch_top_k_spans(
    start_logits: Tensor,
    end_logits: Tensor,
    passage_mask: Tensor,
    k: int,
    max_answer_length: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` best legal spans of every row of a batch, best first.

    Inputs are ``[B, S]``. Returns ``(starts, ends, scores)`` of shape ``[B, k]``; when a row
    has fewer than ``k`` legal spans the rest are ``-1`` with score ``-inf``.
    """
    _check_decoding_args(k, max_answer_length)
    seq_len = start_logits.shape[-1]
    scores = start_logits.float().unsqueeze(2) + end_logits.float().unsqueeze(1)  # [B, S, S]
    offsets = torch.arange(seq_len, device=scores.device)
    length = offsets.unsqueeze(0) - offsets.unsqueeze(1)  # j - i
    shape_ok = (length >= 0) & (length < max_answer_length)
    legal = shape_ok.unsqueeze(0) & passage_mask.unsqueeze(2) & passage_mask.unsqueeze(1)
    scores = scores.masked_fill(~legal, float("-inf")).flatten(1)
    top_scores, flat = scores.topk(min(k, scores.shape[1]), dim=1)
    valid = torch.isfinite(top_scores)
    starts = torch.where(valid, flat // seq_len, torch.full_like(flat, -1))
    ends = torch.where(valid, flat % seq_len, torch.full_like(flat, -1))
    return starts, ends, top_scores


def top_k_spans(
    start_logits: Tensor, end_logits: Tensor, passage_mask: Tensor, k: int, max_answer_length: int
) -> list[Span]:
    """The ``k`` best legal spans of one window (inputs of shape ``[S]``), best first."""
    starts, ends, scores = batch_top_k_spans(
        start_logits.unsqueeze(0), end_logits.unsqueeze(0), passage_mask.unsqueeze(0), k, max_answer_length
    )
    return [
        Span(int(s), int(e), float(v))
        for s, e, v in zip(starts[0].tolist(), ends[0].tolist(), scores[0].tolist())
        if s >= 0
    ]


def best_span(start_logits: Tensor, end_logits: Tensor, passage_mask: Tensor, max_answer_length: int) -> Span | None:
    """The single best legal span of one window, or ``None`` when the window has no passage."""
    spans = top_k_spans(start_logits, end_logits, passage_mask, 1, max_answer_length)
    return spans[0] if spans else None


def span_text(context: str, offsets: Sequence[Sequence[int]], start: int, end: int) -> str:
    """The passage's text of a token span, widened to whole words (:func:`whole_words`).

    The span's characters are ``[offsets[start][0], offsets[end][1])``; a span that starts or
    ends inside a word (a WordPiece ``##`` piece) is widened to that word's edges.
    """
    first, last = whole_words(context, int(offsets[start][0]), int(offsets[end][1]))
    return context[first:last]


def whole_words(context: str, first: int, last: int) -> tuple[int, int]:
    """``[first, last)`` widened to the edges of the words it cuts: "ainst the Bea" -> "against the Bears".

    A word is a run of letters and digits (``str.isalnum``), so punctuation is never added:
    BERT's basic tokenizer splits it off as its own tokens, and a span that ends before a full
    stop keeps ending there. Original BERT maps predicted WordPiece tokens back through the
    passage's whitespace words and then re-aligns to the predicted characters, which can still
    return a piece of a word; this returns whole words only (docs/evaluation.md measures the
    difference it makes to EM and F1).
    """
    if first >= last:
        return first, last
    while first > 0 and context[first - 1].isalnum() and context[first].isalnum():
        first -= 1
    while last < len(context) and context[last].isalnum() and context[last - 1].isalnum():
        last += 1
    return first, last


def _writable(values: Tensor | np.ndarray) -> Tensor:
    """A tensor copy of ``values`` (arrays read from Ray's object store are read-only, which torch warns about)."""
    return values.detach().clone() if isinstance(values, Tensor) else torch.from_numpy(np.array(values))


def predict_answers(
    example_ids: Sequence[str],
    contexts: Mapping[str, str],
    offsets: Sequence[Sequence[Sequence[int]]],
    start_logits: np.ndarray | Tensor,
    end_logits: np.ndarray | Tensor,
    passage_mask: np.ndarray | Tensor,
    max_answer_length: int,
) -> dict[str, str]:
    """Answer text per example: the best-scoring legal span over all of the example's windows.

    ``example_ids[f]`` names the example of feature ``f``; ``offsets[f]`` are its tokens'
    character offsets; the logits and mask are ``[F, S]``. An example whose windows hold no
    legal span gets the empty string.
    """
    scored = scored_answers(example_ids, contexts, offsets, start_logits, end_logits, passage_mask, max_answer_length)
    return {example_id: text for example_id, (_, text) in scored.items()}


def null_answer_margins(
    example_ids: Sequence[str],
    start_scores: np.ndarray | Tensor,
    end_scores: np.ndarray | Tensor,
    best: Mapping[str, tuple[float, str]],
) -> dict[str, float]:
    """SQuAD v2's null rule, per example: ``null - best span`` (predict no answer when it is above a threshold).

    ``null = min_f (a_f[0] + b_f[0])`` is the ``[CLS]`` ("no answer") score of the example's
    most confident window (BERT's rule: the lowest null score over windows) and ``best span`` the
    best legal span's score over every window (``best``, from :func:`scored_answers`).
    """
    start, end = _writable(start_scores), _writable(end_scores)
    null: dict[str, float] = {}
    for f, example_id in enumerate(example_ids):
        score = float(start[f, 0] + end[f, 0])
        null[example_id] = min(null.get(example_id, score), score)
    return {example_id: null[example_id] - best[example_id][0] for example_id in null}


def best_character_spans(
    example_ids: Sequence[str],
    offsets: Sequence[Sequence[Sequence[int]]],
    start_logits: np.ndarray | Tensor,
    end_logits: np.ndarray | Tensor,
    passage_mask: np.ndarray | Tensor,
    max_answer_length: int,
) -> dict[str, tuple[float, tuple[int, int] | None]]:
    """Per example, its best legal span over all its windows, as the score ``a_i + b_j`` and the characters
    ``[offsets[i][0], offsets[j][1])`` it covers, as cut (``(-inf, None)`` for an example without a span)."""
    starts, ends, scores = batch_top_k_spans(
        _writable(start_logits), _writable(end_logits), _writable(passage_mask).bool(),
        1, max_answer_length,
    )
    best: dict[str, tuple[float, tuple[int, int] | None]] = {}
    for f, example_id in enumerate(example_ids):
        s, e, score = int(starts[f, 0]), int(ends[f, 0]), float(scores[f, 0])
        if s < 0:
            best.setdefault(example_id, (float("-inf"), None))
        elif example_id not in best or score > best[example_id][0]:
            best[example_id] = (score, (int(offsets[f][s][0]), int(offsets[f][e][1])))
    return best


def scored_answers(
    example_ids: Sequence[str],
    contexts: Mapping[str, str],
    offsets: Sequence[Sequence[Sequence[int]]],
    start_logits: np.ndarray | Tensor,
    end_logits: np.ndarray | Tensor,
    passage_mask: np.ndarray | Tensor,
    max_answer_length: int,
) -> dict[str, tuple[float, str]]:
    """:func:`predict_answers` with each answer's score ``a_i + b_j`` (``-inf`` for an example without a span)."""
    spans = best_character_spans(example_ids, offsets, start_logits, end_logits, passage_mask, max_answer_length)
    return {example_id: (score, "" if span is None else
                         contexts[example_id][slice(*whole_words(contexts[example_id], *span))])
            for example_id, (score, span) in spans.items()}
