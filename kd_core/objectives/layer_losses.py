"""Intermediate-layer distillation losses: hidden states, attention maps, self-attention relations.

Same conventions as :mod:`kd_core.objectives.losses`:

* ``mask`` is a boolean ``[B, S]`` tensor, true at the real tokens (false at padding).
  Padded positions never change a loss, and never turn it into ``NaN`` or ``inf``: they
  are removed with ``torch.where`` (not by multiplying by 0) and softmaxes fill them with
  :data:`~kd_core.objectives.losses.MASK_VALUE` first.
* Every function returns one loss **per example**, shape ``[B]``; averages are over the
  ``n_b`` real tokens of example ``b`` (an example with no real token gives 0).
* Arithmetic is in float32 whatever the input precision (bf16 hidden states from an autocast
  forward are cast first; the objective itself runs outside autocast, :mod:`kd_core.training.compute`).

The tensors usually come from :class:`kd_core.models.layer_capture.LayerCapture`: a student layer
``[B, S, Hs]`` against the teacher layer it is mapped to ``[B, S, Ht]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kd_core.objectives.losses import MASK_VALUE


def _real_token_count(mask: Tensor) -> Tensor:
    """``n_b`` as float ``[B]``, at least 1 so that an all-padding example gives 0 instead of 0/0."""
    return mask.sum(-1).clamp(min=1).float()


def _project(student: Tensor, teacher: Tensor, projection: nn.Module | None) -> Tensor:
    """``W h^S`` in float32 (``h^S`` itself when ``projection`` is None, which needs ``Hs == Ht``)."""
    if projection is None:
        if student.shape[-1] != teacher.shape[-1]:
            raise ValueError(
                f"student width {student.shape[-1]} != teacher width {teacher.shape[-1]}: pass a projection"
            )
        return student.float()
    projected = projection(student).float()
    if projected.shape[-1] != teacher.shape[-1]:
        raise ValueError(f"projection gives width {projected.shape[-1]}, the teacher has {teacher.shape[-1]}")
    return projected


def hidden_mse_loss(student: Tensor, teacher: Tensor, mask: Tensor, projection: nn.Module | None = None) -> Tensor:
    """TinyBERT hidden-state loss (Jiao et al. 2020), per example.

    ``L_b = 1/(n_b * Ht) * sum_{j real} || W h^S_j - h^T_j ||^2`` with ``h^S_j`` ``[Hs]`` and
    ``h^T_j`` ``[Ht]`` the student's and teacher's hidden states at token ``j``, ``W`` the
    learnt ``projection`` (identity when None: then ``Hs`` must equal ``Ht``, else
    ``ValueError``) and ``n_b`` the number of real tokens of example ``b``: the mean squared
    error over the real tokens' coordinates.
    """
    projected = _project(student, teacher, projection)
    squared = (projected - teacher.float()).pow(2).sum(-1)
    squared = torch.where(mask, squared, torch.zeros_like(squared))
    return squared.sum(-1) / (_real_token_count(mask) * teacher.shape[-1])


def hidden_cosine_loss(
    student: Tensor, teacher: Tensor, mask: Tensor, projection: nn.Module | None = None, eps: float = 1e-8
) -> Tensor:
    """DistilBERT's cosine embedding loss on hidden states (Sanh et al. 2019), per example.

    ``L_b = 1/n_b * sum_{j real} ( 1 - cos(W h^S_j, h^T_j) )`` with
    ``cos(u, v) = u.v / max(|u| |v|, eps)``; ``W`` and ``n_b`` as in :func:`hidden_mse_loss`.
    It aligns the directions of the hidden states and ignores their norms.
    """
    projected = _project(student, teacher, projection)
    distance = 1.0 - F.cosine_similarity(projected, teacher.float(), dim=-1, eps=eps)
    distance = torch.where(mask, distance, torch.zeros_like(distance))
    return distance.sum(-1) / _real_token_count(mask)


def attention_map_mse_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """TinyBERT attention loss (Jiao et al. 2020), per example.

    ``L_b = 1/(h * n_b^2) * sum_{heads} sum_{i, j real} ( A^S_ij - A^T_ij )^2`` with ``A``
    the attention maps ``[B, heads, S, S]`` (query ``i``, key ``j``): the mean squared error
    over the ``h`` heads and the ``n_b x n_b`` pairs of real tokens.

    When student and teacher have different numbers of heads (**our choice**, not in the
    paper, which maps head to head): each side is first averaged over its heads and the
    averaged maps are compared (``h = 1``). The function compares whatever maps it is given:
    attention probabilities (what :class:`~kd_core.models.layer_capture.LayerCapture` captures)
    or, as TinyBERT's own code did, pre-softmax scores.
    """
    student = student.float()
    teacher = teacher.float()
    if student.shape[1] != teacher.shape[1]:
        student = student.mean(dim=1, keepdim=True)
        teacher = teacher.mean(dim=1, keepdim=True)
    heads = student.shape[1]
    pairs = (mask[:, :, None] & mask[:, None, :]).unsqueeze(1)  # [B, 1, S, S]
    squared = (student - teacher).pow(2)
    squared = torch.where(pairs, squared, torch.zeros_like(squared))
    return squared.sum(dim=(1, 2, 3)) / (heads * _real_token_count(mask).pow(2))


def _relation_log_probabilities(states: Tensor, mask: Tensor, relation_heads: int, name: str) -> Tensor:
    """``log R_a = log softmax(X_a X_a^T / sqrt(d_r))`` over real keys, shape ``[B, heads, S, S]``."""
    batch, length, width = states.shape
    if width % relation_heads != 0:
        raise ValueError(f"{name} width {width} is not divisible by relation_heads={relation_heads}")
    head_size = width // relation_heads
    split = states.float().reshape(batch, length, relation_heads, head_size).transpose(1, 2)
    scores = split @ split.transpose(-1, -2) / math.sqrt(head_size)
    key_mask = mask[:, None, None, :]
    return F.log_softmax(scores.masked_fill(~key_mask, MASK_VALUE), dim=-1)


def relation_kl_loss(student: Tensor, teacher: Tensor, mask: Tensor, relation_heads: int) -> Tensor:
    """MiniLMv2 self-attention relation distillation (Wang et al. 2021), per example.

    For one of the queries, keys or values ``X`` ``[B, S, D]`` of a layer: split the last
    dimension into ``relation_heads`` heads ``X_a`` of size ``d_r = D / relation_heads``
    (``ValueError`` when it does not divide) and form the relations
    ``R_a = softmax(X_a X_a^T / sqrt(d_r))``, a distribution over the real key positions for
    every query position. Then

    ``L_b = 1/(relation_heads * n_b) * sum_a sum_{i real} KL( R^T_a[i] || R^S_a[i] )``,
    ``KL(p || q) = sum_{j real} p_j (log p_j - log q_j)``.

    Student and teacher may have different widths ``Ds`` and ``Dt`` (and so different
    ``d_r``): relations are ``S x S`` whatever the width. Masked keys get probability 0
    (their scores are filled with ``MASK_VALUE`` before the softmax and their KL terms
    dropped), padded query rows are left out of the sum.
    """
    if relation_heads < 1:
        raise ValueError(f"relation_heads must be >= 1, got {relation_heads}")
    log_student = _relation_log_probabilities(student, mask, relation_heads, "student")
    log_teacher = _relation_log_probabilities(teacher, mask, relation_heads, "teacher")
    pairs = (mask[:, :, None] & mask[:, None, :]).unsqueeze(1)  # [B, 1, S(query), S(key)]
    terms = log_teacher.exp() * (log_teacher - log_student)
    terms = torch.where(pairs, terms, torch.zeros_like(terms))
    return terms.sum(dim=(1, 2, 3)) / (relation_heads * _real_token_count(mask))
