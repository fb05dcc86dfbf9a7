"""The task of each embedded synthetic data set (span QA or a sentence task of :mod:`kd_core.data.synthetic_sentences`).

Jobs on files build their tasks from their own options (a label set, pair or single sentence)
or from task definitions (:mod:`kd_core.tasks.definitions`).
"""

from __future__ import annotations

from kd_core.data.synthetic_sentences import SENTENCE_TASKS
from kd_core.io.errors import ConfigError
from kd_core.tasks.base import Task
from kd_core.tasks.sentence import ClassificationTask, RegressionTask
from kd_core.tasks.span_qa import SpanQATask


def synthetic_task(name: str) -> Task:
    """The task of the embedded synthetic data set ``name`` (``span_qa`` or a sentence task)."""
    if name == "span_qa":
        return SpanQATask()
    info = SENTENCE_TASKS.get(name)
    if info is None:
        raise ConfigError("task", name, f"unknown synthetic task; known: span_qa, {', '.join(SENTENCE_TASKS)}")
    if info.kind == "classification":
        return ClassificationTask(name, info.labels, pair=info.pair)
    return RegressionTask(name, pair=info.pair)
