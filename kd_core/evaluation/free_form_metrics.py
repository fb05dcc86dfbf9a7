"""BLEU-1, BLEU-4 and ROUGE-L of predicted answers against free-form references (NarrativeQA's metrics).

Computed with the kept libraries, not re-implemented:

* BLEU (Papineni et al. 2002) with ``sacrebleu``: corpus BLEU over every question, each with
  all its references (``sacrebleu`` takes reference streams; a question with fewer references
  fills the rest with ``None``), ``max_ngram_order`` 1 (BLEU-1) and 4 (BLEU-4), sacrebleu's
  default ``13a`` tokenizer and brevity penalty;
* ROUGE-L with ``rouge-score``: per question the highest F-measure over its references
  (default tokenizer, no stemming), averaged over questions.

All three are percentages. A question without a prediction counts with the empty answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def free_form_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """``{"bleu_1", "bleu_4", "rouge_l"}`` over the questions of ``references`` (module doc)."""
    # Imported here: rouge-score imports nltk (1.3 s), and every Ray worker imports this module.
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    ids = [q for q, refs in references.items() if refs]
    if not ids:
        raise ValueError("free_form_scores needs at least one question with a reference answer")
    hypotheses = [predictions.get(q, "") for q in ids]
    width = max(len(references[q]) for q in ids)
    streams = [[references[q][k] if k < len(references[q]) else None for q in ids] for k in range(width)]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [max(scorer.score(ref, hyp)["rougeL"].fmeasure for ref in references[q]) for q, hyp in zip(ids, hypotheses)]
    return {
        "bleu_1": BLEU(max_ngram_order=1).corpus_score(hypotheses, streams).score,
        "bleu_4": BLEU(max_ngram_order=4).corpus_score(hypotheses, streams).score,
        "rouge_l": 100.0 * sum(rouge) / len(rouge),
    }
