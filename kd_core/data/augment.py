"""Transfer-set augmentation for sentence tasks (Tang et al. 2019, section 3.3).

Tang et al. ("Distilling Task-Specific Knowledge from BERT into Simple Neural Networks")
enlarge the transfer set of a distillation with perturbed copies of the training examples;
the copies carry no gold label (a teacher labels them later). For every original example
and each of ``n_iter`` repetitions (independent draws):

1. **Masking / POS-guided replacement**, word by word: draw ``X_i ~ U[0, 1]``; if
   ``X_i < p_mask`` the word becomes the mask token (``[MASK]``); else if
   ``X_i < p_mask + p_pos`` it becomes another word with the same part-of-speech tag, drawn
   uniformly from the lexicon's words of that tag (a word with no known tag, or whose tag has
   no other word, stays as it is);
2. **n-gram sampling**: with probability ``p_ng`` the whole (perturbed) example is replaced
   by an n-gram of it, ``n`` uniform in ``{1, ..., max_ngram}`` (capped at the example's
   length) and its start uniform.

An augmented example whose ``(text_a, text_b)`` equals that of any original example of the
input, or of an augmented example made before it, is dropped (Tang et al. keep only distinct
examples); the ids of the kept ones are ``<original id>~aug<k>``, ``k`` the repetition index,
so they may have gaps. The *draws* of an example depend only on ``(seed, its id)``
(a ``random.Random`` of its own), never on the other examples; which draws are *kept* does,
through the duplicate rule.

Choices of ours, where the paper is silent or where this project departs from it:

* **Words** are the whitespace-separated tokens of a text; punctuation stays attached to
  its word (``"great,"`` is one word). Masking replaces the whole token, punctuation included;
  a POS replacement looks the word up without its leading/trailing punctuation and keeps that
  punctuation around the new word (``"Lisbon."`` -> ``"Porto."``). An n-gram is joined with
  single spaces.
* **Pairs** (``pair=True``): the word rules apply to both sentences, and the n-gram rule to
  each side independently (its own ``p_ng`` draw, ``n`` and start). For single-sentence tasks
  ``text_b`` must be empty and stays so.
* **Tags come from a lexicon, not a tagger** (a departure from the paper, which tags with a
  POS tagger; none is available offline here): :class:`PosLexicon` maps a word to one tag
  whatever its context (case-insensitive). The tags may be finer than universal POS tags
  (``PROPN-city``, ``ADJ-colour``) so that a replacement keeps the sentence grammatical and
  in-domain; the coarse tag is the part before ``-`` (:func:`coarse_tag`). A replacement
  takes the original word's capitalisation of the first letter.
* **Uniform replacement**: the new word is drawn uniformly among the other words of the tag;
  the paper samples it from the corpus unigram distribution renormalised within the tag.
* ``n_iter`` defaults to 4 (Tang et al. use 20 on their small data sets) to keep the
  transfer set, and the teacher's labelling of it, small on CPU.

The hyperparameters, :class:`~kd_core.data.augment_settings.AugmentSettings`, are plain data in
:mod:`kd_core.data.augment_settings` (a job's options hold them without importing ``datasets``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets

from kd_core.data.augment_settings import AugmentSettings
from kd_core.data.schema import (
    SENTENCE_COLUMNS,
    SENTENCE_FEATURES,
    sentences_to_dataset,
)
from kd_core.io.bars import no_progress_bars
from kd_core.io.errors import ConfigError, DataError

MASK_TOKEN = "[MASK]"

# Word lists of vocab/sentences.yaml and their tags (module doc: finer tags keep replacements
# grammatical; e.g. a city is swapped only for a city, "in Lisbon" -> "in Porto").
EMBEDDED_TAGS: dict[str, str] = {
    "people": "PROPN-person",
    "cities": "PROPN-city",
    "days": "PROPN-day",
    "objects": "NOUN",
    "review_items": "NOUN",
    "colours": "ADJ-colour",
    "positive": "ADJ-eval",
    "negative": "ADJ-eval",
    "mild_positive": "ADJ-mild",
    "mild_negative": "ADJ-mild",
    "verbs": "VERB-past",
    "intensifiers": "ADV-degree",
}

_AFFIXES = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


def coarse_tag(tag: str) -> str:
    """The universal part of a (possibly refined) tag: ``"PROPN-city"`` -> ``"PROPN"``."""
    return tag.split("-", 1)[0]


class PosLexicon:
    """Word -> part-of-speech tag, looked up case-insensitively (module doc: one tag per word).

    Build it with :func:`lexicon_from_mapping`, :func:`read_lexicon` or :func:`embedded_lexicon`.
    """

    def __init__(self, tags: Mapping[str, str]) -> None:
        # key: lower-cased word -> (word as given, tag); tags must already be checked
        self._entries: dict[str, tuple[str, str]] = {}
        self._by_tag: dict[str, list[str]] = {}
        for word, tag in tags.items():
            key = word.lower()
            if key in self._entries:
                continue
            self._entries[key] = (word, tag)
            self._by_tag.setdefault(tag, []).append(word)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word.lower() in self._entries

    def tag(self, word: str) -> str | None:
        """The tag of ``word`` (any case), or ``None`` when the lexicon does not know it."""
        entry = self._entries.get(word.lower())
        return entry[1] if entry else None

    def words(self, tag: str) -> tuple[str, ...]:
        """The words of ``tag``, in the order they were given."""
        return tuple(self._by_tag.get(tag, ()))

    def tags(self) -> tuple[str, ...]:
        return tuple(self._by_tag)

    def alternatives(self, word: str) -> tuple[str, ...]:
        """The other words with ``word``'s tag (empty when untagged or alone in its tag)."""
        tag = self.tag(word)
        if tag is None:
            return ()
        key = word.lower()
        return tuple(w for w in self._by_tag[tag] if w.lower() != key)


def _check_entry(word: Any, tag: Any) -> str | None:
    """The problem with a lexicon entry, or ``None``."""
    if not isinstance(word, str) or not word:
        return f"the word must be a non-empty string, got {word!r}"
    if any(c.isspace() for c in word):
        return f"the word {word!r} holds whitespace (words are whitespace-separated tokens)"
    if not isinstance(tag, str) or not tag or any(c.isspace() for c in tag):
        return f"the tag of {word!r} must be a non-empty string without whitespace, got {tag!r}"
    return None


def _collect(entries: Iterable[tuple[str, Any, Any]], source: str) -> PosLexicon:
    """A lexicon from ``(where, word, tag)`` entries; a bad or contradictory entry raises DataError."""
    tags: dict[str, str] = {}
    seen: dict[str, tuple[str, str]] = {}  # lower-cased word -> (tag, where)
    for where, word, tag in entries:
        problem = _check_entry(word, tag)
        if problem:
            raise DataError(source, where, problem)
        key = word.lower()
        if key in seen:
            if seen[key][0] != tag:
                raise DataError(source, where, f"{word!r} is tagged {tag!r} here but {seen[key][0]!r} at "
                                f"{seen[key][1]} (a word has one tag)")
            continue
        seen[key] = (tag, where)
        tags[word] = tag
    return PosLexicon(tags)


def lexicon_from_mapping(mapping: Mapping[str, str]) -> PosLexicon:
    """A lexicon from ``{word: tag}``; words differing only by case must share their tag."""
    return _collect(((repr(word), word, tag) for word, tag in mapping.items()), "lexicon")


def read_lexicon(path: str | Path) -> PosLexicon:
    """A lexicon from a UTF-8 TSV file of ``word<TAB>tag`` lines.

    Blank lines and lines starting with ``#`` are skipped; any other line that is not exactly
    two non-empty tab-separated fields (or that tags a word twice differently) raises
    :class:`DataError` naming the file and the line number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise DataError(str(path), "file", "no such lexicon file") from err
    except UnicodeDecodeError as err:
        raise DataError(str(path), "file", f"not UTF-8 text ({err.reason} at byte {err.start})") from err

    def entries() -> Iterable[tuple[str, Any, Any]]:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise DataError(str(path), f"line {number}",
                                f"expected 'word<TAB>tag', got {len(fields)} tab-separated field(s): {line!r}")
            yield f"line {number}", fields[0].strip(), fields[1].strip()

    return _collect(entries(), str(path))


def embedded_lexicon() -> PosLexicon:
    """The tags of the embedded synthetic tasks' vocabulary (``vocab/sentences.yaml``).

    Tags: :data:`EMBEDDED_TAGS` by word list; multi-word entries (``"train ride"``) and the
    other lists (openers, fillers) are left out, and so are the entailment task's
    hypothesis-only words (``hypothesis_only``): the task never puts them in a premise, and a
    replacement that did would blur its designed annotation artifact; they stay as they are.
    """
    from kd_core.data.synthetic_sentences import vocabulary

    vocab = vocabulary()
    entries: list[tuple[str, Any, Any]] = []
    for name, tag in EMBEDDED_TAGS.items():
        entries += [(f"{name}: {word}", word, tag) for word in vocab[name] if " " not in word.strip()]
    return _collect(entries, "vocab/sentences.yaml")


def _with_case_of(original: str, word: str) -> str:
    """``word`` with ``original``'s capitalisation of the first letter."""
    if not original or not word:
        return word
    first = word[0].upper() if original[0].isupper() else word[0].lower() if original[0].islower() else word[0]
    return first + word[1:]


def _perturb_words(words: list[str], rng: random.Random, settings: AugmentSettings, lexicon: PosLexicon,
                   mask_token: str) -> list[str]:
    out = []
    for word in words:
        x = rng.random()
        if x < settings.p_mask:
            out.append(mask_token)
        elif x < settings.p_mask + settings.p_pos:
            match = _AFFIXES.match(word)
            assert match is not None  # the pattern matches every string
            before, core, after = match.groups()
            choices = lexicon.alternatives(core) if core else ()
            out.append(before + _with_case_of(core, rng.choice(choices)) + after if choices else word)
        else:
            out.append(word)
    return out


def _ngram(words: list[str], rng: random.Random, settings: AugmentSettings) -> list[str]:
    if not words or rng.random() >= settings.p_ng:
        return words
    n = min(rng.randint(1, settings.max_ngram), len(words))
    start = rng.randint(0, len(words) - n)
    return words[start:start + n]


def _augment_text(text: str, rng: random.Random, settings: AugmentSettings, lexicon: PosLexicon,
                  mask_token: str) -> str:
    words = _perturb_words(text.split(), rng, settings, lexicon, mask_token)
    return " ".join(_ngram(words, rng, settings))


def augment(examples: Dataset, settings: AugmentSettings, lexicon: PosLexicon, pair: bool,
            mask_token: str = MASK_TOKEN) -> Dataset:
    """The augmented examples of ``examples`` (module doc) alone, with schema ``SENTENCE_FEATURES``.

    Ids ``<original id>~aug<k>``, the original's task and domain, ``label`` and ``score`` null.
    ``pair``: whether ``text_b`` is a second sentence to perturb (it must be empty otherwise).
    """
    if not isinstance(settings, AugmentSettings):
        raise ConfigError("augment", "settings", f"expected AugmentSettings, got {type(settings).__name__}")
    if not isinstance(mask_token, str) or not mask_token or any(c.isspace() for c in mask_token):
        raise ConfigError("augment", "mask_token", f"must be a non-empty token without whitespace, got {mask_token!r}")
    missing = [c for c in ("id", "task", "domain", "text_a", "text_b") if c not in examples.column_names]
    if missing:
        raise DataError("augment", "columns", f"the examples lack {', '.join(missing)} (expected the sentence schema)")
    rows = examples.select_columns(["id", "task", "domain", "text_a", "text_b"]).to_list()
    seen = {(r["text_a"] or "", r["text_b"] or "") for r in rows}
    records: list[dict[str, Any]] = []
    for row in rows:
        text_a, text_b = row["text_a"] or "", row["text_b"] or ""
        if not pair and text_b:
            raise DataError("augment", str(row["id"]), "text_b is not empty but pair=False (a single-sentence task)")
        rng = random.Random(f"{settings.seed}/{row['id']}")
        for k in range(settings.n_iter):
            new_a = _augment_text(text_a, rng, settings, lexicon, mask_token)
            new_b = _augment_text(text_b, rng, settings, lexicon, mask_token) if pair else ""
            if (new_a, new_b) in seen:
                continue
            seen.add((new_a, new_b))
            records.append({"id": f"{row['id']}~aug{k}", "task": row["task"], "domain": row["domain"],
                            "text_a": new_a, "text_b": new_b, "label": None, "score": None})
    return sentences_to_dataset(records)


def _as_sentences(dataset: Dataset, name: str) -> Dataset:
    missing = [c for c in SENTENCE_COLUMNS if c not in dataset.column_names]
    if missing:
        raise DataError("transfer_set", name, f"lacks the column(s) {', '.join(missing)} of the sentence schema")
    dataset = dataset.select_columns(list(SENTENCE_COLUMNS))
    if dataset.features == SENTENCE_FEATURES:
        return dataset
    with no_progress_bars():  # no "Casting the dataset: 100%|" bar
        return dataset.cast(SENTENCE_FEATURES)


def transfer_set(train: Dataset, augmented: Dataset) -> Dataset:
    """The transfer set: the ``train`` rows followed by the ``augmented`` ones (schema ``SENTENCE_FEATURES``).

    Ids must stay unique across both (a clash raises :class:`DataError`).
    """
    train, augmented = _as_sentences(train, "train"), _as_sentences(augmented, "augmented")
    clash = set(train["id"]) & set(augmented["id"])
    if clash:
        raise DataError("transfer_set", "id", f"ids in both train and augmented: {', '.join(sorted(clash)[:5])}")
    return concatenate_datasets([train, augmented])
