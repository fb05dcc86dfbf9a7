"""The one example schema every loader produces, as an Arrow-backed ``datasets.Dataset``.

Columns: ``id, domain, title, context, question, answers{text, answer_start}, is_impossible``.
``answers`` holds parallel lists (several references per question are allowed);
``is_impossible`` flags SQuAD v2.0 unanswerable questions, whose answer lists are empty.
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
    }
)

EXAMPLE_COLUMNS = tuple(EXAMPLE_FEATURES.keys())


def examples_to_dataset(records: Iterable[Mapping[str, Any]]) -> Dataset:
    """Build the example dataset from dicts that already hold every column of the schema."""
    rows = list(records)
    columns: dict[str, list[Any]] = {name: [r[name] for r in rows] for name in EXAMPLE_COLUMNS}
    return Dataset.from_dict(columns, features=EXAMPLE_FEATURES)
