"""Free-form answers (NarrativeQA): answers written by people, not spans of the context.

An extractive reader can only point at spans, so each question's **training label** is the
context span with the highest ROUGE-L against the reference answers (Kočiský et al. 2018's
"oracle" span; the span-reader baselines of NarrativeQA train on it). Evaluation scores the
predicted span against the written answers with BLEU-1, BLEU-4 and ROUGE-L
(:mod:`kd_core.evaluation.free_form_metrics`).

ROUGE-L here is the F-measure of the longest common subsequence ``LCS`` of the two token lists,
``P = LCS / |candidate|``, ``R = LCS / |reference|``, ``F = 2 P R / (P + R)``, over the tokens of
``rouge-score``'s default tokenizer (lower-cased runs of ASCII letters and digits), so that the
label is the span the evaluation's ROUGE-L prefers; the maximum over references counts. Spans
are whole tokens of at most ``max_answer_words`` words.

The file format is JSON lines, one question per line:
``{"id": ..., "context": ..., "question": ..., "answers": ["written answer", ...]}``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset

from kd_core.data.schema import examples_to_dataset
from kd_core.io.errors import DataError

_TOKEN = re.compile(r"[A-Za-z0-9]+")


def rouge_tokens(text: str) -> list[tuple[str, int, int]]:
    """``(token, char_start, char_end)`` for every token of ``rouge-score``'s default tokenizer."""
    return [(m.group().lower(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _lcs_rows(candidate: Sequence[str], reference: Sequence[str]) -> list[int]:
    """``LCS(candidate[:k], reference)`` for every prefix length ``k = 1..len(candidate)`` (one DP pass)."""
    previous = [0] * (len(reference) + 1)
    lengths = []
    for token in candidate:
        current = [0] * (len(reference) + 1)
        for j, other in enumerate(reference, start=1):
            current[j] = previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1])
        lengths.append(current[-1])
        previous = current
    return lengths


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F-measure of two token lists (module doc); 0 when either is empty or nothing is shared."""
    if not candidate or not reference:
        return 0.0
    lcs = _lcs_rows(candidate, reference)[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def best_rouge_span(context: str, references: Sequence[str], max_answer_words: int) -> tuple[int, int, float]:
    """The context span of at most ``max_answer_words`` tokens with the highest ROUGE-L against ``references``.

    Returns ``(char_start, char_end, score)``; the first of equal spans (earliest start, then
    shortest) wins; ``(0, 0, 0.0)`` when no span shares a token with any reference.
    """
    tokens = rouge_tokens(context)
    words = [t for t, _, _ in tokens]
    refs = [[t for t, _, _ in rouge_tokens(r)] for r in references]
    best = (0, 0, 0.0)
    for i in range(len(words)):
        window = words[i : i + max_answer_words]
        for ref in refs:
            if not ref:
                continue
            for k, lcs in enumerate(_lcs_rows(window, ref), start=1):
                if lcs == 0:
                    continue
                precision, recall = lcs / k, lcs / len(ref)
                score = 2 * precision * recall / (precision + recall)
                if score > best[2]:
                    best = (tokens[i][1], tokens[i + k - 1][2], score)
    return best


def load_free_form(path: str | Path, max_answer_words: int = 30, domain: str | None = None) -> Dataset:
    """Free-form questions from JSON lines (module doc), labelled with their best ROUGE-L span.

    A line that is not a JSON object with a string ``id``, ``context`` and ``question`` and a
    non-empty list of string ``answers``, a duplicate id, or a question whose context shares no
    token with any answer (no span to learn) is a DataError naming the line.
    """
    import json

    source = str(path)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(source, "file", f"cannot read: {err}") from err
    rows, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(source, where, f"malformed JSON: {err.msg}") from err
        if not isinstance(record, dict):
            raise DataError(source, where, "expected a JSON object")
        for key in ("id", "context", "question"):
            if not isinstance(record.get(key), str) or not record[key]:
                raise DataError(source, where, f'missing or empty string field "{key}"')
        answers = record.get("answers")
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a for a in answers):
            raise DataError(source, where, '"answers" must be a non-empty list of non-empty strings')
        if record["id"] in seen:
            raise DataError(source, where, f"duplicate question id {record['id']!r}")
        seen.add(record["id"])
        start, end, score = best_rouge_span(record["context"], answers, max_answer_words)
        if score == 0.0:
            raise DataError(source, f"{where} (id {record['id']!r})", "no context span shares a word with the answers")
        rows.append({"id": record["id"], "domain": domain or Path(path).stem, "title": "", "context": record["context"],
                     "question": record["question"], "is_impossible": False, "references": answers,
                     "answers": {"text": [record["context"][start:end]], "answer_start": [start]}})
    if not rows:
        raise DataError(source, "file", "no questions")
    return examples_to_dataset(rows)
