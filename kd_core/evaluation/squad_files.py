"""SQuAD-format files scored as the official ``evaluate-v1.1.py`` script scores them (``python jobs/evaluate.py``).

:func:`score_files` reads a dataset file and a predictions file and returns
``{"exact_match": EM, "f1": F1}`` (percentages, see :mod:`kd_core.evaluation.squad_metrics`). An adversarial
SQuAD file (ids ``ORIG-suffix`` next to ``ORIG``, detected, or forced with ``adversarial``)
is scored as Jia & Liang's evaluation does: ``exact_match`` / ``f1`` are the adversarial
scores (worst variant per original question), with ``original_exact_match`` /
``original_f1`` on the original questions alone. A SQuAD v2 file (questions without an
answer) adds the official v2 breakdown (``HasAns_*``, ``NoAns_*``) and, given the
no-answer scores (``na_prob_file``, as the official v2 script), ``best_exact_match`` /
``best_f1`` with their thresholds. Bad input raises :class:`~kd_core.io.errors.DataError`
naming the file, where in it and the problem.

Only the part of the SQuAD JSON needed for scoring is read here (question id -> answer
texts); the full dataset loaders live in :mod:`kd_core.data.loaders`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from kd_core.evaluation.squad_metrics import (
    adversarial_scores,
    best_null_threshold,
    is_adversarial,
    squad_scores,
    squad_v2_scores,
)
from kd_core.io.errors import DataError

_ROOT = "top level"
_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


def _json_type(value: object) -> str:
    """Name of the JSON type of a decoded value (``object``, ``array``, ``string``, ...)."""
    return "null" if value is None else _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _line_and_column(raw: bytes, offset: int) -> tuple[int, int]:
    """1-based line and byte column of byte ``offset`` in ``raw``."""
    line_start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, offset - line_start + 1


def read_json(path: str | Path) -> object:
    """Decode the UTF-8 JSON file ``path``; unreadable, non-UTF-8 or malformed input raises DataError."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise DataError(source, "file", f"cannot read: {err.strerror or err}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line, column = _line_and_column(raw, err.start)
        raise DataError(source, f"line {line} column {column}", f"invalid UTF-8 byte 0x{raw[err.start]:02x}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(source, f"line {err.lineno} column {err.colno}", f"malformed JSON: {err.msg}") from err


def _expect(value: object, kind: type, source: str, where: str) -> None:
    """Raise DataError unless ``value`` is of JSON type ``kind`` (``dict``, ``list`` or ``str``)."""
    if not isinstance(value, kind):
        raise DataError(source, where, f"expected {_JSON_TYPE_NAMES[kind]}, got {_json_type(value)}")


def _field(container: object, key: str, kind: type, source: str, where: str) -> object:
    """``container[key]`` checked to be a JSON object member of type ``kind``."""
    _expect(container, dict, source, where)
    if key not in container:
        raise DataError(source, where, f'missing field "{key}"')
    value = container[key]
    _expect(value, kind, source, key if where == _ROOT else f"{where}.{key}")
    return value


def _question(qa: object, source: str, where: str) -> tuple[str, list[str]]:
    """``(id, answer texts)`` of one ``qas`` entry; an empty answer list is allowed (SQuAD v2)."""
    question_id = _field(qa, "id", str, source, where)
    answers = _field(qa, "answers", list, source, where)
    texts = [_field(answer, "text", str, source, f"{where}.answers[{i}]") for i, answer in enumerate(answers)]
    return question_id, texts


def load_squad_references(path: str | Path) -> dict[str, list[str]]:
    """Question id -> reference answer texts, read from a SQuAD-format JSON file.

    Requires ``data[*].paragraphs[*].qas[*]`` with a string ``id`` and an ``answers`` list of
    objects with a string ``text``. Duplicate ids and a file without any question raise DataError.
    """
    source = str(path)
    articles = _field(read_json(path), "data", list, source, _ROOT)
    references: dict[str, list[str]] = {}
    for a, article in enumerate(articles):
        paragraphs = _field(article, "paragraphs", list, source, f"data[{a}]")
        for p, paragraph in enumerate(paragraphs):
            qas = _field(paragraph, "qas", list, source, f"data[{a}].paragraphs[{p}]")
            for q, qa in enumerate(qas):
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                question_id, texts = _question(qa, source, where)
                if question_id in references:
                    raise DataError(source, where, f"duplicate question id {question_id!r}")
                references[question_id] = texts
    if not references:
        raise DataError(source, "data", "no questions")
    return references


def load_predictions(path: str | Path) -> dict[str, str]:
    """Question id -> predicted answer text, read from a JSON object of strings."""
    source = str(path)
    predictions = read_json(path)
    _expect(predictions, dict, source, _ROOT)
    for question_id, text in predictions.items():
        _expect(text, str, source, f"id {question_id}")
    return predictions


def load_na_scores(path: str | Path) -> dict[str, float]:
    """Question id -> no-answer score, read from a JSON object of numbers."""
    source = str(path)
    scores = read_json(path)
    _expect(scores, dict, source, _ROOT)
    for question_id, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(source, f"id {question_id}", f"expected number, got {_json_type(value)}")
        if not math.isfinite(value):  # Python's json reads NaN and Infinity
            raise DataError(source, f"id {question_id}", f"expected a finite number, got {value}")
    return {question_id: float(value) for question_id, value in scores.items()}


def score_files(dataset_file: str | Path, prediction_file: str | Path, adversarial: bool = False,
                na_prob_file: str | Path | None = None) -> tuple[dict[str, float], int, int]:
    """``(scores, missing, questions)`` of the predictions in ``prediction_file`` on ``dataset_file`` (module doc).

    ``scores`` holds ``exact_match`` and ``f1``; adversarial files (``adversarial``, or detected)
    add the original questions' scores, SQuAD v2 files the ``HasAns`` / ``NoAns`` breakdown and,
    with ``na_prob_file``, the best scores over no-answer thresholds. ``missing`` questions of the
    ``questions`` had no prediction (they score 0). A prediction file none of whose ids is a question of the
    dataset is refused (:class:`DataError`): the official script would print 0 for it, which reads as a score,
    while it almost always means predictions of another file (a deliberate departure).
    """
    references = load_squad_references(dataset_file)
    predictions = load_predictions(prediction_file)
    if not any(question_id in references for question_id in predictions):
        example = f" (its first: {next(iter(predictions))!r})" if predictions else ""
        raise DataError(str(prediction_file), "ids", f"none of its {len(predictions)} ids is a question id of "
                        f"{dataset_file}{example}: predictions for another file? (the official script would score 0)")
    adversarial = adversarial or is_adversarial(references)
    scores = adversarial_scores(predictions, references) if adversarial else squad_scores(predictions, references)
    keys = ("exact_match", "f1", "original_exact_match", "original_f1", "originals") if adversarial else \
        ("exact_match", "f1")
    out = {key: scores[key] for key in keys}
    if any(not answers for answers in references.values()):
        out |= {k: v for k, v in squad_v2_scores(predictions, references).items() if k.startswith(("HasAns", "NoAns"))}
        if na_prob_file:
            na_scores = load_na_scores(na_prob_file)
            for metric in ("exact_match", "f1"):
                out[f"best_{metric}"], out[f"best_{metric}_threshold"] = best_null_threshold(
                    predictions, na_scores, references, metric)
    return out, scores["missing"], len(references)
