"""Tasks: what is shape-specific about span QA, classification and regression (see :mod:`.base`).

:func:`synthetic_task` names the task of each embedded synthetic data set; jobs build
tasks from their own options (a label set, pair or single sentence).
"""

from __future__ import annotations

from kd_core.data.synthetic_sentences import SENTENCE_TASKS
from kd_core.errors import ConfigError
from kd_core.tasks.base import Task
from kd_core.tasks.sentence import ClassificationTask, RegressionTask
from kd_core.tasks.span_qa import SpanQATask

__all__ = ["ClassificationTask", "RegressionTask", "SpanQATask", "Task", "synthetic_task"]


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
