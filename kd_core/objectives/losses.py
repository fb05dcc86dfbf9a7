"""Loss terms of the four distillation methods, as small pure mask-aware functions.

Conventions shared by every function here:

* ``start_logits`` / ``end_logits`` are pre-softmax scores of shape ``[B, S]``
  (batch, sequence length).
* ``span_mask`` is a boolean ``[B, S]`` tensor that is true at the positions a span may
  start or end: the passage tokens and the ``[CLS]`` position (the "no answer in this
  window" label). Softmaxes are taken over these positions only: the others are filled
  with :data:`MASK_VALUE` before the softmax, a finite number so that ``0 * log 0`` never
  turns into ``NaN``.
* Teacher span logits are ``[B, S]`` for one teacher or ``[B, N, S]`` for an ensemble of
  ``N`` members; ensembles are combined by **averaging probabilities** (not logits).
* Every function returns one loss **per example**, shape ``[B]``; :func:`weighted_mean`
  reduces them (the training loop uses it with per-example weights, e.g. IMM's ``s_ij``).
* **Precision**: every function casts its logits (and teacher values) to float32 before any
  softmax or difference, and the training loop calls the objective outside autocast
  (:mod:`kd_core.training.compute`), so under bf16/fp16 training the model's forward runs in
  half precision while every loss and softmax here is float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Value written into masked logits before a softmax: exp(MASK_VALUE) is 0 in float16/32,
#: and it is finite, so products with zero probabilities stay 0 instead of NaN.
MASK_VALUE = -1e4


def masked_log_softmax(logits: Tensor, mask: Tensor, tau: float = 1.0) -> Tensor:
    """``log softmax(z / tau)`` over the positions where ``mask`` is true (last dimension).

    Masked positions get log-probability ``~MASK_VALUE`` (probability exactly 0).
    """
    scaled = logits.float() / tau
    return F.log_softmax(scaled.masked_fill(~mask, MASK_VALUE), dim=-1)


def teacher_probabilities(teacher_logits: Tensor, mask: Tensor, tau: float = 1.0) -> Tensor:
    """Soft targets ``q = 1/N sum_n softmax(t_n / tau)`` over legal positions, shape ``[B, S]``.

    ``teacher_logits`` is ``[B, S]`` (one teacher) or ``[B, N, S]`` (N ensemble members,
    combined by averaging their probabilities).
    """
    if teacher_logits.dim() == mask.dim():
        return masked_log_softmax(teacher_logits, mask, tau).exp()
    member_mask = mask.unsqueeze(1).expand_as(teacher_logits)
    return masked_log_softmax(teacher_logits, member_mask, tau).exp().mean(dim=1)


def span_ce_loss(
    start_logits: Tensor,
    end_logits: Tensor,
    start_positions: Tensor,
    end_positions: Tensor,
    span_mask: Tensor,
) -> Tensor:
    """Span cross-entropy (the NLL of the gold span), per example.

    ``L = - log p_start(k) - log p_end(l)`` with ``p = softmax`` over legal positions and
    ``(k, l)`` the gold start and end (``0``, the ``[CLS]`` position, when the answer is not
    inside this window). Summed over start and end as in A2D's Eq. 1 (every span loss here
    sums its start and end parts, so the paper's gamma and delta keep their meaning); the
    BERT paper's span loss is half of this.
    """
    log_ps = masked_log_softmax(start_logits, span_mask)
    log_pe = masked_log_softmax(end_logits, span_mask)
    nll_start = -log_ps.gather(1, start_positions.long().unsqueeze(1)).squeeze(1)
    nll_end = -log_pe.gather(1, end_positions.long().unsqueeze(1)).squeeze(1)
    return nll_start + nll_end


def span_kd_loss(
    start_logits: Tensor,
    end_logits: Tensor,
    teacher_start_logits: Tensor,
    teacher_end_logits: Tensor,
    span_mask: Tensor,
    tau: float,
) -> Tensor:
    """Soft cross-entropy to the teacher's span distribution at temperature ``tau``, times ``tau^2``.

    ``L = tau^2 * sum_{x in {start, end}} [ - sum_i q_x(i) log p_x(i) ]`` where
    ``p_x = softmax(z_x / tau)`` is the student's and ``q_x = 1/N sum_n softmax(t_{n,x} / tau)``
    the (ensemble-averaged) teacher's distribution over legal positions (Hinton et al.'s
    ``tau^2`` keeps the gradient scale independent of ``tau``; A2D's ``L_KD`` term).
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    q_start = teacher_probabilities(teacher_start_logits, span_mask, tau)
    q_end = teacher_probabilities(teacher_end_logits, span_mask, tau)
    ce_start = -(q_start * masked_log_softmax(start_logits, span_mask, tau)).sum(-1)
    ce_end = -(q_end * masked_log_softmax(end_logits, span_mask, tau)).sum(-1)
    return tau**2 * (ce_start + ce_end)


def answer_margin_loss(
    start_logits: Tensor,
    end_logits: Tensor,
    start_positions: Tensor,
    end_positions: Tensor,
    confusing_start: Tensor,
    confusing_end: Tensor,
) -> Tensor:
    """A2D answer distillation: a hinge that keeps the gold span above the confusing one.

    ``L = max(0, 1 - a_k + a_i) + max(0, 1 - b_l + b_j)`` on **pre-softmax** logits, with
    ``a`` the start and ``b`` the end logits, ``(k, l)`` the gold span and ``(i, j)`` the
    teacher ensemble's most confident wrong answer (the confusing answer). Examples with
    no confusing answer (``confusing_start < 0``) contribute 0.
    """
    has_confusing = confusing_start >= 0
    i = confusing_start.clamp(min=0).long().unsqueeze(1)
    j = confusing_end.clamp(min=0).long().unsqueeze(1)
    k = start_positions.long().unsqueeze(1)
    l_ = end_positions.long().unsqueeze(1)
    a = start_logits.float()
    b = end_logits.float()
    start_hinge = (1.0 - a.gather(1, k) + a.gather(1, i)).clamp(min=0).squeeze(1)
    end_hinge = (1.0 - b.gather(1, l_) + b.gather(1, j)).clamp(min=0).squeeze(1)
    return torch.where(has_confusing, start_hinge + end_hinge, torch.zeros_like(start_hinge))


def attention_mse_loss(student_attention: Tensor, teacher_attention: Tensor, passage_mask: Tensor) -> Tensor:
    """A2D attention distillation: ``L = 1/2 sum_j || D_j - E_j ||^2`` over passage tokens ``j``.

    ``D_j`` (teacher) and ``E_j`` (student) are passage token ``j``'s attention
    distributions over the question tokens, shape ``[B, S, Q]``; rows outside the passage
    (``passage_mask`` false) are ignored.
    """
    diff = (student_attention.float() - teacher_attention.float()).pow(2).sum(-1)
    return 0.5 * (diff * passage_mask.float()).sum(-1)


def prediction_mse_loss(
    start_logits: Tensor,
    end_logits: Tensor,
    teacher_start_logits: Tensor,
    teacher_end_logits: Tensor,
    span_mask: Tensor,
) -> Tensor:
    """IMM's prediction MSE between the student's and the teacher's span distributions.

    ``L = sum_{x in {start, end}} sum_i ( p_x(i) - q_x(i) )^2`` with ``p`` and ``q`` the
    student's and teacher's softmax distributions over legal positions (tau = 1). We compare
    probabilities rather than raw logits: they are bounded, so the term stays on the scale of
    the NLL it is mixed with, and logits are only defined up to a constant shift.
    """
    p_start = masked_log_softmax(start_logits, span_mask).exp()
    p_end = masked_log_softmax(end_logits, span_mask).exp()
    q_start = teacher_probabilities(teacher_start_logits, span_mask)
    q_end = teacher_probabilities(teacher_end_logits, span_mask)
    return (p_start - q_start).pow(2).sum(-1) + (p_end - q_end).pow(2).sum(-1)


def gold_prediction_mse_loss(
    start_logits: Tensor,
    end_logits: Tensor,
    teacher_start_logits: Tensor,
    teacher_end_logits: Tensor,
    start_positions: Tensor,
    end_positions: Tensor,
    span_mask: Tensor,
) -> Tensor:
    """IMM's KD term as its paper writes it (L2/L4): the squared error of the predictions at the gold span.

    ``L = ( p_start(k) - q_start(k) )^2 + ( p_end(l) - q_end(l) )^2`` with ``p`` and ``q`` the
    student's and teacher's softmax distributions over legal positions and ``(k, l)`` the gold
    start and end (``0``, ``[CLS]``, when the answer is not in this window).
    """
    k = start_positions.long().unsqueeze(1)
    l_ = end_positions.long().unsqueeze(1)
    p_start = masked_log_softmax(start_logits, span_mask).exp().gather(1, k)
    p_end = masked_log_softmax(end_logits, span_mask).exp().gather(1, l_)
    q_start = teacher_probabilities(teacher_start_logits, span_mask).gather(1, k)
    q_end = teacher_probabilities(teacher_end_logits, span_mask).gather(1, l_)
    return ((p_start - q_start).pow(2) + (p_end - q_end).pow(2)).squeeze(1)


def span_logit_mse_loss(
    start_logits: Tensor,
    end_logits: Tensor,
    teacher_start_logits: Tensor,
    teacher_end_logits: Tensor,
    span_mask: Tensor,
) -> Tensor:
    """IMM's KD term as the authors' released code computes it: the MSE of raw start and end logits.

    ``L = sum_{x in {start, end}} 1/|M| sum_{i in M} ( z_x(i) - t_x(i) )^2`` over the legal
    positions ``M`` (the code's ``MSELoss`` averages over positions); ``t`` is one teacher's
    logits ``[B, S]`` or the mean of an ensemble's ``[B, N, S]``. Logits are unbounded and only
    defined up to a shift, so this term's scale follows the teacher's logits.
    """
    legal = span_mask.float()
    count = legal.sum(-1).clamp(min=1.0)

    def mse(student: Tensor, teacher: Tensor) -> Tensor:
        target = teacher.float().mean(dim=1) if teacher.dim() == 3 else teacher.float()
        diff = (student.float() - target).masked_fill(~span_mask, 0.0)
        return diff.pow(2).sum(-1) / count

    return mse(start_logits, teacher_start_logits) + mse(end_logits, teacher_end_logits)


def hard_classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy with hard labels, per example: ``L = -log softmax(z)_y``."""
    return F.cross_entropy(logits.float(), labels.long(), reduction="none")


def soft_classification_loss(logits: Tensor, teacher_logits: Tensor, tau: float = 1.0) -> Tensor:
    """Soft cross-entropy to (ensemble-averaged) teacher class probabilities, times ``tau^2``.

    ``L = tau^2 * [ - sum_c q(c) log softmax(z / tau)_c ]`` with
    ``q = 1/N sum_n softmax(t_n / tau)``; ``teacher_logits`` is ``[B, C]`` or ``[B, N, C]``.
    MT-DNN KD uses ``tau = 1``.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    q = F.softmax(teacher_logits.float() / tau, dim=-1)
    if q.dim() == 3:
        q = q.mean(dim=1)
    return tau**2 * -(q * F.log_softmax(logits.float() / tau, dim=-1)).sum(-1)


def regression_mse_loss(predictions: Tensor, targets: Tensor) -> Tensor:
    """Squared error per example for regression tasks (STS-B): ``L = (y_hat - y)^2``.

    ``targets`` may be gold scores or a teacher's (averaged) predictions.
    """
    return (predictions.float().reshape(-1) - targets.float().reshape(-1)).pow(2)


def weighted_mean(losses: Tensor, weights: Tensor | None = None) -> Tensor:
    """Reduce per-example losses: ``sum_b w_b L_b / sum_b w_b`` (plain mean without weights)."""
    if weights is None:
        return losses.mean()
    weights = weights.float()
    return (losses * weights).sum() / weights.sum().clamp(min=1e-12)


def logit_mse_loss(logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Logit matching (Ba & Caruana 2014; Tang et al. 2019), per example.

    ``L = sum_c ( z_c - zbar_c )^2`` with ``z`` the student's logits ``[B, C]`` and
    ``zbar = 1/N sum_n t_n`` the mean of the ``N`` teachers' logits (``teacher_logits`` is
    ``[B, C]`` for one teacher or ``[B, N, C]`` for an ensemble). The squared error is summed
    over classes, not averaged: Tang et al.'s ``|| z_B - z_S ||_2^2``. Unlike every other
    ensemble here this one averages **logits**: the loss regresses logits, so their mean is
    the target whose squared error is smallest on average over the members.
    """
    target = teacher_logits.float()
    if target.dim() == 3:
        target = target.mean(dim=1)
    return (logits.float() - target).pow(2).sum(-1)


def hard_distillation_loss(logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Cross-entropy to the teacher's most probable class (hard distillation), per example.

    ``L = -log softmax(z)_{y_hat}`` with ``y_hat = argmax_c q_c`` and
    ``q = 1/N sum_n softmax(t_n)`` the (ensemble-averaged) teacher probabilities;
    ``teacher_logits`` is ``[B, C]`` or ``[B, N, C]``. The argmax is of the mean
    **probabilities**, which may differ from the argmax of the mean logits. Ties go to the
    lowest class index; no gradient flows to the teacher.
    """
    q = F.softmax(teacher_logits.detach().float(), dim=-1)
    if q.dim() == 3:
        q = q.mean(dim=1)
    return F.cross_entropy(logits.float(), q.argmax(dim=-1), reduction="none")
