"""Featurisation: examples -> fixed-length model inputs with span labels and masks.

A fast tokenizer encodes ``[CLS] question [SEP] passage [SEP]``; passages longer than the
window are cut into overlapping windows (``doc_stride`` tokens of overlap, the Hugging
Face meaning of ``stride``). A question longer than ``max_query_length`` tokens (64 by default,
BERT's and Hugging Face's SQuAD convention) is cut to its first ``max_query_length`` tokens
first, so the question part of every window (and the width ``Q`` of attention knowledge) has a
bound; :func:`truncated_questions` counts the questions cut. Each window is one *feature* with:

* ``feature_id`` = ``"<example id>#<window index>"`` (stable: it depends only on the
  example and the tokenisation settings),
* ``input_ids``, ``attention_mask``, ``token_type_ids`` padded to ``max_length``,
* ``offsets``: per token ``[char_start, char_end)`` into the context, ``[-1, -1]`` for
  tokens that are not passage tokens,
* ``passage_mask`` / ``question_mask``: which tokens belong to the passage / question,
* ``start_position`` / ``end_position``: the gold answer's first and last token, or ``0``
  (the ``[CLS]`` token) when the answer is not wholly inside this window or the question is
  unanswerable.

The window settings themselves, :class:`~kd_core.data.windows.FeatureConfig`, are plain data in
:mod:`kd_core.data.windows` (options check them without importing ``datasets``).
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset, Features, List, Value
from transformers import PreTrainedTokenizerFast

from kd_core.data.windows import FeatureConfig
from kd_core.io.bars import no_progress_bars
from kd_core.io.errors import ConfigError

FEATURE_FEATURES = Features(
    {
        "feature_id": Value("string"),
        "example_id": Value("string"),
        "domain": Value("string"),
        "input_ids": List(Value("int32")),
        "attention_mask": List(Value("int8")),
        "token_type_ids": List(Value("int8")),
        "offsets": List(List(Value("int32"))),
        "passage_mask": List(Value("bool")),
        "question_mask": List(Value("bool")),
        "start_position": Value("int32"),
        "end_position": Value("int32"),
    }
)

#: Special tokens around a question/passage pair: [CLS] q [SEP] p [SEP].
SPECIAL_TOKENS_IN_PAIR = 3


def question_lengths(examples: Dataset, tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Each question's length in tokens, before any cut."""
    return [len(ids) for ids in tokenizer(list(examples["question"]), add_special_tokens=False)["input_ids"]]


def truncated_questions(examples: Dataset, tokenizer: PreTrainedTokenizerFast, config: FeatureConfig) -> int:
    """How many questions of ``examples`` are longer than ``config.max_query_length`` tokens (and are cut)."""
    return sum(length > config.max_query_length for length in question_lengths(examples, tokenizer))


def cut_questions(questions: list[str], tokenizer: PreTrainedTokenizerFast, limit: int) -> list[str]:
    """Each question cut after its ``limit``-th token (by the token's character offsets), others as they are."""
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    cut = []
    for question, ids, offsets in zip(questions, encoded["input_ids"], encoded["offset_mapping"]):
        keep = limit
        while len(ids) > limit:  # a cut inside a word can re-tokenise longer: cut one token earlier
            question = question[: offsets[keep - 1][1]]
            ids = tokenizer(question, add_special_tokens=False)["input_ids"]
            keep -= 1
        cut.append(question)
    return cut


def _check_question_lengths(examples: Dataset, tokenizer: PreTrainedTokenizerFast, config: FeatureConfig) -> None:
    """Refuse settings that leave no room (or less than the stride) for the passage beside the longest (cut)
    question."""
    lengths = [min(n, config.max_query_length) for n in question_lengths(examples, tokenizer)]
    if not lengths:
        return
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    room = config.max_length - lengths[longest] - SPECIAL_TOKENS_IN_PAIR
    where = f"example {examples[longest]['id']!r}"
    if room < 1:
        raise ConfigError(
            "features",
            where,
            f"max_length {config.max_length} is smaller than the question ({lengths[longest]} tokens + "
            f"{SPECIAL_TOKENS_IN_PAIR} special tokens)",
        )
    if config.doc_stride >= room:
        raise ConfigError(
            "features", where, f"doc_stride {config.doc_stride} must be smaller than the {room} passage tokens left "
            f"beside the longest question ({lengths[longest]} tokens); lower doc_stride or raise max_length"
        )


def _token_span(offsets: list[tuple[int, int]], passage: list[bool], char_start: int, char_end: int) -> tuple[int, int]:
    """Token positions of the characters ``[char_start, char_end)``, or ``(0, 0)`` if not all inside."""
    positions = [i for i, inside in enumerate(passage) if inside]
    if not positions:
        return 0, 0
    first, last = positions[0], positions[-1]
    if offsets[first][0] > char_start or offsets[last][1] < char_end:
        return 0, 0
    start = next(i for i in positions if offsets[i][1] > char_start)
    end = next(i for i in reversed(positions) if offsets[i][0] < char_end)
    return start, max(start, end)


def _featurize_batch(batch: dict[str, list[Any]], tokenizer: PreTrainedTokenizerFast, config: FeatureConfig) -> dict[str, list[Any]]:
    encoded = tokenizer(
        cut_questions(batch["question"], tokenizer, config.max_query_length),
        batch["context"],
        truncation="only_second",
        max_length=config.max_length,
        stride=config.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        padding="max_length",
    )
    out: dict[str, list[Any]] = {name: [] for name in FEATURE_FEATURES}
    window_index: dict[int, int] = {}
    for f, sample in enumerate(encoded["overflow_to_sample_mapping"]):
        window = window_index.get(sample, 0)
        window_index[sample] = window + 1
        sequence_ids = encoded.sequence_ids(f)
        passage = [sid == 1 for sid in sequence_ids]
        question = [sid == 0 for sid in sequence_ids]
        offsets = [tuple(o) if inside else (-1, -1) for o, inside in zip(encoded["offset_mapping"][f], passage)]
        answers = batch["answers"][sample]
        if batch["is_impossible"][sample] or not answers["text"]:
            start, end = 0, 0
        else:
            char_start = answers["answer_start"][0]
            start, end = _token_span(offsets, passage, char_start, char_start + len(answers["text"][0]))
        example_id = batch["id"][sample]
        out["feature_id"].append(f"{example_id}#{window}")
        out["example_id"].append(example_id)
        out["domain"].append(batch["domain"][sample])
        out["input_ids"].append(encoded["input_ids"][f])
        out["attention_mask"].append(encoded["attention_mask"][f])
        out["token_type_ids"].append(encoded["token_type_ids"][f])
        out["offsets"].append([list(o) for o in offsets])
        out["passage_mask"].append(passage)
        out["question_mask"].append(question)
        out["start_position"].append(start)
        out["end_position"].append(end)
    return out


def featurize(examples: Dataset, tokenizer: PreTrainedTokenizerFast, config: FeatureConfig) -> Dataset:
    """Turn an example dataset into a feature dataset (one row per window); see the module doc."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("features", "tokenizer", "a fast tokenizer (offset mappings) is required")
    _check_question_lengths(examples, tokenizer, config)
    with no_progress_bars():  # runs in workers and in every pyfunc prediction: no "featurize: 100%|" bar there
        return examples.map(
            _featurize_batch,
            batched=True,
            batch_size=256,
            remove_columns=examples.column_names,
            features=FEATURE_FEATURES,
            fn_kwargs={"tokenizer": tokenizer, "config": config},
            load_from_cache_file=False,
            desc="featurize",
        )
