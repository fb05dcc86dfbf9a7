"""What a saved model needs besides its weights to answer raw inputs: its task and window settings, as JSON.

:func:`serving_description` records the task (kind, labels, whether it reads pairs, the
longest answer) and the window settings a model was trained with (no pickle),
:func:`task_from_description` rebuilds the task, and :func:`serving_input` turns one example
of the data schema into the input row a served model takes (:mod:`kd_core.serving.predictor`
lists the rows of each kind). :func:`describe_saved_model` writes the same description into a
model's own ``config.json`` (``kd_serving``), with the label names and the window length, so
plain Hugging Face code finds them (docs/models.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizerFast

from kd_core.data.features import FeatureConfig
from kd_core.io.errors import ConfigError
from kd_core.tasks.base import Task
from kd_core.tasks.multitask import MultiTask
from kd_core.tasks.sentence import ClassificationTask, RegressionTask, SentenceTask
from kd_core.tasks.span_qa import SpanQATask

if TYPE_CHECKING:
    from transformers import PreTrainedModel

SERVING_FILE = "kd_serving.json"

SERVING_VERSION = 1


def serving_description(task: Task, windows: FeatureConfig) -> dict[str, Any]:
    """What :class:`Predictor` needs besides the weights: the task and the window settings (JSON-able)."""
    described = task.describe()
    if isinstance(task, SpanQATask):
        described["max_answer_length"] = task.max_answer_length
    return {"version": SERVING_VERSION, "task": described,
            "windows": {"max_length": windows.max_length, "doc_stride": windows.doc_stride,
                        "max_query_length": windows.max_query_length}}


def describe_saved_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, task: Task,
                         windows: FeatureConfig) -> None:
    """Make a model and its tokenizer say, in their own saved files, what plain Hugging Face code needs.

    * ``config.kd_serving``: :func:`serving_description` (task, labels, window length and stride);
    * ``config.id2label`` / ``label2id``: the task's label names (a classification head), or the
      task's name for a regression head's one output (``LABEL_0`` otherwise);
    * the tokenizer's ``model_max_length``: the window length the model was trained with.

    Called on the model and tokenizer just before they are saved; changes nothing the engine reads.
    """
    model.config.kd_serving = serving_description(task, windows)
    if isinstance(task, ClassificationTask):
        model.config.id2label = dict(enumerate(task.labels))
        model.config.label2id = {label: i for i, label in enumerate(task.labels)}
    elif isinstance(task, RegressionTask):
        model.config.id2label, model.config.label2id = {0: task.name}, {task.name: 0}
    tokenizer.model_max_length = windows.max_length


def task_from_description(described: Mapping[str, Any]) -> Task:
    """The task :meth:`Task.describe` (plus ``max_answer_length`` for span QA) describes."""
    kind, name = described.get("kind"), described.get("name", "task")
    if kind == "span_qa":
        return SpanQATask(name, int(described.get("max_answer_length", 30)))
    if kind == "classification":
        return ClassificationTask(name, list(described["labels"]), bool(described["pair"]),
                                  described.get("primary_metric", "accuracy"))
    if kind == "regression":
        return RegressionTask(name, bool(described["pair"]), described.get("primary_metric", "pearson"))
    if kind == "multitask":
        parts = [task_from_description(part) for part in described["tasks"]]
        if not all(isinstance(part, SentenceTask) for part in parts):
            raise ConfigError(SERVING_FILE, "task", "a multi-task set holds sentence tasks only")
        return MultiTask(parts, described.get("with_teacher", ()), name)  # type: ignore[arg-type]
    raise ConfigError(SERVING_FILE, "task", f"unknown task kind {kind!r}")


def serving_input(task: Task, example: Mapping[str, Any]) -> dict[str, str]:
    """The input row a served model of ``task`` takes for one example of the data schema (module doc)."""
    if isinstance(task, SpanQATask):
        return {"question": example["question"], "context": example["context"]}
    row = {"text": example["text_a"]}
    if isinstance(task, SentenceTask) and task.pair and example.get("text_b"):
        row["text_pair"] = example["text_b"]
    if isinstance(task, MultiTask):
        row["task"] = example["task"]
    return row
