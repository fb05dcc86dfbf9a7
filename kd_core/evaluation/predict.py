"""Inference over features and SQuAD evaluation of a QA model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from kd_core.data.batches import iterate_batches, pad_positions
from kd_core.evaluation.decode import null_answer_margins, scored_answers
from kd_core.evaluation.free_form_metrics import free_form_scores
from kd_core.evaluation.squad_metrics import (
    adversarial_scores,
    answers_at_threshold,
    best_null_threshold,
    is_adversarial,
    squad_scores,
    squad_v2_scores,
)
from kd_core.models.forward import qa_forward
from kd_core.objectives.losses import masked_log_softmax


@dataclass
class ModelOutputs:
    """Outputs over a whole feature set, in feature order: ``[F, S]`` logits, ``[F, S, Q]`` attention."""

    start_logits: np.ndarray
    end_logits: np.ndarray
    attention: np.ndarray | None = None


@torch.no_grad()
def run_model(
    model: PreTrainedModel,
    arrays: Mapping[str, np.ndarray],
    batch_size: int = 64,
    num_question_tokens: int = 0,
    progress: bool = False,
    desc: str = "infer",
) -> ModelOutputs:
    """Run ``model`` over every feature (eval mode); attention only when ``num_question_tokens > 0``, as float16
    ``[F, S, Q]`` filled in place (what knowledge tables store: at SQuAD size, 4.3 GB rather than float32
    batches and their concatenation, four times that).

    Each batch is cut to its longest row (:func:`~kd_core.data.batches.iterate_batches`) and its
    outputs are put back to the full window width: positions past a batch's longest row hold 0
    (padding, which every loss and decoder masks).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    starts, ends = [], []
    total, width = arrays["input_ids"].shape[:2]
    attention = np.zeros((total, width, num_question_tokens), np.float16) if num_question_tokens else None
    batches = iterate_batches(arrays, batch_size)
    first = 0
    for batch in tqdm(batches, total=-(-total // batch_size), desc=desc, disable=not progress, leave=False):
        out = qa_forward(model, {k: v.to(device) for k, v in batch.items()}, num_question_tokens)
        starts.append(pad_positions(out.start_logits.float().cpu().numpy(), width))
        ends.append(pad_positions(out.end_logits.float().cpu().numpy(), width))
        rows = len(out.start_logits)
        if attention is not None and out.attention is not None:
            attention[first : first + rows, : out.attention.shape[1]] = out.attention.to(torch.float16).cpu().numpy()
        first += rows
    model.train(was_training)
    return ModelOutputs(np.concatenate(starts), np.concatenate(ends), attention)


def window_log_probabilities(logits: np.ndarray, span_mask: np.ndarray) -> np.ndarray:
    """``log softmax`` of each window's scores over its legal positions (``[F, S]``; masked positions ~-1e4)."""
    mask = torch.from_numpy(np.asarray(span_mask, dtype=bool))
    return masked_log_softmax(torch.from_numpy(np.array(logits, dtype=np.float32)), mask).numpy()


def scored_answers_from_outputs(
    examples: Dataset, features: Dataset, arrays: Mapping[str, np.ndarray], outputs: ModelOutputs, max_answer_length: int
) -> tuple[dict[str, tuple[float, str]], dict[str, float]]:
    """Best answer and its score per example id (as :func:`answers_from_outputs`), and SQuAD v2's null margins."""
    contexts = dict(zip(examples["id"], examples["context"]))
    mask = arrays["span_mask"]
    start = window_log_probabilities(outputs.start_logits, mask)
    end = window_log_probabilities(outputs.end_logits, mask)
    scored = scored_answers(features["example_id"], contexts, features["offsets"], start, end, arrays["passage_mask"],
                            max_answer_length)
    return scored, null_answer_margins(features["example_id"], start, end, scored)


def answers_from_outputs(
    examples: Dataset, features: Dataset, arrays: Mapping[str, np.ndarray], outputs: ModelOutputs, max_answer_length: int
) -> dict[str, str]:
    """Best answer text per example id from model outputs over ``features``.

    Every model is decoded the same way, a single model as an ensemble of one: a span scores
    ``log p_start(i) + log p_end(j)`` with ``p`` normalised over its window's legal positions
    (:func:`window_log_probabilities`; an ensemble's outputs, ``log q`` of averaged
    probabilities, are already normalised and pass unchanged). Raw logits, the usual BERT rule,
    are not comparable across windows: a window without the answer may still score high.
    """
    scored, _ = scored_answers_from_outputs(examples, features, arrays, outputs, max_answer_length)
    return {example_id: text for example_id, (_, text) in scored.items()}


def ensemble_outputs(members: Sequence[ModelOutputs], span_mask: np.ndarray) -> ModelOutputs:
    """An ensemble's outputs: ``log q`` with ``q = 1/N sum_n softmax(z_n)`` over legal positions.

    Decoding adds start and end scores, so the ensemble's best span maximises
    ``log q_start(i) + log q_end(j)``, the product of the averaged probabilities.
    """
    mask = torch.from_numpy(np.asarray(span_mask, dtype=bool))

    def averaged(logits: list[np.ndarray]) -> np.ndarray:
        stacked = torch.from_numpy(np.stack(logits, axis=1))
        expanded = mask.unsqueeze(1).expand_as(stacked)
        return masked_log_softmax(stacked, expanded).exp().mean(dim=1).clamp(min=1e-30).log().numpy()

    return ModelOutputs(averaged([m.start_logits for m in members]), averaged([m.end_logits for m in members]))


def scores_from_outputs(
    examples: Dataset, features: Dataset, arrays: Mapping[str, np.ndarray], outputs: ModelOutputs,
    max_answer_length: int, null_threshold: float = 0.0,
) -> dict[str, float]:
    """SQuAD EM/F1 (percent) of precomputed outputs over ``features`` of ``examples``.

    On a set with unanswerable questions (SQuAD v2) the null rule answers ``""`` when the null
    margin is above ``null_threshold`` (:mod:`kd_core.evaluation.squad_metrics`); the scores add the official
    breakdown (``HasAns_*``, ``NoAns_*``), ``best_f1`` and its threshold ``best_f1_threshold``
    on this set (what a dev evaluation passes on), and ``null_threshold``, the one applied.
    On free-form answers (NarrativeQA) also ``bleu_1``, ``bleu_4`` and ``rouge_l``
    (:mod:`kd_core.evaluation.free_form_metrics`), EM and F1 being against the written answers too.
    On an adversarial SQuAD set (:func:`~kd_core.evaluation.squad_metrics.is_adversarial`) also Jia & Liang's
    scores: ``adversarial_exact_match`` / ``adversarial_f1`` (the worst variant per original
    question) and ``original_exact_match`` / ``original_f1`` (the original questions alone).
    """
    scored, margins = scored_answers_from_outputs(examples, features, arrays, outputs, max_answer_length)
    predictions = {example_id: text for example_id, (_, text) in scored.items()}
    references = references_of(examples)
    unanswerable = any(not answers for answers in references.values())
    if unanswerable:
        best_f1, best_threshold = best_null_threshold(predictions, margins, references)
        predictions = answers_at_threshold(predictions, margins, null_threshold)
    scores = squad_scores(predictions, references)
    if unanswerable:
        breakdown = squad_v2_scores(predictions, references)
        scores |= {k: v for k, v in breakdown.items() if k.startswith(("HasAns_", "NoAns_")) and v is not None}
        scores |= {"best_f1": best_f1, "best_f1_threshold": best_threshold, "null_threshold": null_threshold}
    if "references" in examples.column_names and any(examples["references"]):
        scores |= free_form_scores(predictions, references)
    if is_adversarial(references):
        adversarial = adversarial_scores(predictions, references)
        scores |= {"adversarial_exact_match": adversarial["exact_match"], "adversarial_f1": adversarial["f1"],
                   "original_exact_match": adversarial["original_exact_match"],
                   "original_f1": adversarial["original_f1"]}
    return scores


def references_of(examples: Dataset) -> dict[str, list[str]]:
    """Gold answer texts per example id: the free-form answers when the example has them, else the spans' texts."""
    free = examples["references"] if "references" in examples.column_names else [[]] * len(examples)
    return {example_id: list(written) or answers["text"]
            for example_id, answers, written in zip(examples["id"], examples["answers"], free)}


def evaluate_qa(
    model: PreTrainedModel,
    examples: Dataset,
    features: Dataset,
    arrays: Mapping[str, np.ndarray],
    max_answer_length: int = 30,
    batch_size: int = 64,
) -> tuple[dict[str, float], dict[str, str]]:
    """SQuAD EM/F1 (percent) of ``model`` on ``examples`` and its predictions."""
    outputs = run_model(model, arrays, batch_size)
    predictions = answers_from_outputs(examples, features, arrays, outputs, max_answer_length)
    return squad_scores(predictions, references_of(examples)), predictions
