"""Capture a BERT-like model's per-layer internals during an ordinary forward call.

:class:`LayerCapture` registers forward hooks on chosen layers of a Hugging Face encoder
(``model.base_model.encoder.layer[i]``: BERT, RoBERTa, ELECTRA, XLM-R, ...) and keeps that
forward's tensors, so that intermediate-layer losses (:mod:`kd_core.objectives.layer_losses`) can be
computed without changing how the model is called::

    with LayerCapture(student, layers=[1, 3], what={"hidden", "attention"}) as cap:
        out = student(input_ids, attention_mask=mask)          # an ordinary call
        loss = hidden_mse_loss(cap.hidden[3], teacher_hidden, mask.bool(), projection)

Attention probabilities are computed here, not taken from the model. In transformers 5 only
the ``"eager"`` attention implementation returns them; the default ``"sdpa"`` (and flash /
flex attention) returns ``None``, and switching a model to eager makes every layer of every
call build its ``[B, heads, S, S]`` map. Instead, for each chosen layer the hooks keep the
outputs of its self-attention's ``query`` and ``key`` Linear modules (``[B, S, heads * d]``),
and a forward pre-hook on the base model reads the ``attention_mask`` it was called with
(``[B, S]``, 1 for real tokens; ``None`` means every token is real). Once the layer's
self-attention has run, :func:`attention_probabilities` gives, per head ``h``,

    A_h = softmax(Q_h K_h^T * scaling + M),   M[b, :, k] = 0 where attention_mask[b, k] == 1,
                                               finfo(float32).min where it is 0,

in float32 with autocast off, ``scaling`` being the module's own (``d ** -0.5``), which is
what ``eager_attention_forward`` computes before its dropout. So the model keeps its attention
implementation (the capture never changes it) and only the chosen layers produce maps.

Two departures from the old behaviour (which switched the model to eager and kept eager's
returned maps): the maps are float32 even when the model runs in bf16/fp16, and they are
taken **before** attention dropout. In eval mode, or with ``attention_probs_dropout_prob``
0, they equal eager's; in training mode with dropout, eager returned the dropped-out
(rescaled, partly zeroed) maps and the capture now returns the undropped ones.

This assumes the layer's ``attention.self`` is a plain scaled dot-product self-attention
(what BERT-like encoders in transformers 5 have): decoders (``config.is_decoder``, causal
masks) are refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from kd_core.io.errors import ConfigError

#: What can be captured: a layer's output hidden states ``[B, S, H]``, its self-attention
#: probabilities ``[B, heads, S, S]`` (float32, before dropout: module doc), and the outputs of
#: its query/key/value Linear modules ``[B, S, H]`` (all heads together, before they are split).
CAPTURABLE = ("hidden", "attention", "query", "key", "value")


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """``model.base_model.encoder.layer``, or :class:`ConfigError` when the model has none (e.g. an LSTM)."""
    base = getattr(model, "base_model", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError("layers", type(model).__name__,
                          f"model {type(model).__name__} has no transformer layers (no base_model.encoder.layer)")
    return layers


def _self_attention(layer: nn.Module, index: int) -> nn.Module:
    """The layer's self-attention module (``layer.attention.self``) with its query/key/value Linear modules."""
    module = getattr(getattr(layer, "attention", None), "self", None)
    if module is None or not all(isinstance(getattr(module, n, None), nn.Linear) for n in ("query", "key", "value")):
        raise ConfigError("layers", str(index),
                          f"layer {index} ({type(layer).__name__}) has no attention.self module with query/key/value")
    return module


def _attention_shape(module: nn.Module) -> tuple[int, float] | None:
    """``(head size d, scaling)`` of a BERT-like self-attention module, ``None`` when it does not state them."""
    head_size, scaling = getattr(module, "attention_head_size", None), getattr(module, "scaling", None)
    if isinstance(head_size, int) and head_size > 0 and isinstance(scaling, float):
        return head_size, scaling
    return None


def computes_attention_maps(model: nn.Module) -> bool:
    """Whether :class:`LayerCapture` can compute the model's attention maps from query/key outputs (module doc).

    True for an encoder (not ``config.is_decoder``) whose every ``base_model.encoder.layer[i].attention.self``
    has ``query``/``key``/``value`` Linear modules, ``attention_head_size`` and ``scaling``, and whose base
    model's forward takes ``attention_mask``; False otherwise (an LSTM, DistilBERT's ``transformer.layer``, ...).
    """
    if getattr(getattr(model, "config", None), "is_decoder", False):
        return False
    try:
        layers = transformer_layers(model)
        modules = [_self_attention(layer, index) for index, layer in enumerate(layers)]
    except ConfigError:
        return False
    return (len(modules) > 0 and all(_attention_shape(m) is not None for m in modules)
            and "attention_mask" in inspect.signature(model.base_model.forward).parameters)


def attention_probabilities(query: Tensor, key: Tensor, attention_mask: Tensor | None, head_size: int,
                            scaling: float) -> Tensor:
    """Self-attention probabilities ``[B, heads, S, S]`` from a layer's query/key Linear outputs ``[B, S, heads*d]``.

    ``A_h = softmax(Q_h K_h^T * scaling + M)`` over the keys, ``Q_h``/``K_h`` the ``h``-th block of ``d =
    head_size`` columns, ``M`` 0 for keys with ``attention_mask == 1`` and ``finfo(float32).min`` for keys
    with 0 (``attention_mask`` ``[B, S]`` or ``None``: every key). Computed in float32 with autocast off
    whatever the inputs' dtype; differentiable in ``query`` and ``key``.
    """
    with torch.autocast(query.device.type, enabled=False):
        batch, length = query.shape[:2]
        q = query.float().view(batch, length, -1, head_size).transpose(1, 2)  # [B, heads, S, d]
        k = key.float().view(batch, key.shape[1], -1, head_size).transpose(1, 2)
        # in place on the matmul's fresh output (its backward does not read it): no extra [B, heads, S, S] buffers
        scores = torch.matmul(q, k.transpose(2, 3)).mul_(scaling)
        if attention_mask is not None:
            scores.masked_fill_((attention_mask == 0)[:, None, None, :], torch.finfo(torch.float32).min)
        return scores.softmax(dim=-1)


class LayerCapture:
    """Forward hooks that keep chosen layers' hidden states, attention maps, queries, keys or values.

    ``LayerCapture(model, layers, what)``: ``layers`` are 0-based indices into
    ``model.base_model.encoder.layer`` (:class:`ConfigError` when out of range, or when the
    model has no such layers), ``what`` a subset of :data:`CAPTURABLE` (may be empty: then
    nothing is captured; ``"attention"`` needs :func:`computes_attention_maps`). After each
    forward of the model, ``capture.hidden[i]``, ``capture.attention[i]``, ``capture.query[i]``,
    ``capture.key[i]`` and ``capture.value[i]`` hold that forward's tensors for layer ``i``
    (the dictionaries are emptied when the next forward starts). The tensors are not
    detached: when the model runs with gradients, a loss on them backpropagates into the
    model; a teacher run under ``torch.no_grad()`` gives tensors without a graph.

    ``clear()`` drops the kept tensors (and so the graph they hold), ``remove()`` removes
    the hooks; the object is a context manager that removes itself on exit. The model's
    attention implementation is never changed: ``capture.attention[i]`` is computed from
    layer ``i``'s query and key (module doc: float32, before attention dropout). With
    gradient checkpointing the hooks fire again during the backward recomputation,
    overwriting the kept tensors with equal ones.
    """

    def __init__(self, model: nn.Module, layers: Sequence[int], what: Iterable[str] = ("hidden",)) -> None:
        self.model = model
        self.what = frozenset([what] if isinstance(what, str) else what)
        unknown = sorted(self.what - set(CAPTURABLE))
        if unknown:
            raise ConfigError("what", ", ".join(map(repr, unknown)), f"can capture only {', '.join(CAPTURABLE)}")
        modules = transformer_layers(model)
        count = len(modules)
        chosen = []
        for index in layers:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
                raise ConfigError("layers", repr(index),
                                  f"layer index out of range: the model has {count} layers (0..{count - 1})")
            if index not in chosen:
                chosen.append(index)
        if not chosen:
            raise ConfigError("layers", "layers", f"no layer chosen (the model has {count} layers)")
        if "attention" in self.what and not computes_attention_maps(model):
            raise ConfigError("attention", type(model).__name__,
                              f"cannot compute the attention maps of {type(model).__name__}: it needs an encoder "
                              "whose layers' attention.self have query/key Linear modules, attention_head_size "
                              "and scaling, and a base model called with attention_mask")
        self.layers = tuple(chosen)
        self.hidden: dict[int, Tensor] = {}
        self.attention: dict[int, Tensor] = {}
        self.query: dict[int, Tensor] = {}
        self.key: dict[int, Tensor] = {}
        self.value: dict[int, Tensor] = {}
        # this forward's query/key outputs of the layers whose maps are computed, and its attention mask
        self._projections: dict[tuple[int, str], Tensor] = {}
        self._mask: Tensor | None = None
        self._handles: list = []

        try:
            self._register(modules)
        except BaseException:
            self.remove()  # no half-installed hooks left behind
            raise

    def _register(self, modules: nn.ModuleList) -> None:
        for index in self.layers:
            layer = modules[index]
            if "hidden" in self.what:
                self._handles.append(layer.register_forward_hook(self._keep_hidden(index)))
            if self.what & {"attention", "query", "key", "value"}:
                attention = _self_attention(layer, index)
                for name in ("query", "key", "value"):
                    if name in self.what:
                        hook = self._keep(getattr(self, name), index)
                        self._handles.append(getattr(attention, name).register_forward_hook(hook))
                if "attention" in self.what:
                    for name in ("query", "key"):
                        hook = self._keep(self._projections, (index, name))
                        self._handles.append(getattr(attention, name).register_forward_hook(hook))
                    self._handles.append(attention.register_forward_hook(self._compute_attention(index, attention)))
        base = self.model.base_model
        # the attention_mask argument's position, for a base model called with it positionally
        position = list(inspect.signature(base.forward).parameters).index("attention_mask") \
            if "attention" in self.what else None
        self._handles.append(base.register_forward_pre_hook(self._start_forward(position), with_kwargs=True))

    # -- hooks

    def _start_forward(self, mask_position: int | None):
        """Empty the dictionaries when a forward starts (they only ever hold one forward's tensors); keep its mask."""

        def hook(module, args, kwargs):
            self.clear()
            if mask_position is not None:
                mask = kwargs["attention_mask"] if "attention_mask" in kwargs else (
                    args[mask_position] if len(args) > mask_position else None)
                if mask is not None and mask.dim() != 2:
                    raise ConfigError("attention", "attention_mask",
                                      f"attention maps need a [batch, sequence] attention_mask; got shape "
                                      f"{tuple(mask.shape)}")
                self._mask = mask

        return hook

    @staticmethod
    def _keep(store: dict, key: int | tuple[int, str]):
        def hook(module, args, output):
            store[key] = output

        return hook

    def _keep_hidden(self, index: int):
        def hook(module, args, output):
            # transformers 5 BertLayer returns a tensor; older versions and some models a tuple
            self.hidden[index] = output[0] if isinstance(output, tuple) else output

        return hook

    def _compute_attention(self, index: int, module: nn.Module):
        head_size, scaling = _attention_shape(module)

        def hook(module, args, output):
            query, key = self._projections.pop((index, "query")), self._projections.pop((index, "key"))
            self.attention[index] = attention_probabilities(query, key, self._mask, head_size, scaling)

        return hook

    # -- public

    def clear(self) -> None:
        """Drop the kept tensors (and the autograd graph they keep alive)."""
        for store in (self.hidden, self.attention, self.query, self.key, self.value, self._projections):
            store.clear()
        self._mask = None

    def remove(self) -> None:
        """Remove the hooks and drop the kept tensors; idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def __enter__(self) -> LayerCapture:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"LayerCapture({type(self.model).__name__}, layers={list(self.layers)}, what={sorted(self.what)})"
