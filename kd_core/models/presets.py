"""Model names built here from a configuration (presets and shape names), and the resolution of every other name.

* **Presets** (``tiny-bert``, ``small-bert``, ``tiny-bert-1l``) are BERT configurations built
  from scratch with a WordPiece tokenizer trained locally on the data (no download). They
  make the demo and the tests run anywhere. A **shape name** ``bert-L<layers>-H<hidden>-A<heads>-I<intermediate>``
  (e.g. ``bert-L2-H64-A2-I256``, as Google's BERT miniatures are named) is a preset of any size,
  and ``bilstm-E<embedding>-H<hidden>`` a BiLSTM classifier (:mod:`kd_core.models.bilstm`, sentence
  tasks, a word-level tokenizer).
* **Any other name** is a Hugging Face model id or a local directory
  (:func:`resolve_pretrained`); a name that resolves to nothing raises
  :class:`~kd_core.io.errors.ModelError`. A local directory's ``config.json`` and safetensors
  weights are checked to be whole first (their headers only,
  :func:`~kd_core.io.file_checks.check_model_folder`), so ``--check`` refuses a cut or random
  ``model.safetensors`` with one line naming it. Nothing is loaded with remote code
  (``trust_remote_code=False`` everywhere).
"""

from __future__ import annotations

import re
from pathlib import Path

from kd_core.io.errors import ConfigError, ModelError
from kd_core.io.file_checks import check_model_folder, first_line

#: Tiny BERT shapes built from a config: (layers, hidden, heads, intermediate).
PRESETS: dict[str, dict[str, int]] = {
    "tiny-bert": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256},
    "tiny-bert-1l": {"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256},
    "small-bert": {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512},
}


BERT_SHAPE = re.compile(r"bert-L(\d+)-H(\d+)-A(\d+)-I(\d+)")
BILSTM_SHAPE = re.compile(r"bilstm-E(\d+)-H(\d+)")


def bert_shape(name: str) -> dict[str, int] | None:
    """The BERT configuration fields of a preset or shape name (module doc), ``None`` for other names."""
    if name in PRESETS:
        return PRESETS[name]
    found = BERT_SHAPE.fullmatch(name)
    if found is None:
        return None
    layers, hidden, heads, intermediate = (int(v) for v in found.groups())
    if min(layers, hidden, heads, intermediate) < 1 or hidden % heads:
        raise ConfigError("models", name, "a BERT shape needs sizes >= 1 and a hidden size divisible by the heads")
    return {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
            "intermediate_size": intermediate}


def bilstm_shape(name: str) -> dict[str, int] | None:
    """``{"embedding_dim", "hidden_size"}`` of a ``bilstm-E<e>-H<h>`` name, ``None`` for other names."""
    found = BILSTM_SHAPE.fullmatch(name)
    if found is None:
        return None
    embedding, hidden = (int(v) for v in found.groups())
    if min(embedding, hidden) < 1:
        raise ConfigError("models", name, "a BiLSTM shape needs sizes >= 1")
    return {"embedding_dim": embedding, "hidden_size": hidden}


def model_shape(name: str) -> tuple[int, int]:
    """``(transformer layers, hidden size)`` of a preset, shape name, local model or hub id (its config only)."""
    shape = bert_shape(name)
    if shape is not None:
        return shape["num_hidden_layers"], shape["hidden_size"]
    if bilstm_shape(name) is not None:
        raise ConfigError("models", name, "a BiLSTM has no transformer layers")
    from transformers import AutoConfig  # only for a model that is no preset: listing options needs none

    source = resolve_pretrained(name)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelError(name, "config", f"cannot read the model's configuration: {first_line(err)}") from err
    layers, width = getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
    if not isinstance(layers, int) or not isinstance(width, int):
        raise ModelError(name, "config", f"a {config.model_type} configuration gives no layer count and hidden size")
    return layers, width


def is_preset(name: str) -> bool:
    """True for names built here from a configuration (presets, BERT and BiLSTM shapes), not loaded."""
    return bert_shape(name) is not None or bilstm_shape(name) is not None


def resolve_pretrained(name: str) -> str:
    """Check that ``name`` is a local model directory (whole: module doc) or a reachable hub id; return it."""
    if Path(name).is_dir():
        if not (Path(name) / "config.json").exists():
            raise ModelError(name, "config.json", "directory has no config.json, so it is not a model")
        check_model_folder(Path(name))
        return name
    if Path(name).exists():
        raise ModelError(name, "path", "is a file, not a model directory")
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        raise ModelError(name, "path", "no such model directory (and not a hub id of the form ORG/NAME)")
    return name


def every_other_layer(layers: int) -> tuple[int, ...]:
    """DistilBERT's choice of teacher layers for a half-depth student: ``(0, 2, 4, ...)``."""
    return tuple(range(0, layers, 2))
