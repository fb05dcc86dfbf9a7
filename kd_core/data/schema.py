"""The example schemas the loaders produce, as Arrow-backed ``datasets.Dataset`` s.

* **Span QA** (:data:`EXAMPLE_FEATURES`): ``id, domain, title, context, question,
  answers{text, answer_start}, is_impossible, references``. ``answers`` holds parallel lists
  (several references per question are allowed); ``is_impossible`` flags SQuAD v2.0
  unanswerable questions, whose answer lists are empty. ``references`` holds free-form answers
  written by people (NarrativeQA, :mod:`kd_core.data.free_form`), scored with BLEU and ROUGE-L;
  their ``answers`` is then the training label, the context span closest to them. It is empty
  for span data.
* **Sentence tasks** (:data:`SENTENCE_FEATURES`, classification and regression):
  ``id, task, domain, text_a, text_b, label, score``. ``text_b`` is ``""`` for
  single-sentence tasks; ``label`` is the class index into the task's label set
  (classification) and ``score`` the gold value (regression); either is null when the
  example carries no gold label (e.g. an augmented example labelled only by a teacher).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from datasets import Dataset, Features, List, Value

EXAMPLE_FEATURES = Features(
    {
        "id": Value("string"),
        "domain": Value("string"),
        "title": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
        "is_impossible": Value("bool"),
        "references": List(Value("string")),
    }
)

EXAMPLE_COLUMNS = tuple(EXAMPLE_FEATURES.keys())


def examples_to_dataset(records: Iterable[Mapping[str, Any]]) -> Dataset:
    """Build the example dataset from dicts that hold every column of the schema (``references`` may be left out)."""
    rows = [{"references": [], **r} for r in records]
    columns: dict[str, list[Any]] = {name: [r[name] for r in rows] for name in EXAMPLE_COLUMNS}
    return Dataset.from_dict(columns, features=EXAMPLE_FEATURES)


SENTENCE_FEATURES = Features(
    {
        "id": Value("string"),
        "task": Value("string"),
        "domain": Value("string"),
        "text_a": Value("string"),
        "text_b": Value("string"),
        "label": Value("int32"),
        "score": Value("float32"),
    }
)

SENTENCE_COLUMNS = tuple(SENTENCE_FEATURES.keys())


def sentences_to_dataset(records: Iterable[Mapping[str, Any]]) -> Dataset:
    """Build a sentence-task dataset from dicts; missing ``text_b``/``label``/``score`` become ``""``/null."""
    defaults = {"text_b": "", "label": None, "score": None, "domain": ""}
    rows = [{**defaults, **r} for r in records]
    columns: dict[str, list[Any]] = {name: [r.get(name) for r in rows] for name in SENTENCE_COLUMNS}
    return Dataset.from_dict(columns, features=SENTENCE_FEATURES)
