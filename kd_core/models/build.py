"""Teacher and student models: presets built from a configuration, any Hugging Face id or local path loaded.

Presets and shape names (:mod:`kd_core.models.presets`) are built here with a tokenizer
trained on the data; any other name is loaded with ``AutoModelForQuestionAnswering`` (span
QA) or ``AutoModelForSequenceClassification`` (sentence tasks, :func:`load_sequence_model`);
an encoder without the head gets a fresh one, initialised from the seed. Also here: a
shallower student from chosen teacher layers (:func:`keep_layers`), saving in
``save_pretrained`` form, parameter counts and dropout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from kd_core.io.errors import ConfigError, ModelError
from kd_core.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification
from kd_core.models.layer_capture import transformer_layers
from kd_core.models.presets import PRESETS, bert_shape, bilstm_shape, first_line, is_preset, resolve_pretrained


def build_preset_model(name: str, tokenizer: PreTrainedTokenizerFast, seed: int, max_position: int = 512) -> BertForQuestionAnswering:
    """A freshly initialised preset BERT QA model whose vocabulary is ``tokenizer``'s."""
    shape = bert_shape(name)
    if shape is None:
        kind = "a BiLSTM reads sentence tasks only" if bilstm_shape(name) else "unknown preset"
        raise ModelError(name, "preset", f"{kind}; known: {', '.join(sorted(PRESETS))} or bert-L<n>-H<n>-A<n>-I<n>")
    config = BertConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertForQuestionAnswering(config)


def load_pretrained(name: str, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a QA model and its tokenizer from a hub id or a local directory.

    An encoder checkpoint without a QA head gets a new one, initialised from ``seed``.
    """
    source = resolve_pretrained(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForQuestionAnswering.from_pretrained(source, use_safetensors=True,
                                                                  trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelError(name, "from_pretrained", f"cannot load model: {first_line(err)}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(name, "tokenizer", "has no fast tokenizer (offset mappings are needed for span QA)")
    return model, tokenizer


def load_qa_model(
    name: str, seed: int, tokenizer: PreTrainedTokenizerFast | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Build a preset (with the given locally trained ``tokenizer``) or load ``name`` from disk/hub."""
    if is_preset(name):
        if tokenizer is None:
            raise ConfigError("models", name, "a preset model needs a tokenizer trained on the data")
        return build_preset_model(name, tokenizer, seed), tokenizer
    return load_pretrained(name, seed)


def load_sequence_model(
    name: str, seed: int, num_labels: int, tokenizer: PreTrainedTokenizerFast | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A sentence(-pair) model with a ``num_labels``-way head (``num_labels = 1``: one regression value).

    Presets are built from their configuration with ``tokenizer``'s vocabulary; any other name
    is a hub id or a local directory loaded with ``AutoModelForSequenceClassification`` (a
    head of another size, or none, is initialised from ``seed``).
    """
    if num_labels < 1:
        raise ConfigError("models", "num_labels", f"must be >= 1, got {num_labels}")
    problem = "regression" if num_labels == 1 else "single_label_classification"
    if is_preset(name):
        if tokenizer is None:
            raise ConfigError("models", name, "a preset model needs a tokenizer trained on the data")
        lstm = bilstm_shape(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if lstm is not None:
                lstm_config = BiLSTMConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                           num_labels=num_labels, problem_type=problem, **lstm)
                return BiLSTMForSequenceClassification(lstm_config), tokenizer
            config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=num_labels,
                                problem_type=problem, **bert_shape(name))
            return BertForSequenceClassification(config), tokenizer
    source = resolve_pretrained(name)
    try:
        loaded_tokenizer = tokenizer or AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, problem_type=problem, ignore_mismatched_sizes=True, use_safetensors=True,
                trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelError(name, "from_pretrained", f"cannot load model: {first_line(err)}") from err
    return model, loaded_tokenizer


def keep_layers(model: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """Make ``model`` shallower in place: keep the transformer layers ``layers`` (0-based, in that order).

    A student initialised from chosen layers of a teacher: its first layers (Sucik 2020), or
    every other one (DistilBERT: ``(0, 2, 4, ...)``). The embeddings, pooler and head are
    kept; the kept layers' weights are the teacher's, unchanged.
    """
    blocks = transformer_layers(model)
    wanted = list(layers)
    if not wanted or any(not 0 <= i < len(blocks) for i in wanted) or len(set(wanted)) != len(wanted):
        raise ConfigError("models", "layers", f"need distinct layer indices in [0, {len(blocks) - 1}], got {wanted}")
    model.base_model.encoder.layer = torch.nn.ModuleList([blocks[i] for i in wanted])
    model.config.num_hidden_layers = len(wanted)
    return model


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, directory: str | os.PathLike[str]) -> Path:
    """Write the model (safetensors) and tokenizer in ``save_pretrained`` form; return the folder."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (the speed table's size column)."""
    return sum(p.numel() for p in model.parameters())


def set_dropout(model: torch.nn.Module, rate: float) -> None:
    """Set every dropout layer of ``model`` to ``rate`` (and the configuration's dropout rates, for the record)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = rate
    config = getattr(model, "config", None)
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if config is not None and hasattr(config, name):
            setattr(config, name, rate)
