"""Embedded synthetic sentence tasks: single-sentence and pair classification, pair regression.

The offline default data of the sentence tasks (classification and regression), as the
span-QA corpus is for reading comprehension: no download, deterministic, and with label
noise so that a tiny model does not reach 100%. The vocabulary is data
(``vocab/sentences.yaml``); randomness comes only from ``random.Random`` seeded with
``(seed, task)``, so a task's examples do not depend on which other tasks are asked for.

Tasks (:data:`SENTENCE_TASKS`):

* ``sentiment`` (single sentence; ``negative`` / ``positive``): a review sentence whose
  label is the polarity of its evaluative adjective, flipped by a ``not`` before it;
  mild cue words lean towards the label without deciding it.
* ``entailment`` (pair; ``entailment`` / ``not_entailment``): a premise stating one event
  (person, verb, colour, object, city, day) and a hypothesis restating some of its slots,
  with exactly one slot changed for ``not_entailment``: half the time to a word that never
  occurs in a premise (an annotation artifact, as SNLI's: a partial cue a small model
  learns, while the other half needs the premise).
* ``rating`` (single sentence; regression in [0, 5]): a review whose score is its
  adjective's rating, mirrored (``5 - r``) by a ``not``, plus Gaussian noise.
* ``similarity`` (pair; regression in [0, 5]): two statements of the same frame of which
  ``k`` of five slots differ; the score is ``5 - k`` plus Gaussian noise, clipped to [0, 5].
  (Hard for the tiny presets: they do not learn to match slots across the pair.)
* ``preference`` (pair; regression in [0, 5]): two reviews as in ``rating`` with scores
  ``r_a``, ``r_b``; the score ``(r_a - r_b + 5) / 2`` says how much the first is preferred.
  It shares its words and its negation rule with ``rating`` and ``sentiment`` (MT-DNN's
  demo: knowledge to share across tasks).

Label noise: with probability ``label_noise`` a classification label is replaced by a
uniformly drawn *other* label, from a random stream of its own, so the texts are the same
with and without noise (regression already carries its Gaussian noise).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kd_core.io.errors import ConfigError

if TYPE_CHECKING:
    from datasets import Dataset

VOCAB_FILE = Path(__file__).with_name("vocab") / "sentences.yaml"


@dataclass(frozen=True)
class SentenceTaskInfo:
    """What a synthetic task is: its kind, label set (classification) and whether it reads pairs."""

    kind: str  # "classification" or "regression"
    pair: bool
    labels: tuple[str, ...] = ()


SENTENCE_TASKS: dict[str, SentenceTaskInfo] = {
    "sentiment": SentenceTaskInfo("classification", pair=False, labels=("negative", "positive")),
    "entailment": SentenceTaskInfo("classification", pair=True, labels=("entailment", "not_entailment")),
    "rating": SentenceTaskInfo("regression", pair=False),
    "similarity": SentenceTaskInfo("regression", pair=True),
    "preference": SentenceTaskInfo("regression", pair=True),
}


@cache
def vocabulary() -> dict[str, Any]:
    """The word lists (and the rating and hypothesis-only tables) of ``vocab/sentences.yaml``, read once."""
    data = yaml.safe_load(VOCAB_FILE.read_text(encoding="utf-8"))
    vocab: dict[str, Any] = {name: tuple(str(word) for word in words) for name, words in data.items()
                             if isinstance(words, list)}
    vocab["ratings"] = {str(word): float(score) for word, score in data["ratings"].items()}
    vocab["hypothesis_only"] = {slot: tuple(map(str, words)) for slot, words in data["hypothesis_only"].items()}
    return vocab


def _sentence(*parts: str) -> str:
    text = " ".join(p for p in parts if p)
    return text[:1].upper() + text[1:]


def _sentiment(rng: random.Random, v: dict[str, Any]) -> tuple[str, str, int]:
    positive = rng.random() < 0.5
    negated = rng.random() < 0.3
    adjective = rng.choice(v["positive"] if positive != negated else v["negative"])
    cue = rng.choice(v["mild_positive"] if (rng.random() < 0.65) == positive else v["mild_negative"])
    intensifier = rng.choice(v["intensifiers"]) if rng.random() < 0.5 else ""
    text = _sentence(rng.choice(v["openers"]), "the", rng.choice(v["review_items"]), "was",
                     "not" if negated else "", intensifier, adjective + ",", "a bit", cue + ",",
                     rng.choice(v["fillers"]) + ".")
    return text, "", int(positive)


_SLOTS = ("person", "verb", "colour", "object", "city", "day")
_VOCAB_OF = {"person": "people", "verb": "verbs", "colour": "colours", "object": "objects", "city": "cities",
             "day": "days"}


def _event(rng: random.Random, v: dict[str, Any]) -> dict[str, str]:
    return {slot: rng.choice(v[_VOCAB_OF[slot]]) for slot in _SLOTS}


def _changed(event: dict[str, str], slots: Sequence[str], rng: random.Random, v: dict[str, Any],
             cue: float = 0.0) -> dict[str, str]:
    """``event`` with ``slots`` changed; with probability ``cue`` to a hypothesis-only word (module doc)."""
    out = dict(event)
    for slot in slots:
        pool = v["hypothesis_only"][slot] if rng.random() < cue else v[_VOCAB_OF[slot]]
        out[slot] = rng.choice([w for w in pool if w != event[slot]])
    return out


def _state(e: dict[str, str], rng: random.Random) -> str:
    templates = (
        "{person} {verb} a {colour} {object} in {city} on {day}.",
        "On {day}, {person} {verb} a {colour} {object} in {city}.",
        "In {city}, a {colour} {object} was {verb} by {person} on {day}.",
    )
    return _sentence(rng.choice(templates).format(**e))


_HYPOTHESES = (
    "{person} {verb} a {object}.",
    "A {colour} {object} was {verb} in {city}.",
    "{person} was in {city} on {day}.",
    "{person} {verb} something {colour} on {day}.",
    "Something was {verb} by {person} in {city}.",
)


def _entailment(rng: random.Random, v: dict[str, Any]) -> tuple[str, str, int]:
    premise = _event(rng, v)
    entailed = rng.random() < 0.5
    template = rng.choice(_HYPOTHESES)
    stated = [slot for slot in _SLOTS if "{" + slot + "}" in template]
    hypothesis = premise if entailed else _changed(premise, [rng.choice(stated)], rng, v, cue=0.5)
    return _state(premise, rng), _sentence(template.format(**hypothesis)), int(not entailed)


def _rating(rng: random.Random, v: dict[str, Any]) -> tuple[str, str, float]:
    adjective, base = rng.choice(sorted(v["ratings"].items()))
    negated = rng.random() < 0.25
    score = (5.0 - base if negated else base) + rng.gauss(0.0, 0.4)
    text = _sentence(rng.choice(v["openers"]), "the", rng.choice(v["review_items"]), "was",
                     "not" if negated else "", rng.choice(v["intensifiers"]) if rng.random() < 0.5 else "",
                     adjective + ",", rng.choice(v["fillers"]) + ".")
    return text, "", round(min(5.0, max(0.0, score)), 2)


def _similarity(rng: random.Random, v: dict[str, Any]) -> tuple[str, str, float]:
    first = _event(rng, v)
    changed = rng.randint(0, 5)
    second = _changed(first, rng.sample([s for s in _SLOTS if s != "day"], changed), rng, v)
    score = min(5.0, max(0.0, 5.0 - changed + rng.gauss(0.0, 0.4)))
    return _state(first, rng), _state(second, rng), round(score, 2)


def _preference(rng: random.Random, v: dict[str, Any]) -> tuple[str, str, float]:
    first, _, score_a = _rating(rng, v)
    second, _, score_b = _rating(rng, v)
    return first, second, round((score_a - score_b + 5.0) / 2.0, 2)


_BUILDERS: dict[str, Callable[[random.Random, dict[str, Any]], tuple[str, str, Any]]] = {
    "sentiment": _sentiment, "entailment": _entailment, "rating": _rating, "similarity": _similarity,
    "preference": _preference,
}


def generate_task(name: str, n: int = 400, seed: int = 0, label_noise: float = 0.1) -> Dataset:
    """``n`` examples of the synthetic task ``name`` (module doc), ids ``<task>-<index>``."""
    from kd_core.data.schema import sentences_to_dataset  # datasets: not needed for SENTENCE_TASKS (--help)

    if name not in SENTENCE_TASKS:
        raise ConfigError("synthetic", "task", f"unknown sentence task {name!r}; known: {', '.join(SENTENCE_TASKS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError("synthetic", "n", f"must be an integer >= 1, got {n!r}")
    if not 0 <= label_noise < 1:
        raise ConfigError("synthetic", "label_noise", f"must be in [0, 1), got {label_noise!r}")
    info = SENTENCE_TASKS[name]
    rng = random.Random(f"{seed}/{name}")
    noise_rng = random.Random(f"{seed}/{name}/noise")  # the same texts with and without noise
    vocab = vocabulary()
    records = []
    for index in range(n):
        text_a, text_b, target = _BUILDERS[name](rng, vocab)
        record: dict[str, Any] = {"id": f"{name}-{index:05d}", "task": name, "domain": name,
                                  "text_a": text_a, "text_b": text_b}
        if info.kind == "classification":
            if noise_rng.random() < label_noise:
                target = noise_rng.choice([c for c in range(len(info.labels)) if c != target])
            record["label"] = target
        else:
            record["score"] = target
        records.append(record)
    return sentences_to_dataset(records)
