"""Tokenizers: BERT-style WordPiece and the BiLSTM's word level, trained locally and deterministically, or loaded.

Both vocabularies are built by :func:`frequent_words` (ties broken alphabetically, so two
processes build the same vocabulary from the same text) and carry :data:`SPECIAL_TOKENS` in
their BERT roles (:func:`wrap_tokenizer`). Any other name is a Hugging Face id or a local
model directory whose fast tokenizer :func:`load_tokenizer` loads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from kd_core.io.errors import ConfigError, ModelError
from kd_core.models.presets import first_line, resolve_pretrained

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


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
    return wrap_tokenizer(tokenizer, token_types=True)


def train_word_tokenizer(texts: Iterable[str], vocab_size: int = 10000, lowercase: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer for the BiLSTM, built from ``texts`` (offline, deterministic).

    Text is normalised as BERT does (``lowercase`` optional) and split on spaces and punctuation;
    the vocabulary is the special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4) and then the
    most frequent words, ties broken alphabetically, up to ``vocab_size`` entries; any other word
    is ``[UNK]``. A sentence is encoded as its words, a pair as ``a [SEP] b`` with token types
    0 (``a`` and ``[SEP]``) and 1 (``b``); no ``[CLS]``, as the BiLSTM pools over time.
    """
    specials = tuple(SPECIAL_TOKENS)
    if vocab_size <= len(specials):
        raise ConfigError("tokenizer", "vocab_size", f"must be > {len(specials)} (the special tokens), got {vocab_size}")
    vocab, normalizer, pre_tokenizer = frequent_words(texts, vocab_size, lowercase, lambda counts: list(specials))
    tokenizer = Tokenizer(models.WordLevel({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A", pair="$A [SEP] $B:1", special_tokens=[("[SEP]", tokenizer.token_to_id("[SEP]"))])
    return wrap_tokenizer(tokenizer)


def wrap_tokenizer(tokenizer: Tokenizer, token_types: bool = False) -> PreTrainedTokenizerFast:
    """A ``tokenizers`` tokenizer with :data:`SPECIAL_TOKENS` in their BERT roles, as a ``transformers`` one.

    With ``token_types`` (a BERT reads segment ids) its encodings, also in plain Hugging Face code
    loading the saved tokenizer, carry ``token_type_ids``; the BiLSTM reads none.
    """
    names = ["input_ids", "token_type_ids", "attention_mask"] if token_types else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
        model_input_names=names,
    )


def load_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """The fast tokenizer of a hub id or local model directory."""
    from transformers import AutoTokenizer  # loads torch: only where a saved tokenizer is read

    source = resolve_pretrained(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelError(name, "from_pretrained", f"cannot load tokenizer: {first_line(err)}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(name, "tokenizer", "has no fast tokenizer")
    return tokenizer
