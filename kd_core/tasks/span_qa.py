"""Span QA (extractive reading comprehension) as a :class:`~kd_core.tasks.base.Task`.

The behaviour is the one the A2D and IMM code has always had; this class puts it behind the
task interface: windows of ``[CLS] question [SEP] passage [SEP]``
(:func:`~kd_core.data.features.featurize`), a start/end head, knowledge keyed by **feature
id** (teacher and student share one tokenizer: logits are per token position), the ensemble
merge with top-K spans and the confusing answer (:mod:`kd_core.knowledge.span`), span CE, soft
span CE and A2D's answer-margin and attention terms (:mod:`kd_core.objectives`), best-span decoding and the official SQuAD EM/F1
(primary metric: F1). Splits group questions by ``(domain, context)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from datasets import Dataset
from transformers import PreTrainedTokenizerFast

from kd_core.data.batches import feature_arrays
from kd_core.data.features import FeatureConfig, featurize, truncated_questions
from kd_core.tasks.base import Outputs, Task, ids_fingerprint

if TYPE_CHECKING:  # torch and the model code load in the methods that run models (kd_core.tasks.base), not in a driver
    from transformers import PreTrainedModel

    from kd_core.knowledge.span import ConfusingRule
    from kd_core.models.forward import QAOutput
    from kd_core.objectives.terms import Term


class SpanQATask(Task):
    """Extractive QA over SQuAD-style examples (module doc)."""

    kind = "span_qa"
    key = "feature_id"
    primary_metric = "f1"

    collect_options = ("top_k", "with_attention")
    merge_options = ("confusing",)

    def __init__(self, name: str = "span_qa", max_answer_length: int = 30) -> None:
        self.name = name
        self.max_answer_length = max_answer_length

    def group_keys(self, examples: Dataset) -> list[tuple[str, str]]:
        return list(zip(examples["domain"], examples["context"]))

    def texts(self, examples: Dataset) -> list[str]:
        return list(examples["context"]) + list(examples["question"])

    def data_fingerprint(self, examples: Dataset) -> str:
        return ids_fingerprint(examples, ("id", "question", "context"))

    def featurize(self, examples: Dataset, tokenizer: PreTrainedTokenizerFast, windows: FeatureConfig) -> Dataset:
        return featurize(examples, tokenizer, windows)

    def truncated(self, examples: Dataset, tokenizer: PreTrainedTokenizerFast, windows: FeatureConfig) -> int:
        return truncated_questions(examples, tokenizer, windows)

    def arrays(self, features: Dataset) -> dict[str, np.ndarray]:
        return feature_arrays(features)

    def build_model(self, source: str, seed: int,
                    tokenizer: PreTrainedTokenizerFast | None) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
        from kd_core.models.build import load_qa_model

        return load_qa_model(source, seed, tokenizer)

    def forward(self, model: PreTrainedModel, batch: Mapping[str, Any], question_tokens: int = 0) -> QAOutput:
        from kd_core.models.forward import qa_forward

        return qa_forward(model, batch, question_tokens)

    def infer(self, model: PreTrainedModel, arrays: Mapping[str, np.ndarray], batch_size: int = 64) -> Outputs:
        from kd_core.evaluation.predict import run_model

        outputs = run_model(model, arrays, batch_size)
        return {"start_logits": outputs.start_logits, "end_logits": outputs.end_logits}

    def ensemble(self, members: Sequence[Outputs], arrays: Mapping[str, np.ndarray]) -> Outputs:
        from kd_core.evaluation.predict import ModelOutputs, ensemble_outputs

        merged = ensemble_outputs([ModelOutputs(m["start_logits"], m["end_logits"]) for m in members],
                                  arrays["span_mask"])
        return {"start_logits": merged.start_logits, "end_logits": merged.end_logits}

    def collect(self, model: PreTrainedModel, features: Dataset, arrays: Mapping[str, np.ndarray],
                top_k: int = 4, with_attention: bool = False) -> pa.Table:
        """Start/end logits, the ``top_k`` best spans and (``with_attention``) question-passage attention."""
        from kd_core.knowledge.span import KnowledgeConfig, member_knowledge

        config = KnowledgeConfig(top_k, self.max_answer_length, with_attention)
        return member_knowledge(model, arrays, features["feature_id"], config)

    def merge(self, tables: Sequence[pa.Table], examples: Dataset, features: Dataset,
              arrays: Mapping[str, np.ndarray], confusing: ConfusingRule = "question") -> pa.Table:
        """The members side by side, averaged attention and the confusing answer chosen by rule ``confusing``."""
        from kd_core.evaluation.predict import references_of
        from kd_core.knowledge.span import merge_knowledge

        contexts = dict(zip(examples["id"], examples["context"]))
        references = references_of(examples)
        example_ids = features["example_id"]
        return merge_knowledge(tables, arrays, example_ids, [contexts[e] for e in example_ids], features["offsets"],
                               [references[e] for e in example_ids], confusing)

    def knowledge_arrays(self, table: pa.Table, features: Dataset) -> dict[str, np.ndarray]:
        """A merged table's columns (``[F, N, S]`` logits, confusing answer, attention), or one member's logits
        ``[F, S]`` (IMM learns from one teacher per source)."""
        from kd_core.knowledge.span import knowledge_arrays, knowledge_metadata, member_logits

        if knowledge_metadata(table)["kind"] == "member":
            start, end = member_logits(table, features["feature_id"])
            return {"teacher_start_logits": start, "teacher_end_logits": end}
        return knowledge_arrays(table, features["feature_id"])

    def hard_term(self) -> Term:
        from kd_core.objectives.terms import ce_term

        return ce_term()

    def soft_term(self, tau: float) -> Term:
        from kd_core.objectives.terms import kd_term

        return kd_term(tau)

    def term(self, kind: str, tau: float = 1.0) -> Term:
        """Also A2D's ``answer_margin`` (hinge against the confusing answer) and ``attention`` (MSE of maps), and
        IMM's KD term: ``prediction_mse`` (MSE of the span distributions), ``gold_prediction_mse`` (at the gold
        positions, the paper's) and ``span_logit_mse`` (of raw logits, the released code's)."""
        from kd_core.objectives.terms import (
            Constant,
            answer_margin_term,
            attention_term,
            gold_prediction_mse_term,
            prediction_mse_term,
            span_logit_mse_term,
        )

        if kind == "answer_margin":
            return answer_margin_term(Constant(1.0))
        if kind == "attention":
            return attention_term(Constant(1.0))
        if kind == "prediction_mse":
            return prediction_mse_term(Constant(1.0))
        if kind == "gold_prediction_mse":
            return gold_prediction_mse_term(Constant(1.0))
        if kind == "span_logit_mse":
            return span_logit_mse_term(Constant(1.0))
        return super().term(kind, tau)

    def scores(self, examples: Dataset, features: Dataset, arrays: Mapping[str, np.ndarray],
               outputs: Outputs, null_threshold: float = 0.0) -> dict[str, float]:
        """EM and F1, with SQuAD v2's null rule at ``null_threshold`` and breakdown, and adversarial scores, when
        the examples call for them (:func:`~kd_core.evaluation.predict.scores_from_outputs`)."""
        from kd_core.evaluation.predict import ModelOutputs, scores_from_outputs

        result = scores_from_outputs(examples, features, arrays,
                                     ModelOutputs(outputs["start_logits"], outputs["end_logits"]),
                                     self.max_answer_length, null_threshold)
        return {key: float(value) for key, value in result.items() if key != "missing" and value is not None}
