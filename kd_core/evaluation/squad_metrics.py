"""SQuAD exact match and token F1, with the official SQuAD v1.1 answer normalisation.

Notation: ``norm(s)`` is :func:`normalize_answer`, ``tok(s) = norm(s).split()`` is the
bag (multiset) of normalised tokens of ``s``.

* Exact match of a prediction ``p`` against one reference ``g``::

      EM(p, g) = 1  if norm(p) == norm(g)  else 0

* Token F1, with ``common = |tok(p) ∩ tok(g)|`` the size of the multiset intersection::

      P = common / |tok(p)|,   R = common / |tok(g)|,   F1(p, g) = 2 P R / (P + R)

  and ``F1 = 0`` whenever ``common == 0`` (as in the official v1.1 script, so two texts
  that both normalise to nothing have EM 1 but F1 0).

* Several references ``G``: ``score(p, G) = max_{g in G} score(p, g)``.

* Corpus scores are percentages over every question of the reference set:
  ``EM = 100 / N * sum_q score_EM(q)`` and likewise for F1; an unanswered question scores 0.

* A question with an empty reference list (a SQuAD v2 unanswerable question) follows the
  SQuAD v2 convention: the correct answer is the empty string, so EM = F1 = 1 when the
  prediction normalises to the empty string and EM = F1 = 0 otherwise.

* SQuAD v2 (questions without an answer): a model answers ``""`` when its null margin
  ``null - best span`` is above a threshold ``t``; scores are also reported over the questions
  with an answer (``HasAns``) and those without (``NoAns``), and, as the official v2 script does,
  the best score over ``t`` with its threshold (choose ``t`` on dev, apply it elsewhere).

* Adversarial SQuAD (Jia & Liang 2017), as their evaluation script scores it: a question
  ``ORIG-suffix`` is a variant of question ``ORIG`` (the id before the first ``-``). Per
  original id ``o``, with ``V(o)`` its variants in file order, the question that counts is

      c(o) = o                                   if V(o) is empty
      c(o) = first argmin_{v in V(o)} F1(v)      otherwise

  (the original's own scores are not compared with its variants'; on a tie in F1 the first
  variant in file order counts, whatever its EM), and
  ``EM_adv = 100 / |O| * sum_o EM(c(o))`` and likewise F1, over the original ids ``O``; an
  unanswered question scores 0.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

Metric = Callable[[str, str], float]


def normalize_answer(s: str) -> str:
    """Official SQuAD v1.1 normalisation.

    Applied in this order: lower-case; delete every character of ``string.punctuation``;
    replace the whole words ``a``, ``an``, ``the`` by a space; collapse runs of whitespace to
    single spaces and strip both ends.
    """
    lowered = s.lower()
    no_punctuation = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    no_articles = _ARTICLES.sub(" ", no_punctuation)
    return " ".join(no_articles.split())


def _tokens(s: str) -> list[str]:
    """Normalised tokens ``tok(s) = norm(s).split()``."""
    return normalize_answer(s).split()


def exact_match(prediction: str, ground_truth: str) -> float:
    """``EM(p, g) = 1.0 if norm(p) == norm(g) else 0.0``."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token F1 in [0, 1]: ``2 P R / (P + R)`` with ``P = common/|tok(p)|``, ``R = common/|tok(g)|``.

    ``common`` is the size of the multiset intersection of the two token bags; the score is 0
    when ``common == 0`` (including when either side normalises to nothing).
    """
    prediction_tokens = _tokens(prediction)
    truth_tokens = _tokens(ground_truth)
    common = sum((Counter(prediction_tokens) & Counter(truth_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(prediction_tokens)
    recall = common / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def max_over_references(metric: Metric, prediction: str, references: Sequence[str]) -> float:
    """``max_{g in references} metric(prediction, g)``; raises ``ValueError`` if there is no reference."""
    if not references:
        raise ValueError("max_over_references needs at least one reference")
    return max(metric(prediction, reference) for reference in references)


def _span_score(metric: Metric, prediction: str, references: Sequence[str]) -> float:
    """Score of one question: max over references, or the SQuAD v2 rule when there are none.

    With no reference the question is unanswerable: ``1.0 if norm(prediction) == "" else 0.0``.
    """
    if not references:
        return float(normalize_answer(prediction) == "")
    return max_over_references(metric, prediction, references)


def span_exact_match(prediction: str, references: Sequence[str]) -> float:
    """Exact match of one question: ``max_g EM(p, g)``; empty ``references`` use the SQuAD v2 rule."""
    return _span_score(exact_match, prediction, references)


def span_f1(prediction: str, references: Sequence[str]) -> float:
    """Token F1 of one question: ``max_g F1(p, g)``; empty ``references`` use the SQuAD v2 rule."""
    return _span_score(f1_score, prediction, references)


def token_f1_zero(prediction: str, references: Sequence[str]) -> bool:
    """True when ``F1(prediction, g) == 0`` for every ``g`` in ``references``.

    That is, the text shares no normalised token with any reference (a text that normalises to
    nothing, such as ``"the"``, therefore qualifies). With no reference at all the answer is
    True (nothing to overlap with). Used to choose a confusing (wrong) answer for A2D.
    """
    return all(f1_score(prediction, reference) == 0.0 for reference in references)


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float | int]:
    """Corpus EM and F1, in percent, over every question id of ``references``.

    ``EM = 100 / N * sum_q span_exact_match(pred_q, refs_q)`` and
    ``F1 = 100 / N * sum_q span_f1(pred_q, refs_q)``, with ``N = len(references)``.
    A question id absent from ``predictions`` scores 0 for both and is counted in ``"missing"``;
    predictions for ids not in ``references`` are ignored. Raises ``ValueError`` when
    ``references`` is empty (the percentages would be undefined).

    Returns ``{"exact_match": float, "f1": float, "missing": int}``.
    """
    if not references:
        raise ValueError("squad_scores needs at least one reference question")
    total_em = 0.0
    total_f1 = 0.0
    missing = 0
    for question_id, answers in references.items():
        if question_id not in predictions:
            missing += 1
            continue
        prediction = predictions[question_id]
        total_em += span_exact_match(prediction, answers)
        total_f1 += span_f1(prediction, answers)
    count = len(references)
    return {"exact_match": 100.0 * total_em / count, "f1": 100.0 * total_f1 / count, "missing": missing}


#: The scores an evaluation on an adversarial SQuAD file adds (:func:`kd_core.evaluation.predict.scores_from_outputs`):
#: :func:`adversarial_scores`' EM and F1, and those of the original questions alone.
ADVERSARIAL_KEYS = ("adversarial_f1", "adversarial_exact_match", "original_f1", "original_exact_match")


def original_id(question_id: str) -> str:
    """The original question an adversarial variant was made from: the id before its first ``-``."""
    return question_id.split("-", 1)[0]


def is_adversarial(question_ids: Iterable[str]) -> bool:
    """Whether ids look like an adversarial SQuAD file: some ``ORIG-suffix`` whose ``ORIG`` is also there."""
    ids = set(question_ids)
    return any(original_id(q) != q and original_id(q) in ids for q in ids)


def adversarial_scores(predictions: Mapping[str, str],
                       references: Mapping[str, Sequence[str]]) -> dict[str, float | int | None]:
    """Jia & Liang's adversarial EM and F1 (module doc: per original id, its own scores without variants, else
    its variant of lowest F1, the first in ``references``' order on ties) and the scores of the original
    questions alone.

    Returns ``{"exact_match", "f1"}`` (adversarial), ``{"original_exact_match", "original_f1"}``
    (the questions whose id has no suffix; ``None`` when there is none), ``"originals"`` (the
    number of original ids) and ``"missing"`` (unanswered questions, which score 0). Raises
    ``ValueError`` when ``references`` is empty.
    """
    if not references:
        raise ValueError("adversarial_scores needs at least one reference question")
    groups: dict[str, list[str]] = {}
    for question_id in references:  # file order
        groups.setdefault(original_id(question_id), []).append(question_id)

    def scored(question_id: str) -> tuple[float, float]:
        prediction = predictions.get(question_id)
        answers = references[question_id]
        return (0.0, 0.0) if prediction is None else (span_f1(prediction, answers), span_exact_match(prediction, answers))

    counted: dict[str, tuple[float, float]] = {}
    for group, ids in groups.items():
        variants = [q for q in ids if q != group] or ids
        for f1, em in map(scored, variants):
            if group not in counted or f1 < counted[group][0]:  # strictly lower: the first of a tie stays
                counted[group] = (f1, em)
    originals = {q: a for q, a in references.items() if original_id(q) == q}
    plain = squad_scores(predictions, originals) if originals else {"exact_match": None, "f1": None}
    return {
        "exact_match": 100.0 * sum(em for _, em in counted.values()) / len(counted),
        "f1": 100.0 * sum(f1 for f1, _ in counted.values()) / len(counted),
        "original_exact_match": plain["exact_match"], "original_f1": plain["f1"],
        "originals": len(counted), "missing": sum(q not in predictions for q in references),
    }


def answers_at_threshold(answers: Mapping[str, str], margins: Mapping[str, float], threshold: float) -> dict[str, str]:
    """SQuAD v2's null rule: ``""`` for every question whose null margin is above ``threshold``, else its answer."""
    return {q: "" if margins.get(q, float("-inf")) > threshold else text for q, text in answers.items()}


def squad_v2_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float | int]:
    """The official SQuAD v2 breakdown: EM and F1 over all questions, ``HasAns_*`` and ``NoAns_*`` (percent, counts).

    An unanswered question scores 0; a breakdown without questions has ``None`` scores.
    """
    out: dict[str, float | int] = {}
    for prefix, ids in (("", list(references)), ("HasAns_", [q for q, r in references.items() if r]),
                        ("NoAns_", [q for q, r in references.items() if not r])):
        subset = {q: references[q] for q in ids}
        scores = squad_scores(predictions, subset) if subset else {"exact_match": None, "f1": None}
        out |= {f"{prefix}exact_match": scores["exact_match"], f"{prefix}f1": scores["f1"], f"{prefix}total": len(ids)}
    return out


def best_null_threshold(answers: Mapping[str, str], margins: Mapping[str, float],
                        references: Mapping[str, Sequence[str]], metric: str = "f1") -> tuple[float, float]:
    """The threshold ``t`` of the null rule that maximises ``metric`` (``"f1"`` or ``"exact_match"``) here.

    ``answers`` are the best non-null answers and ``margins`` their null margins. Starting with
    every question null (each unanswerable one scores 1), questions are answered in increasing
    margin; ``t`` is the margin after which the corpus score is highest (answering none is
    ``min margin - 1``). Returns ``(score in percent, t)``.
    """
    score_of = span_f1 if metric == "f1" else span_exact_match
    total = sum(0.0 if references[q] else 1.0 for q in references)
    best_total, best_t = total, min(margins.values(), default=0.0) - 1.0
    order = sorted((margins[q], q) for q in references if q in answers and q in margins)
    for i, (margin, question) in enumerate(order):
        total += score_of(answers[question], references[question]) - (0.0 if references[question] else 1.0)
        last_of_equals = i + 1 == len(order) or order[i + 1][0] > margin
        if last_of_equals and total > best_total:
            best_total, best_t = total, margin
    return 100.0 * best_total / len(references), best_t
