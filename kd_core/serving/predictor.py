"""A saved model answering raw inputs: what the MLflow ``pyfunc`` (and any other server) calls.

A trained model is a ``save_pretrained`` folder. To answer a question or label a sentence it
also needs its task (kind, labels, whether it reads pairs, the longest answer) and the window
settings it was trained with: :func:`~kd_core.serving.description.serving_description` records them as JSON (no pickle),
:func:`~kd_core.serving.description.task_from_description` rebuilds the task, and :class:`Predictor` runs the task's own
featurisation, inference and decoding, the very code the engine evaluates with, so a served
model answers exactly as its evaluation did.

Inputs and outputs, one dict per row:

* ``span_qa``: ``question``, ``context`` -> ``answer`` (the best span, decoded from per-window
  log-probabilities; :func:`kd_core.evaluation.predict.scored_answers_from_outputs`) and ``score`` (its
  ``log p_start + log p_end``);
* ``classification``: ``text`` (and ``text_pair`` for a pair task) -> ``label`` (a name of the
  task's label set) and ``probability`` (its softmax probability);
* ``regression``: ``text`` (and ``text_pair``) -> ``score``;
* ``multitask`` (a multi-head MT-DNN student): ``task`` names the head, the rest as that task.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from kd_core.data.features import FeatureConfig
from kd_core.data.schema import examples_to_dataset, sentences_to_dataset
from kd_core.io.errors import ConfigError, DataError
from kd_core.serving.description import SERVING_FILE, SERVING_VERSION, task_from_description
from kd_core.tasks.multitask import MultiTask
from kd_core.tasks.sentence import ClassificationTask, RegressionTask, SentenceTask
from kd_core.tasks.span_qa import SpanQATask


class Predictor:
    """A saved model and its task, answering rows of raw inputs (module doc)."""

    def __init__(self, model_dir: str | Path, description: Mapping[str, Any], device: str = "cpu",
                 batch_size: int = 32) -> None:
        if description.get("version") != SERVING_VERSION:
            raise ConfigError(SERVING_FILE, "version", f"written by version {description.get('version')}, this "
                              f"reads {SERVING_VERSION}")
        self.task = task_from_description(description["task"])
        self.windows = FeatureConfig(**description["windows"])
        self.model, self.tokenizer = self.task.build_model(str(model_dir), 0, None)
        self.model.to(device).eval()
        self.batch_size = batch_size

    @classmethod
    def load(cls, model_dir: str | Path, serving_file: str | Path, device: str = "cpu") -> Predictor:
        """The model in ``model_dir`` described by the JSON file ``serving_file`` (:func:`~kd_core.serving.description.serving_description`)."""
        path = Path(serving_file)
        if not path.exists():
            raise ConfigError(str(path), "serving", "no serving description (kd_serving.json) for this model")
        return cls(model_dir, json.loads(path.read_text()), device)

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One output dict per input row, in order (module doc)."""
        import torch  # here: logging a model runs its pyfunc file, which imports this module, in the driver

        if not rows:
            return []
        with torch.no_grad():
            if isinstance(self.task, SpanQATask):
                return self._answers(rows)
            if isinstance(self.task, MultiTask):
                return self._multitask(rows)
            return self._sentences(rows, self.task)

    def _answers(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        for i, row in enumerate(rows):
            for column in ("question", "context"):
                if not isinstance(row.get(column), str) or not row[column].strip():
                    raise DataError("input", f"row {i}", f"needs a non-empty {column!r} text")
        examples = examples_to_dataset(
            {"id": str(i), "domain": "", "title": "", "context": row["context"], "question": row["question"],
             "answers": {"text": [], "answer_start": []}, "is_impossible": False} for i, row in enumerate(rows))
        from kd_core.evaluation.predict import ModelOutputs, scored_answers_from_outputs

        features, arrays = self._features(examples)
        assert isinstance(self.task, SpanQATask)
        outputs = self.task.infer(self.model, arrays, self.batch_size)
        scored, _ = scored_answers_from_outputs(examples, features, arrays,
                                                ModelOutputs(outputs["start_logits"], outputs["end_logits"]),
                                                self.task.max_answer_length)
        return [{"answer": scored[str(i)][1], "score": float(scored[str(i)][0])} for i in range(len(rows))]

    def _sentences(self, rows: Sequence[Mapping[str, Any]], task: SentenceTask,
                   task_name: str | None = None) -> list[dict[str, Any]]:
        """``task``'s answers (a part of a multi-task model: ``task_name`` picks its head)."""
        _, arrays = self._features(_sentence_rows(rows, task, task_name))
        outputs = self.task.infer(self.model, arrays, self.batch_size)
        if isinstance(task, RegressionTask):
            values = outputs["value"] if "value" in outputs else outputs["logits"][:, 0]
            return [{"score": float(value)} for value in values]
        assert isinstance(task, ClassificationTask)
        import torch

        logits = torch.from_numpy(np.asarray(outputs["logits"], np.float32)[:, : len(task.labels)])
        probabilities = torch.softmax(logits, dim=-1).numpy()
        best = probabilities.argmax(axis=1)
        return [{"label": task.labels[k], "probability": float(probabilities[i, k])} for i, k in enumerate(best)]

    def _multitask(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        assert isinstance(self.task, MultiTask)
        out: list[dict[str, Any] | None] = [None] * len(rows)
        for name, part in self.task.parts.items():
            picked = [i for i, row in enumerate(rows) if row.get("task") == name]
            if picked:
                for i, answer in zip(picked, self._sentences([rows[i] for i in picked], part, name)):
                    out[i] = {"task": name, **answer}
        missing = next((i for i, answer in enumerate(out) if answer is None), None)
        if missing is not None:
            raise DataError("input", f"row {missing}", f"'task' must name one of {', '.join(self.task.parts)}, got "
                            f"{rows[missing].get('task')!r}")
        return [answer for answer in out if answer is not None]

    def _features(self, examples: Dataset) -> tuple[Dataset, dict[str, np.ndarray]]:
        features = self.task.featurize(examples, self.tokenizer, self.windows)
        return features, self.task.arrays(features)


def _sentence_rows(rows: Sequence[Mapping[str, Any]], task: SentenceTask, task_name: str | None) -> Dataset:
    for i, row in enumerate(rows):
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            raise DataError("input", f"row {i}", "needs a non-empty 'text'")
        if task.pair and (not isinstance(row.get("text_pair"), str) or not row["text_pair"].strip()):
            raise DataError("input", f"row {i}", f"task {task.name!r} reads pairs: needs a 'text_pair' too")
    return sentences_to_dataset(
        {"id": str(i), "task": task_name or task.name, "text_a": row["text"],
         "text_b": (row.get("text_pair") or "") if task.pair else ""} for i, row in enumerate(rows))
