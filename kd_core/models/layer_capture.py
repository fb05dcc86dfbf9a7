"""Capture a BERT-like model's per-layer internals during an ordinary forward call.

:class:`LayerCapture` registers forward hooks on chosen layers of a Hugging Face encoder
(``model.base_model.encoder.layer[i]``: BERT, RoBERTa, ELECTRA, XLM-R, ...) and keeps that
forward's tensors, so that intermediate-layer losses (:mod:`kd_core.objectives.layer_losses`) can be
computed without changing how the model is called::

    with LayerCapture(student, layers=[1, 3], what={"hidden", "attention"}) as cap:
        out = student(input_ids, attention_mask=mask)          # an ordinary call
        loss = hidden_mse_loss(cap.hidden[3], teacher_hidden, mask.bool(), projection)

Attention probabilities in transformers 5: ``BertSelfAttention.forward`` returns
``(attn_output, attn_weights)`` and ``attn_weights`` is whatever the configured attention
function returns: the probabilities with ``"eager"``, ``None`` with the default ``"sdpa"``
(and with flash / flex attention). ``output_attentions=True`` does not switch the
implementation: under sdpa it only logs a warning and returns an empty tuple. So when
``"attention"`` is captured, :class:`LayerCapture` switches the model to eager attention at
construction (``model.set_attn_implementation("eager")``) and switches it back in
:meth:`LayerCapture.remove` (unless another capture on the same model still needs it). The
caller never passes ``output_attentions``: eager attention returns the probabilities on
every call. Note that eager returns them **after** attention dropout: in training mode with
``attention_probs_dropout_prob > 0`` the captured maps are the dropped-out ones.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence

from torch import Tensor, nn

from kd_core.io.errors import ConfigError

#: What can be captured: a layer's output hidden states ``[B, S, H]``, its self-attention
#: probabilities ``[B, heads, S, S]``, and the outputs of its query/key/value Linear modules
#: ``[B, S, H]`` (all heads together, before they are split).
CAPTURABLE = ("hidden", "attention", "query", "key", "value")

# model -> [attention implementation before the first capture switched it, captures needing eager]
_EAGER_USERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


class LayerCapture:
    """Forward hooks that keep chosen layers' hidden states, attention maps, queries, keys or values.

    ``LayerCapture(model, layers, what)``: ``layers`` are 0-based indices into
    ``model.base_model.encoder.layer`` (:class:`ConfigError` when out of range, or when the
    model has no such layers), ``what`` a subset of :data:`CAPTURABLE` (may be empty: then
    nothing is captured). After each forward of the model, ``capture.hidden[i]``,
    ``capture.attention[i]``, ``capture.query[i]``, ``capture.key[i]`` and
    ``capture.value[i]`` hold that forward's tensors for layer ``i``
    (the dictionaries are emptied when the next forward starts). The tensors are not
    detached: when the model runs with gradients, a loss on them backpropagates into the
    model; a teacher run under ``torch.no_grad()`` gives tensors without a graph.

    ``clear()`` drops the kept tensors (and so the graph they hold), ``remove()`` removes
    the hooks and restores the attention implementation; the object is a context manager
    that removes itself on exit. Capturing ``"attention"`` switches the model to eager
    attention (see the module docstring). With gradient checkpointing the hooks fire again
    during the backward recomputation, overwriting the kept tensors with equal ones.
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
        self.layers = tuple(chosen)
        self.hidden: dict[int, Tensor] = {}
        self.attention: dict[int, Tensor] = {}
        self.query: dict[int, Tensor] = {}
        self.key: dict[int, Tensor] = {}
        self.value: dict[int, Tensor] = {}
        self._handles: list = []
        self._uses_eager = False

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
                if "attention" in self.what:
                    self._handles.append(attention.register_forward_hook(self._keep_attention(index)))
                for name in ("query", "key", "value"):
                    if name in self.what:
                        hook = self._keep(getattr(self, name), index)
                        self._handles.append(getattr(attention, name).register_forward_hook(hook))
        # Empty the dictionaries when a forward starts, so that they only ever hold one forward's tensors.
        self._handles.append(self.model.base_model.register_forward_pre_hook(lambda module, args: self.clear()))
        if "attention" in self.what:
            self._use_eager_attention()

    # -- hooks

    @staticmethod
    def _keep(store: dict[int, Tensor], index: int):
        def hook(module, args, output):
            store[index] = output

        return hook

    def _keep_hidden(self, index: int):
        def hook(module, args, output):
            # transformers 5 BertLayer returns a tensor; older versions and some models a tuple
            self.hidden[index] = output[0] if isinstance(output, tuple) else output

        return hook

    def _keep_attention(self, index: int):
        def hook(module, args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                implementation = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
                raise ConfigError("attention", f"layer {index}",
                                  f"the self-attention returned no probabilities (attention implementation "
                                  f"{implementation!r}); it must stay 'eager' while attention is captured")
            self.attention[index] = weights

        return hook

    # -- attention implementation

    def _use_eager_attention(self) -> None:
        config = getattr(self.model, "config", None)
        if config is None or not hasattr(self.model, "set_attn_implementation"):
            return  # not a PreTrainedModel: the hook reports it if no probabilities come back
        users = _EAGER_USERS.get(self.model)
        if users is None:
            previous = config._attn_implementation
            if previous != "eager":
                self.model.set_attn_implementation("eager")
            users = _EAGER_USERS[self.model] = [previous, 0]
        users[1] += 1
        self._uses_eager = True

    def _release_eager_attention(self) -> None:
        if not self._uses_eager:
            return
        self._uses_eager = False
        users = _EAGER_USERS.get(self.model)
        if users is None:
            return
        users[1] -= 1
        if users[1] <= 0:
            del _EAGER_USERS[self.model]
            previous = users[0]
            if previous and previous != "eager" and self.model.config._attn_implementation == "eager":
                self.model.set_attn_implementation(previous)

    # -- public

    def clear(self) -> None:
        """Drop the kept tensors (and the autograd graph they keep alive)."""
        for store in (self.hidden, self.attention, self.query, self.key, self.value):
            store.clear()

    def remove(self) -> None:
        """Remove the hooks, drop the kept tensors and restore the attention implementation; idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()
        self._release_eager_attention()

    def __enter__(self) -> LayerCapture:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"LayerCapture({type(self.model).__name__}, layers={list(self.layers)}, what={sorted(self.what)})"
