"""Sentence tasks: classification (single sentence or pair, any label set) and regression (one score).

Examples follow :data:`~kd_core.data.schema.SENTENCE_FEATURES`. Featurisation encodes
``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` truncated and padded to ``max_length``: one
feature per example, so ``feature_id = example_id``. Knowledge is keyed by **example id**, so
a student with its own tokenizer (another vocabulary, another length) reads a teacher's
table: :meth:`SentenceTask.knowledge_arrays` aligns rows by the features' ``example_id``.

Knowledge columns (float16 logits: the soft targets they give differ from float32's by
less than the float16 rounding of a probability, ~5e-4, see the span tables):

* classification: member table ``logits`` ``[C]``; merged table ``logits`` ``[N, C]``, the
  members' raw logits side by side, so soft targets at any temperature are re-derived as
  ``q = 1/N sum_n softmax(t_n / tau)`` (mean of probabilities, as for span QA);
* regression: member table ``value``; merged table ``values`` ``[N]`` (float32), whose mean is
  the soft target.

Examples without a gold label (``label``/``score`` null: e.g. augmented ones labelled only by
a teacher) get ``label = -1`` / ``score = NaN`` in the arrays; the hard loss is 0 for them
and evaluation skips them. Every knowledge table flags them: its boolean column ``gold`` is
false for rows whose example carries no gold label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from datasets import Dataset
from transformers import PreTrainedTokenizerFast

from kd_core.data.batches import iterate_batches
from kd_core.data.features import FeatureConfig
from kd_core.evaluation.sentence_metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    classification_scores,
    regression_scores,
)
from kd_core.io.errors import ConfigError, DataError
from kd_core.knowledge.table import METADATA_KEY, fixed, metadata_entry, row_indices, unfixed, with_metadata
from kd_core.models.presets import is_preset
from kd_core.models.tokenizers import load_tokenizer
from kd_core.tasks.base import Outputs, Task, ids_fingerprint

if TYPE_CHECKING:  # torch and the model code load where a model is built or trained, not in a driver
    from torch import Tensor
    from transformers import PreTrainedModel

    from kd_core.objectives.terms import Term

INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class SentenceOutput:
    """A sentence model's output: ``[B, C]`` logits (``C = 1`` for regression)."""

    logits: Tensor


class SentenceTask(Task):
    """What classification and regression share: features, model head, knowledge keyed by example."""

    key = "example_id"
    #: The integer feature columns a model reads (a multi-task set adds ``task_index``).
    input_columns: tuple[str, ...] = INPUT_COLUMNS

    def __init__(self, name: str, pair: bool, num_outputs: int, primary_metric: str) -> None:
        self.name = name
        self.pair = pair
        self.num_outputs = num_outputs
        self.primary_metric = primary_metric

    # ------------------------------------------------------------------ data

    def group_keys(self, examples: Dataset) -> list[tuple[str, str]]:
        """A sentence (pair) is one group: the same text never lands on both sides of a split."""
        return [(task, f"{a}\x1f{b}") for task, a, b in zip(examples["task"], examples["text_a"], examples["text_b"])]

    def texts(self, examples: Dataset) -> list[str]:
        return list(examples["text_a"]) + ([t for t in examples["text_b"] if t] if self.pair else [])

    def data_fingerprint(self, examples: Dataset) -> str:
        return ids_fingerprint(examples, ("id", "text_a", "text_b"))

    # ------------------------------------------------------------------ features and models

    def featurize(self, examples: Dataset, tokenizer: PreTrainedTokenizerFast, windows: FeatureConfig) -> Dataset:
        if self.pair and any(not t for t in examples["text_b"]):
            row = next(i for i, t in enumerate(examples["text_b"]) if not t)
            raise DataError(self.name, f"example {examples[row]['id']!r}", "a pair task needs text_b")
        encoded = tokenizer(list(examples["text_a"]), list(examples["text_b"]) if self.pair else None,
                            truncation=True, max_length=windows.max_length, padding="max_length",
                            return_token_type_ids=True)
        labels = [-1 if v is None else int(v) for v in examples["label"]]
        scores = [np.nan if v is None else float(v) for v in examples["score"]]
        return Dataset.from_dict({
            "feature_id": list(examples["id"]), "example_id": list(examples["id"]),
            **{name: encoded[name] for name in INPUT_COLUMNS}, "label": labels, "score": scores,
        })

    def arrays(self, features: Dataset) -> dict[str, np.ndarray]:
        table = features.with_format("numpy", columns=[*self.input_columns, "label", "score"])[:]
        arrays = {name: np.asarray(table[name], np.int64) for name in self.input_columns}
        arrays["label"] = np.asarray(table["label"], np.int64)
        arrays["score"] = np.asarray(table["score"], np.float32)
        return arrays

    def build_model(self, source: str, seed: int,
                    tokenizer: PreTrainedTokenizerFast | None) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
        """A model with this task's head; from a saved multi-task model, its encoder and this task's head."""
        from kd_core.models.build import load_sequence_model
        from kd_core.models.multihead import is_multitask_checkpoint, single_task_from_multitask

        if not is_preset(source) and is_multitask_checkpoint(source):
            return single_task_from_multitask(source, self.name, self.num_outputs), tokenizer or load_tokenizer(source)
        return load_sequence_model(source, seed, self.num_outputs, tokenizer)

    def forward(self, model: PreTrainedModel, batch: Mapping[str, Any], question_tokens: int = 0) -> SentenceOutput:
        from kd_core.models.forward import model_inputs

        return SentenceOutput(model(**model_inputs(batch), return_dict=True).logits)

    def _logits(self, model: PreTrainedModel, arrays: Mapping[str, np.ndarray], batch_size: int) -> np.ndarray:
        import torch

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        inputs = {name: arrays[name] for name in self.input_columns}
        with torch.no_grad():
            chunks = [self.forward(model, {k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
                      for batch in iterate_batches(inputs, batch_size)]
        model.train(was_training)
        return np.concatenate(chunks) if chunks else np.zeros((0, self.num_outputs), np.float32)

    # ------------------------------------------------------------------ knowledge

    def _member_meta(self, members: int) -> dict[str, Any]:
        return {"kind": "member" if members == 1 else "ensemble", "task": self.name, "members": members,
                "outputs": self.num_outputs}

    def _checked(self, table: pa.Table) -> dict[str, Any]:
        meta = metadata_entry(table, METADATA_KEY)
        if meta.get("task") != self.name:
            raise DataError("knowledge", "task", f"table holds knowledge of task {meta.get('task')!r}, not {self.name!r}")
        return meta


class ClassificationTask(SentenceTask):
    """Single-sentence or pair classification over ``labels`` (primary metric: accuracy by default)."""

    kind = "classification"

    def __init__(self, name: str, labels: Sequence[str], pair: bool = False, primary_metric: str = "accuracy") -> None:
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ConfigError(name, "labels", f"need at least 2 distinct labels, got {list(labels)}")
        if primary_metric not in CLASSIFICATION_METRICS:
            raise ConfigError(name, "primary_metric", f"must be one of {CLASSIFICATION_METRICS}, got {primary_metric!r}")
        super().__init__(name, pair, len(labels), primary_metric)
        self.labels = tuple(labels)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "labels": list(self.labels), "pair": self.pair}

    def infer(self, model: PreTrainedModel, arrays: Mapping[str, np.ndarray], batch_size: int = 64) -> Outputs:
        return {"logits": self._logits(model, arrays, batch_size)}

    def ensemble(self, members: Sequence[Outputs], arrays: Mapping[str, np.ndarray]) -> Outputs:
        """``log q`` with ``q = 1/N sum_n softmax(z_n)``: argmax decodes the mean of probabilities."""
        probabilities = np.mean([_softmax(m["logits"]) for m in members], axis=0)
        return {"logits": np.log(np.clip(probabilities, 1e-30, None))}

    def collect(self, model: PreTrainedModel, features: Dataset, arrays: Mapping[str, np.ndarray],
                **options: Any) -> pa.Table:
        logits = self.infer(model, arrays)["logits"]
        table = pa.table({"example_id": pa.array(list(features["example_id"]), pa.string()),
                          "gold": pa.array(arrays["label"] >= 0),
                          "logits": fixed(logits.astype(np.float16), pa.float16())})
        return with_metadata(table, {METADATA_KEY: self._member_meta(1)})

    def merge(self, tables: Sequence[pa.Table], examples: Dataset, features: Dataset,
              arrays: Mapping[str, np.ndarray], **options: Any) -> pa.Table:
        _check_same_rows(tables)
        stacked = np.stack([unfixed(t.column("logits"), (self.num_outputs,), np.float32) for t in tables], axis=1)
        table = pa.table({"example_id": tables[0].column("example_id"), "gold": tables[0].column("gold"),
                          "logits": fixed(stacked.astype(np.float16), pa.float16())})
        return with_metadata(table, {METADATA_KEY: self._member_meta(len(tables))})

    def knowledge_arrays(self, table: pa.Table, features: Dataset) -> dict[str, np.ndarray]:
        """``teacher_logits`` ``[F, N, C]`` in the order of ``features``' example ids."""
        meta = self._checked(table)
        logits = unfixed(table.column("logits"), (int(meta["members"]), self.num_outputs), np.float32)
        return {"teacher_logits": _in_order(logits, table, features)}

    def hard_term(self) -> Term:
        """``-log softmax(z)_y`` (:func:`~kd_core.objectives.losses.hard_classification_loss`); 0 without a gold label."""
        import torch

        from kd_core.objectives import losses
        from kd_core.objectives.terms import Term

        def fn(out: SentenceOutput, b: Mapping[str, Tensor]) -> Tensor:
            labels = b["label"]
            has_label = labels >= 0
            loss = losses.hard_classification_loss(out.logits, labels.clamp(min=0))
            return torch.where(has_label, loss, torch.zeros_like(loss))

        return Term("ce", fn)

    def soft_term(self, tau: float) -> Term:
        """``tau^2 * -sum_c q(c) log softmax(z/tau)_c`` (:func:`~kd_core.objectives.losses.soft_classification_loss`)."""
        from kd_core.objectives import losses
        from kd_core.objectives.terms import Term

        if not tau > 0:
            raise ConfigError(self.name, "tau", f"must be > 0, got {tau}")
        return Term("kd", lambda out, b: losses.soft_classification_loss(out.logits, b["teacher_logits"], tau),
                    needs_knowledge=True, requires=("teacher_logits",))

    def term(self, kind: str, tau: float = 1.0) -> Term:
        """Also ``logit_mse`` (squared distance to the members' mean logits, Ba & Caruana 2014; Tang et al. 2019)
        and ``hard_distill`` (cross-entropy to the ensemble's argmax class)."""
        from kd_core.objectives import losses
        from kd_core.objectives.terms import Term

        if kind == "logit_mse":
            return Term("logit_mse", lambda out, b: losses.logit_mse_loss(out.logits, b["teacher_logits"]),
                        needs_knowledge=True, requires=("teacher_logits",))
        if kind == "hard_distill":
            return Term("hard_distill", lambda out, b: losses.hard_distillation_loss(out.logits, b["teacher_logits"]),
                        needs_knowledge=True, requires=("teacher_logits",))
        return super().term(kind, tau)

    def scores(self, examples: Dataset, features: Dataset, arrays: Mapping[str, np.ndarray],
               outputs: Outputs) -> dict[str, float]:
        labels = arrays["label"]
        gold = labels >= 0
        predictions = outputs["logits"].argmax(axis=-1)
        return classification_scores(predictions[gold].tolist(), labels[gold].tolist(), self.num_outputs)


class RegressionTask(SentenceTask):
    """One predicted score per sentence (pair) (primary metric: Pearson by default)."""

    kind = "regression"

    def __init__(self, name: str, pair: bool = True, primary_metric: str = "pearson") -> None:
        if primary_metric not in REGRESSION_METRICS:
            raise ConfigError(name, "primary_metric", f"must be one of {REGRESSION_METRICS}, got {primary_metric!r}")
        super().__init__(name, pair, 1, primary_metric)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pair": self.pair}

    def infer(self, model: PreTrainedModel, arrays: Mapping[str, np.ndarray], batch_size: int = 64) -> Outputs:
        return {"value": self._logits(model, arrays, batch_size)[:, 0]}

    def ensemble(self, members: Sequence[Outputs], arrays: Mapping[str, np.ndarray]) -> Outputs:
        """The mean of the members' values."""
        return {"value": np.mean([m["value"] for m in members], axis=0)}

    def collect(self, model: PreTrainedModel, features: Dataset, arrays: Mapping[str, np.ndarray],
                **options: Any) -> pa.Table:
        values = self.infer(model, arrays)["value"]
        table = pa.table({"example_id": pa.array(list(features["example_id"]), pa.string()),
                          "gold": pa.array(~np.isnan(arrays["score"])),
                          "values": fixed(values.astype(np.float32)[:, None], pa.float32())})
        return with_metadata(table, {METADATA_KEY: self._member_meta(1)})

    def merge(self, tables: Sequence[pa.Table], examples: Dataset, features: Dataset,
              arrays: Mapping[str, np.ndarray], **options: Any) -> pa.Table:
        _check_same_rows(tables)
        stacked = np.concatenate([unfixed(t.column("values"), (1,), np.float32) for t in tables], axis=1)
        table = pa.table({"example_id": tables[0].column("example_id"), "gold": tables[0].column("gold"),
                          "values": fixed(stacked, pa.float32())})
        return with_metadata(table, {METADATA_KEY: self._member_meta(len(tables))})

    def knowledge_arrays(self, table: pa.Table, features: Dataset) -> dict[str, np.ndarray]:
        """``teacher_values`` ``[F, N]`` in the order of ``features``' example ids."""
        meta = self._checked(table)
        values = unfixed(table.column("values"), (int(meta["members"]),), np.float32)
        return {"teacher_values": _in_order(values, table, features)}

    def hard_term(self) -> Term:
        """``(y_hat - y)^2`` (:func:`~kd_core.objectives.losses.regression_mse_loss`); 0 without a gold score."""
        import torch

        from kd_core.objectives import losses
        from kd_core.objectives.terms import Term

        def fn(out: SentenceOutput, b: Mapping[str, Tensor]) -> Tensor:
            scores = b["score"]
            has_score = ~torch.isnan(scores)
            loss = losses.regression_mse_loss(out.logits[:, 0], torch.nan_to_num(scores))
            return torch.where(has_score, loss, torch.zeros_like(loss))

        return Term("mse", fn)

    def soft_term(self, tau: float) -> Term:
        """``(y_hat - 1/N sum_n t_n)^2``: MSE to the members' mean (a temperature does not apply to a value)."""
        from kd_core.objectives import losses
        from kd_core.objectives.terms import Term

        return Term("kd", lambda out, b: losses.regression_mse_loss(out.logits[:, 0], b["teacher_values"].mean(-1)),
                    needs_knowledge=True, requires=("teacher_values",))

    def term(self, kind: str, tau: float = 1.0) -> Term:
        """Also ``logit_mse``: for one output value it is the soft term, the squared error to the members' mean."""
        if kind == "logit_mse":
            return replace(self.soft_term(tau), name="logit_mse")
        return super().term(kind, tau)

    def scores(self, examples: Dataset, features: Dataset, arrays: Mapping[str, np.ndarray],
               outputs: Outputs) -> dict[str, float]:
        gold = ~np.isnan(arrays["score"])
        return regression_scores(outputs["value"][gold].tolist(), arrays["score"][gold].tolist())


def _softmax(logits: np.ndarray) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    return F.softmax(torch.from_numpy(np.asarray(logits, np.float32)), dim=-1).numpy()


def _check_same_rows(tables: Sequence[pa.Table]) -> None:
    if not tables:
        raise ConfigError("knowledge", "members", "merge needs at least one member table")
    for index, table in enumerate(tables[1:], start=1):
        if not table.column("example_id").equals(tables[0].column("example_id")):
            raise DataError("knowledge", f"member {index}", "covers different examples (or order) than member 0")


def _in_order(values: np.ndarray, table: pa.Table, features: Dataset) -> np.ndarray:
    """A table's per-row ``values`` in the order of ``features``' example ids (a missing id raises)."""
    rows = row_indices(table, "example_id", list(features["example_id"]))
    return values if rows is None else values[rows]
