"""One forward pass for every QA model: start/end logits and, on request, question-passage attention.

:func:`qa_forward` gives every model the same output, :class:`QAOutput`: start/end logits
and, on request, the **question-passage attention** used by A2D's attention
distillation. Our choice (the paper attends from passage to question inside its own
architecture; a BERT has one self-attention over the pair): take the last layer's
self-attention ``A`` (``[B, H, S, S]``), average over heads, keep the columns of the
question tokens and renormalise each row over them,

    E_jq = mean_h A_h[j, q] / sum_{q' in question} mean_h A_h[j, q'],

for passage tokens ``j`` (other rows are 0). Questions are packed left: column ``c`` is
the ``c``-th question token, and columns past the question's length are 0.

How ``A`` is obtained: the model keeps its attention implementation (SDPA by default, which
returns no maps) and a :class:`~kd_core.models.layer_capture.LayerCapture` on the last layer
alone computes ``A_h = softmax(Q_h K_h^T * d**-0.5 + M)`` in float32 from that layer's query
and key outputs, ``M`` masking the padded keys (``attention_mask == 0``): what eager attention
computes, but **before** attention dropout (identical in eval mode, as when collecting a
teacher's knowledge; in training mode with attention dropout the old eager path returned the
dropped-out map). Models whose maps cannot be computed that way (no
``base_model.encoder.layer[i].attention.self.{query,key}``: DistilBERT-like, BiLSTM, ...)
fall back to :func:`eager_qa_forward`, which switches the model to eager attention and takes
the last of the maps it returns for every layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedModel

from kd_core.io.errors import ConfigError
from kd_core.models.layer_capture import LayerCapture, computes_attention_maps, transformer_layers


@dataclass
class QAOutput:
    """What every QA model returns here: ``[B, S]`` logits and optionally ``[B, S, Q]`` attention."""

    start_logits: Tensor
    end_logits: Tensor
    attention: Tensor | None = None


def enable_attention_outputs(model: PreTrainedModel) -> None:
    """Switch the model to eager attention, the only implementation that returns attention maps (for the fallback).

    Every later call of the model then builds every layer's ``[B, H, S, S]`` maps: :func:`qa_forward`
    avoids it wherever it can (module doc).
    """
    if model.config._attn_implementation != "eager":
        model.set_attn_implementation("eager")


def question_passage_attention(
    last_layer_attention: Tensor, question_mask: Tensor, passage_mask: Tensor, num_question_tokens: int
) -> Tensor:
    """Passage-to-question attention ``[B, S, Q]`` from one layer's ``[B, H, S, S]`` (module doc)."""
    mean_heads = last_layer_attention.float().mean(dim=1)  # [B, S, S]
    # Column indices of the question tokens, packed to the left (stable order).
    order = torch.argsort((~question_mask).int(), dim=1, stable=True)[:, :num_question_tokens]
    present = question_mask.gather(1, order)  # [B, Q]
    columns = mean_heads.gather(2, order.unsqueeze(1).expand(-1, mean_heads.shape[1], -1))
    columns = columns * present.unsqueeze(1).float()
    totals = columns.sum(-1, keepdim=True)
    rows = torch.where(totals > 0, columns / totals.clamp(min=1e-12), torch.zeros_like(columns))
    return rows * passage_mask.unsqueeze(-1).float()


def model_inputs(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The tensors of a feature batch that a Hugging Face encoder takes."""
    inputs = {"input_ids": batch["input_ids"].long(), "attention_mask": batch["attention_mask"].long()}
    if "token_type_ids" in batch:
        inputs["token_type_ids"] = batch["token_type_ids"].long()
    return inputs


def qa_forward(model: PreTrainedModel, batch: Mapping[str, Tensor], num_question_tokens: int = 0) -> QAOutput:
    """Run a QA model on a feature batch; with ``num_question_tokens > 0`` also return attention ``[B, S, Q]``.

    The attention comes from the last layer's query and key, the model staying on its attention
    implementation, or from :func:`eager_qa_forward` for models where that is not possible (module
    doc). ``model`` may be wrapped in ``DistributedDataParallel``.
    """
    if num_question_tokens <= 0:
        out = model(**model_inputs(batch), return_dict=True)
        return QAOutput(out.start_logits, out.end_logits)
    inner = getattr(model, "module", model)  # the model inside a DistributedDataParallel wrapper
    if not computes_attention_maps(inner):
        return eager_qa_forward(model, batch, num_question_tokens)
    last = len(transformer_layers(inner)) - 1
    with LayerCapture(inner, [last], {"attention"}) as capture:
        out = model(**model_inputs(batch), return_dict=True)
        last_layer_attention = capture.attention[last]
    attention = question_passage_attention(
        last_layer_attention, batch["question_mask"].bool(), batch["passage_mask"].bool(), num_question_tokens
    )
    return QAOutput(out.start_logits, out.end_logits, attention)


def eager_qa_forward(model: PreTrainedModel, batch: Mapping[str, Tensor], num_question_tokens: int) -> QAOutput:
    """The fallback of :func:`qa_forward`: switch to eager attention and take the last of every layer's maps.

    Eager attention returns ``A`` after attention dropout (module doc).
    """
    enable_attention_outputs(getattr(model, "module", model))
    out = model(**model_inputs(batch), output_attentions=True, return_dict=True)
    if not out.attentions:
        raise ConfigError("models", "attention", f"{type(model).__name__} returned no attentions under eager attention")
    attention = question_passage_attention(
        out.attentions[-1], batch["question_mask"].bool(), batch["passage_mask"].bool(), num_question_tokens
    )
    return QAOutput(out.start_logits, out.end_logits, attention)
