"""Teacher and student models: tiny presets, any Hugging Face id or local path, one output form per head.

* **Presets** (``tiny-bert``, ``small-bert``, ``tiny-bert-1l``) are BERT configurations built
  from scratch with a WordPiece tokenizer trained locally on the data (no download). They
  make the demo and the tests run anywhere. A **shape name** ``bert-L<layers>-H<hidden>-A<heads>-I<intermediate>``
  (e.g. ``bert-L2-H64-A2-I256``, as Google's BERT miniatures are named) is a preset of any size,
  and ``bilstm-E<embedding>-H<hidden>`` a BiLSTM classifier (:mod:`kd_core.bilstm`, sentence
  tasks, a word-level tokenizer).
* **Any other name** is a Hugging Face model id or a local directory, loaded with
  ``AutoModelForQuestionAnswering`` (span QA) or ``AutoModelForSequenceClassification``
  (sentence tasks, :func:`load_sequence_model`) and ``AutoTokenizer``; an encoder without
  the head gets a fresh one. A name that resolves to nothing raises
  :class:`~kd_core.errors.ModelError`.
* :func:`qa_forward` gives every model the same output, :class:`QAOutput`: start/end logits
  and, on request, the **question-passage attention** used by A2D's attention
  distillation. Our choice (the paper attends from passage to question inside its own
  architecture; a BERT has one self-attention over the pair): take the last layer's
  self-attention ``A`` (``[B, H, S, S]``), average over heads, keep the columns of the
  question tokens and renormalise each row over them,

      E_jq = mean_h A_h[j, q] / sum_{q' in question} mean_h A_h[j, q'],

  for passage tokens ``j`` (other rows are 0). Questions are packed left: column ``c`` is
  the ``c``-th question token, and columns past the question's length are 0.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from torch import Tensor
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from kd_core.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification
from kd_core.errors import ConfigError, ModelError
from kd_core.layer_capture import transformer_layers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

#: Tiny BERT shapes built from a config: (layers, hidden, heads, intermediate).
PRESETS: dict[str, dict[str, int]] = {
    "tiny-bert": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256},
    "tiny-bert-1l": {"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256},
    "small-bert": {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512},
}


@dataclass
class QAOutput:
    """What every QA model returns here: ``[B, S]`` logits and optionally ``[B, S, Q]`` attention."""

    start_logits: Tensor
    end_logits: Tensor
    attention: Tensor | None = None


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
    source = _resolve_pretrained(name)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ModelError(name, "config", f"cannot read the model's configuration: {_first_line(err)}") from err
    layers, width = getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
    if not isinstance(layers, int) or not isinstance(width, int):
        raise ModelError(name, "config", f"a {config.model_type} configuration gives no layer count and hidden size")
    return layers, width


def is_preset(name: str) -> bool:
    """True for names built here from a configuration (presets, BERT and BiLSTM shapes), not loaded."""
    return bert_shape(name) is not None or bilstm_shape(name) is not None


def frequent_words(texts: Iterable[str], vocab_size: int, lowercase: bool,
                   head: Callable[[Counter[str]], list[str]]) -> tuple[list[str], normalizers.Normalizer,
                                                                      pre_tokenizers.PreTokenizer]:
    """A deterministic vocabulary: ``head(word counts)``, then the most frequent words (ties alphabetical) up to
    ``vocab_size``; with the BERT normaliser (``lowercase`` optional) and pre-tokenizer it was counted with."""
    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = head(counts)
    known = set(vocab)
    for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
            known.add(word)
    return vocab, normalizer, pre_tokenizer


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int = 2000, lowercase: bool = True) -> PreTrainedTokenizerFast:
    """Build a BERT-style WordPiece tokenizer from ``texts`` (offline, deterministic).

    The vocabulary is the special tokens, every character seen (as a word start and as a
    ``##`` continuation, so any word can be spelt) and then the most frequent whole words,
    ties broken alphabetically, up to ``vocab_size``. (The ``tokenizers`` WordPiece trainer
    breaks ties in hash order, so two runs on the same text gave different vocabularies;
    a model trained in one process would not match features made in another.)
    Pairs are encoded ``[CLS] A [SEP] B [SEP]`` with token types 0 / 1, as BERT expects.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 30:
        raise ConfigError("tokenizer", "vocab_size", f"must be >= {len(SPECIAL_TOKENS) + 30}, got {vocab_size}")
    def spellers(counts: Counter[str]) -> list[str]:
        characters = sorted({char for word in counts for char in word})
        return list(SPECIAL_TOKENS) + characters + [f"##{char}" for char in characters]

    vocab, normalizer, pre_tokenizer = frequent_words(texts, vocab_size, lowercase, spellers)
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return wrap_tokenizer(tokenizer)


def wrap_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """A ``tokenizers`` tokenizer with :data:`SPECIAL_TOKENS` in their BERT roles, as a ``transformers`` one."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


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


def _first_line(err: BaseException) -> str:
    """The first line of an error message (loaders' errors run to many lines), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _resolve_pretrained(name: str) -> str:
    """Check that ``name`` is a local model directory or a reachable hub id; return it."""
    if Path(name).is_dir():
        if not (Path(name) / "config.json").exists():
            raise ModelError(name, "config.json", "directory has no config.json, so it is not a model")
        return name
    if Path(name).exists():
        raise ModelError(name, "path", "is a file, not a model directory")
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        raise ModelError(name, "path", "no such model directory (and not a hub id of the form ORG/NAME)")
    return name


def load_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """The fast tokenizer of a hub id or local model directory."""
    source = _resolve_pretrained(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ModelError(name, "from_pretrained", f"cannot load tokenizer: {_first_line(err)}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(name, "tokenizer", "has no fast tokenizer")
    return tokenizer


def load_pretrained(name: str, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a QA model and its tokenizer from a hub id or a local directory.

    An encoder checkpoint without a QA head gets a new one, initialised from ``seed``.
    """
    source = _resolve_pretrained(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForQuestionAnswering.from_pretrained(source, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise ModelError(name, "from_pretrained", f"cannot load model: {_first_line(err)}") from err
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
    source = _resolve_pretrained(name)
    try:
        loaded_tokenizer = tokenizer or AutoTokenizer.from_pretrained(source)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, problem_type=problem, ignore_mismatched_sizes=True, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise ModelError(name, "from_pretrained", f"cannot load model: {_first_line(err)}") from err
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


def every_other_layer(layers: int) -> tuple[int, ...]:
    """DistilBERT's choice of teacher layers for a half-depth student: ``(0, 2, 4, ...)``."""
    return tuple(range(0, layers, 2))


def enable_attention_outputs(model: PreTrainedModel) -> None:
    """Switch the model to eager attention, the only implementation that returns attention maps."""
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
    """Run a QA model on a feature batch; with ``num_question_tokens > 0`` also return attention.

    Attention needs eager attention (see :func:`enable_attention_outputs`).
    """
    want_attention = num_question_tokens > 0
    out = model(**model_inputs(batch), output_attentions=want_attention, return_dict=True)
    attention = None
    if want_attention:
        if not out.attentions:
            raise ConfigError("models", "attention", "model returned no attentions; call enable_attention_outputs")
        attention = question_passage_attention(
            out.attentions[-1], batch["question_mask"].bool(), batch["passage_mask"].bool(), num_question_tokens
        )
    return QAOutput(out.start_logits, out.end_logits, attention)


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
