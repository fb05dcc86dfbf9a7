"""Training objectives: weighted sums of the loss terms in :mod:`kd_core.objectives.losses`.

An :class:`Objective` is ``L = sum_t w_t(progress) * mean_b^{(v)} L_t(b)``: every term's
per-example losses are reduced by the example weights ``v_b`` (IMM's ``s_ij``; 1 by
default) and scaled by a weight that may follow a :class:`Schedule` of the training
progress ``p in [0, 1]`` (e.g. IMM's ``lambda`` annealed linearly from 0 to 1;
:mod:`kd_core.objectives.schedules`).

Batches are dicts of tensors; the knowledge columns a term reads are named
``teacher_start_logits`` / ``teacher_end_logits`` (``[B, N, S]``), ``confusing_start`` /
``confusing_end`` (``[B]``) and ``teacher_attention`` (``[B, S, Q]``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from kd_core.io.errors import ConfigError
from kd_core.models.forward import QAOutput
from kd_core.objectives import losses
from kd_core.objectives.schedules import Constant, Schedule

Batch = Mapping[str, Tensor]


TermFn = Callable[[Any, Batch], Tensor]


@dataclass(frozen=True)
class Term:
    """One named loss term: per-example loss function of (model output, batch), weight schedule, what it needs.

    ``requires`` names the batch columns the term reads besides the features (knowledge
    columns such as ``teacher_start_logits``): training refuses to start without them.
    """

    name: str
    fn: TermFn
    weight: Schedule = Constant(1.0)
    needs_knowledge: bool = False
    needs_attention: bool = False
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class Objective:
    """A weighted sum of terms (see the module doc)."""

    terms: tuple[Term, ...]

    def __post_init__(self) -> None:
        if not self.terms:
            raise ConfigError("objective", "terms", "needs at least one loss term")

    @property
    def needs_knowledge(self) -> bool:
        return any(t.needs_knowledge for t in self.terms)

    @property
    def needs_attention(self) -> bool:
        return any(t.needs_attention for t in self.terms)

    def missing_columns(self, columns: Collection[str]) -> list[tuple[str, str]]:
        """``(term, column)`` for every column a term requires that ``columns`` lacks."""
        return [(t.name, c) for t in self.terms for c in t.requires if c not in columns]

    def __call__(self, outputs: Any, batch: Batch, progress: float) -> tuple[Tensor, dict[str, Tensor | float]]:
        """Total loss and, for logging, each term's reduced value (``loss/<term>``, a detached tensor left on
        the device, so that logging costs no synchronisation until it is read) and current weight
        (``weight/<term>``, a number)."""
        example_weights = batch.get("weight")
        total: Tensor | None = None
        parts: dict[str, Tensor | float] = {}
        for term in self.terms:
            weight = term.weight(progress)
            value = losses.weighted_mean(term.fn(outputs, batch), example_weights)
            parts[f"loss/{term.name}"] = value.detach()
            parts[f"weight/{term.name}"] = weight
            total = weight * value if total is None else total + weight * value
        assert total is not None
        return total, parts


def _span_mask(batch: Batch) -> Tensor:
    return batch["span_mask"].bool()


def ce_term(weight: Schedule = Constant(1.0)) -> Term:
    """Span NLL against the gold labels (:func:`kd_core.objectives.losses.span_ce_loss`)."""
    return Term(
        "ce",
        lambda out, b: losses.span_ce_loss(
            out.start_logits, out.end_logits, b["start_position"], b["end_position"], _span_mask(b)
        ),
        weight,
    )


def kd_term(tau: float, weight: Schedule = Constant(1.0)) -> Term:
    """Soft CE to the teacher at ``tau`` with the ``tau^2`` factor (:func:`~kd_core.objectives.losses.span_kd_loss`)."""
    return Term(
        "kd",
        lambda out, b: losses.span_kd_loss(
            out.start_logits, out.end_logits, b["teacher_start_logits"], b["teacher_end_logits"], _span_mask(b), tau
        ),
        weight,
        needs_knowledge=True,
        requires=("teacher_start_logits", "teacher_end_logits"),
    )


def answer_margin_term(weight: Schedule) -> Term:
    """A2D's hinge against the confusing answer (:func:`~kd_core.objectives.losses.answer_margin_loss`)."""
    return Term(
        "ans",
        lambda out, b: losses.answer_margin_loss(
            out.start_logits, out.end_logits, b["start_position"], b["end_position"], b["confusing_start"], b["confusing_end"]
        ),
        weight,
        needs_knowledge=True,
        requires=("confusing_start", "confusing_end"),
    )


def attention_term(weight: Schedule) -> Term:
    """A2D's attention MSE (:func:`~kd_core.objectives.losses.attention_mse_loss`)."""

    def fn(out: QAOutput, b: Batch) -> Tensor:
        if out.attention is None:
            raise ConfigError("objective", "att", "the model produced no attention map")
        return losses.attention_mse_loss(out.attention, b["teacher_attention"], b["passage_mask"].bool())

    return Term("att", fn, weight, needs_knowledge=True, needs_attention=True, requires=("teacher_attention",))


def prediction_mse_term(weight: Schedule) -> Term:
    """IMM's MSE to the teacher's span distributions (:func:`~kd_core.objectives.losses.prediction_mse_loss`)."""
    return Term(
        "mse",
        lambda out, b: losses.prediction_mse_loss(
            out.start_logits, out.end_logits, b["teacher_start_logits"], b["teacher_end_logits"], _span_mask(b)
        ),
        weight,
        needs_knowledge=True,
        requires=("teacher_start_logits", "teacher_end_logits"),
    )


def gold_prediction_mse_term(weight: Schedule) -> Term:
    """IMM's KD term as the paper writes it (:func:`~kd_core.objectives.losses.gold_prediction_mse_loss`)."""
    return Term(
        "mse_gold",
        lambda out, b: losses.gold_prediction_mse_loss(
            out.start_logits, out.end_logits, b["teacher_start_logits"], b["teacher_end_logits"],
            b["start_position"], b["end_position"], _span_mask(b)
        ),
        weight,
        needs_knowledge=True,
        requires=("teacher_start_logits", "teacher_end_logits"),
    )


def span_logit_mse_term(weight: Schedule) -> Term:
    """IMM's KD term as the released code computes it (:func:`~kd_core.objectives.losses.span_logit_mse_loss`)."""
    return Term(
        "mse_logits",
        lambda out, b: losses.span_logit_mse_loss(
            out.start_logits, out.end_logits, b["teacher_start_logits"], b["teacher_end_logits"], _span_mask(b)
        ),
        weight,
        needs_knowledge=True,
        requires=("teacher_start_logits", "teacher_end_logits"),
    )
