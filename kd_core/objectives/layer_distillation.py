"""Layer-level distillation: a student's transformer layers against a frozen teacher's, on the same batch.

For every step of training the teacher reads the batch first (no gradients, eval mode) and
the student second; forward hooks (:class:`~kd_core.models.layer_capture.LayerCapture`) keep the
internals of the mapped layers of both, and the layer terms compare them
(:mod:`kd_core.objectives.layer_losses`). ``layer_map`` pairs student layer ``s`` with teacher layer
``t`` (0-based transformer layers); a term is the mean over the map's pairs:

* ``hidden_mse``: ``1/|M| sum_{(s,t)} MSE(W_s h^S_s, h^T_t)`` over real tokens (TinyBERT);
* ``hidden_cos``: ``1/|M| sum_{(s,t)} (1 - cos(W_s h^S_s, h^T_t))`` (DistilBERT's cosine loss);
* ``attention_map``: ``1/|M| sum_{(s,t)} MSE(A^S_s, A^T_t)`` of the attention probabilities (TinyBERT);
* ``relation``: MiniLMv2's self-attention relations (query-query, key-key and value-value)
  of the map's last pair, ``1/3 sum_{x in q,k,v} KL(R^T_x || R^S_x)`` with ``relation_heads``
  relation heads, which needs no projection whatever the widths.

``W_s`` is a learned linear projection from the student's width to the teacher's when they
differ (TinyBERT's ``W_h``), trained with the student (``extra`` of
:func:`~kd_core.training.loop.train`) and not part of the saved student; equal widths compare the
states directly. Teacher and student must read the same features (one tokenizer): the
comparison is token by token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedModel

from kd_core.io.errors import ConfigError
from kd_core.models.layer_capture import LayerCapture, transformer_layers
from kd_core.objectives import layer_losses
from kd_core.objectives.layer_maps import LAYER_KINDS, check_layer_map
from kd_core.objectives.terms import Term

_NEEDS = {"hidden_mse": {"hidden"}, "hidden_cos": {"hidden"}, "attention_map": {"attention"},
          "relation": {"query", "key", "value"}}


class LayerDistillation:
    """The capture of both models, the projections and the layer terms (module doc)."""

    def __init__(self, student: PreTrainedModel, teacher: PreTrainedModel, layer_map: Sequence[tuple[int, int]],
                 kinds: Sequence[str], projection: bool = True, relation_heads: int = 4, seed: int = 0) -> None:
        unknown = [k for k in kinds if k not in LAYER_KINDS]
        if unknown or not kinds:
            raise ConfigError("layers", "kind", f"layer terms are {', '.join(LAYER_KINDS)}; got {list(kinds)}")
        self.kinds = tuple(kinds)
        self.layer_map = tuple((int(s), int(t)) for s, t in layer_map)
        check_layer_map(self.layer_map, len(transformer_layers(student)), len(transformer_layers(teacher)))
        student_width, teacher_width = student.config.hidden_size, teacher.config.hidden_size
        hidden_terms = {"hidden_mse", "hidden_cos"} & set(kinds)
        if hidden_terms and student_width != teacher_width and not projection:
            raise ConfigError("layers", "projection", f"student width {student_width} != teacher width "
                              f"{teacher_width}: {sorted(hidden_terms)[0]} needs the projection")
        self.relation_heads = relation_heads
        self.projections = torch.nn.ModuleDict()
        if hidden_terms and student_width != teacher_width:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for s, _ in self.layer_map:
                    self.projections[str(s)] = torch.nn.Linear(student_width, teacher_width)
            self.projections.to(next(student.parameters()).device)
        needs = set().union(*(_NEEDS[k] for k in kinds))
        last = self.layer_map[-1]
        student_layers = sorted({s for s, _ in self.layer_map})
        teacher_layers = sorted({t for _, t in self.layer_map})
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        qkv = {"query", "key", "value"}
        self.student_layers = LayerCapture(student, student_layers, needs - qkv)
        self.teacher_layers = LayerCapture(teacher, teacher_layers, needs - qkv)
        #: query/key/value of the map's last pair (the relation term)
        self.student_qkv = LayerCapture(student, [last[0]], qkv) if "relation" in kinds else None
        self.teacher_qkv = LayerCapture(teacher, [last[1]], qkv) if "relation" in kinds else None
        self._terms = {"hidden_mse": self._hidden_mse, "hidden_cos": self._hidden_cos,
                       "attention_map": self._attention_map, "relation": self._relation}

    def forward(self, task_forward: Callable[[torch.nn.Module, dict[str, Tensor], int], Any]
                ) -> Callable[[torch.nn.Module, dict[str, Tensor], int], Any]:
        """The training forward: the teacher reads the batch (no gradients), then the student; returns the student's."""

        def both(model: torch.nn.Module, batch: dict[str, Tensor], question_tokens: int) -> Any:
            with torch.no_grad():
                task_forward(self.teacher, batch, 0)
            return task_forward(model, batch, question_tokens)

        return both

    def term(self, kind: str) -> Term:
        """The layer term ``kind`` (module doc), reading the latest forward's captures."""
        if kind not in self.kinds:
            raise ConfigError("layers", "kind", f"{kind!r} was not captured; captured {list(self.kinds)}")
        return Term(kind, self._terms[kind])

    def _hidden(self, b: dict[str, Tensor], loss: Callable[..., Tensor]) -> Tensor:
        mask = b["attention_mask"].bool()
        values = [loss(self.student_layers.hidden[s], self.teacher_layers.hidden[t], mask, self.projections[str(s)]
                       if str(s) in self.projections else None) for s, t in self.layer_map]
        return torch.stack(values).mean(0)

    def _hidden_mse(self, out: Any, b: dict[str, Tensor]) -> Tensor:
        return self._hidden(b, layer_losses.hidden_mse_loss)

    def _hidden_cos(self, out: Any, b: dict[str, Tensor]) -> Tensor:
        return self._hidden(b, layer_losses.hidden_cosine_loss)

    def _attention_map(self, out: Any, b: dict[str, Tensor]) -> Tensor:
        mask = b["attention_mask"].bool()
        values = [layer_losses.attention_map_mse_loss(self.student_layers.attention[s],
                                                    self.teacher_layers.attention[t], mask)
                  for s, t in self.layer_map]
        return torch.stack(values).mean(0)

    def _relation(self, out: Any, b: dict[str, Tensor]) -> Tensor:
        mask = b["attention_mask"].bool()
        s, t = self.layer_map[-1]
        student, teacher = self.student_qkv, self.teacher_qkv
        assert student is not None and teacher is not None
        values = [layer_losses.relation_kl_loss(getattr(student, x)[s], getattr(teacher, x)[t], mask,
                                                self.relation_heads) for x in ("query", "key", "value")]
        return torch.stack(values).mean(0)

    def remove(self) -> None:
        """Remove every hook (the models behave as before)."""
        for capture in (self.student_layers, self.teacher_layers, self.student_qkv, self.teacher_qkv):
            if capture is not None:
                capture.remove()
