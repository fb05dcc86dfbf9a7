"""Load extractive-QA examples from SQuAD JSON, MRQA jsonl(.gz) or the Hugging Face hub.

Every loader returns the one example schema of :mod:`kd_core.data.schema` and validates its
input on the way: any problem raises :class:`~kd_core.io.errors.DataError` whose message reads
``<source>: <where>: <what>``. ``where`` names the example in one scheme for all formats:

* SQuAD JSON: the JSON path, ``data[0].paragraphs[3].qas[1]``;
* MRQA jsonl: the line and question, ``line 12, qas[1]``;
* Hugging Face: the row, ``row 7``;

prefixed with ``question id "56be4db0" at`` once the question's id is known. Malformed JSON and
bad bytes are reported as ``line L, column C`` / ``line L`` with the byte offset in ``what``.

Answer policy (SQuAD JSON and Hugging Face rows, which carry ``text`` + ``answer_start``):

1. ``answer_start`` must lie inside the context, else DataError.
2. If ``context[start:start+len(text)] != text``, the answer moves to the occurrence of
   ``text`` nearest to ``start`` (ties: the earlier one). It counts as ``n_realigned_near``
   when it moved by at most :data:`REALIGN_WINDOW` characters, else as ``n_realigned_far``.
   A text that occurs nowhere in the context is a DataError.
3. Surrounding whitespace is then stripped from the text and ``answer_start`` shifted to
   match (``n_stripped``); COVID-QA needs steps 2 and 3 (answers such as ``" text"``).

MRQA questions take their answers from ``detected_answers`` char spans (inclusive ends): the
text is ``context[start:end+1]`` (``n_span_text_differs`` counts spans whose ``text`` field
differs, as MRQA matched them after normalisation), each span being one reference. Without
``detected_answers`` the plain ``answers`` strings are located in the context (first
occurrence); strings not found are dropped and counted in ``n_answers_dropped``, and a question
left with no answer is a DataError.

SQuAD v2.0 questions with ``is_impossible`` true keep empty answers (``plausible_answers`` is
ignored); integer ids (COVID-QA) become strings; ids must be unique within one source.

The counts come back as a :class:`LoadReport` from :func:`load_examples_with_report` and are
logged as one line on the ``kd_core.data`` logger by every loader (WARNING when answers were
moved far or dropped, INFO otherwise). The shared validation (the collector, answers, typed
JSON fields, byte decoding) lives in :mod:`kd_core.data.validation`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset, load_dataset

from kd_core.data.free_form import load_free_form
from kd_core.data.validation import (
    REALIGN_WINDOW,
    Answer,
    Collector,
    LoadReport,
    flag_field,
    is_int,
    json_object,
    json_type,
    jsonl_records,
    list_field,
    optional_text,
    parse_json_document,
    place_answer,
    question_where,
    refuse_impossible_answers,
    require_answers,
    shown,
    strip_answer,
    text_field,
)
from kd_core.io.errors import DataError

__all__ = ["REALIGN_WINDOW", "LoadReport", "load_examples", "load_examples_with_report", "load_hf", "load_mrqa",
           "load_squad"]

_SQUAD_SUFFIXES = (".json",)
_MRQA_SUFFIXES = (".jsonl", ".jsonl.gz")
_HF_PREFIX = "hf:"


# ---------------------------------------------------------------------------- public API


def load_squad(path: str | Path, domain: str | None = None) -> Dataset:
    """Load a SQuAD v1.1 or v2.0 JSON file; ``domain`` defaults to the file stem."""
    return _read_squad(Path(path), domain)[0]


def load_mrqa(path: str | Path, domain: str | None = None) -> Dataset:
    """Load an MRQA 2019 ``.jsonl`` or ``.jsonl.gz`` file.

    ``domain`` defaults to the header line's ``dataset`` field, else to the file stem.
    """
    return _read_mrqa(Path(path), domain)[0]


def load_hf(name: str, split: str, domain: str | None = None, config: str | None = None) -> Dataset:
    """Load a SQuAD-style Hugging Face dataset (columns id, title, context, question, answers).

    ``domain`` defaults to the last part of ``name``. A dataset that cannot be loaded (no hub,
    unknown name, missing split) raises ``DataError(name, "load_dataset", reason)``.
    """
    return _read_hf(name, split, domain, config)[0]


def load_examples(source: str, domain: str | None = None, split: str = "train") -> Dataset:
    """Load examples from a file or a Hugging Face dataset; see :func:`load_examples_with_report`."""
    return load_examples_with_report(source, domain, split)[0]


def load_examples_with_report(
    source: str, domain: str | None = None, split: str = "train"
) -> tuple[Dataset, LoadReport]:
    """Load examples and return them with their :class:`LoadReport`.

    ``*.json`` is read as SQuAD, ``*.jsonl`` / ``*.jsonl.gz`` as MRQA, or as free-form answers
    (NarrativeQA, :mod:`kd_core.data.free_form`) when the first line of a ``*.jsonl`` file is
    a question (``question`` and ``answers`` fields) rather than MRQA's header. Any other existing path
    (a directory, another suffix) is refused; anything else, or ``hf:NAME``, names a Hugging
    Face dataset, of which ``split`` is loaded (``split`` is ignored for files).
    """
    if source.startswith(_HF_PREFIX):
        return _read_hf(source[len(_HF_PREFIX) :], split, domain, None)
    path = Path(source)
    name = path.name.lower()
    if name.endswith(_SQUAD_SUFFIXES):
        return _read_squad(path, domain)
    if name.endswith(".jsonl") and _is_free_form(path):
        examples = load_free_form(path, domain=domain)
        return examples, LoadReport(source, domain or "", len(examples), len(set(examples["context"])), len(examples))
    if name.endswith(_MRQA_SUFFIXES):
        return _read_mrqa(path, domain)
    if path.is_dir():
        raise DataError(source, "source", "is a directory; give a .json, .jsonl or .jsonl.gz file")
    if path.exists():
        raise DataError(source, "source", "unsupported file type; expected .json, .jsonl or .jsonl.gz")
    return _read_hf(source, split, domain, None)


def _is_free_form(path: Path) -> bool:
    """Whether a ``.jsonl`` file's first line is a free-form question (not an MRQA header)."""
    try:
        with path.open(encoding="utf-8") as lines:
            first = next((line for line in lines if line.strip()), "")
        record = json.loads(first)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # the MRQA reader reports what is wrong with the file
    return isinstance(record, dict) and "question" in record and "answers" in record and "header" not in record


# ---------------------------------------------------------------------------- SQuAD JSON


def _read_squad(path: Path, domain: str | None) -> tuple[Dataset, LoadReport]:
    """Parse and validate a SQuAD v1.1/v2.0 JSON file."""
    col = Collector(str(path))
    document = parse_json_document(path, col)
    if not isinstance(document, dict):
        raise col.error("top level", f'expected a JSON object with a "data" list, got {json_type(document)}')
    for i, article in enumerate(list_field(document, "data", col, "top level")):
        _add_squad_article(article, f"data[{i}]", col)
    return col.finish(domain or _stem(path))


def _add_squad_article(article: Any, location: str, col: Collector) -> None:
    """Add every question of one ``data[i]`` article."""
    article = json_object(article, col, location)
    title = optional_text(article, "title", col, location)
    for j, paragraph in enumerate(list_field(article, "paragraphs", col, location)):
        p_location = f"{location}.paragraphs[{j}]"
        paragraph = json_object(paragraph, col, p_location)
        context = text_field(paragraph, "context", col, p_location)
        for k, qa in enumerate(list_field(paragraph, "qas", col, p_location)):
            _add_squad_question(qa, title, context, f"{p_location}.qas[{k}]", col)


def _add_squad_question(qa: Any, title: str, context: str, location: str, col: Collector) -> None:
    """Validate one SQuAD question and its ``answers`` list of ``{text, answer_start}``."""
    qa = json_object(qa, col, location)
    qid = col.claim_id(qa.get("id"), location, "id")
    where = question_where(location, qid)
    question = text_field(qa, "question", col, where)
    impossible = flag_field(qa, "is_impossible", col, where)
    refuse_impossible_answers(qa, impossible, col, where)
    answers: list[Answer] = []
    if not impossible:
        for n, answer in enumerate(list_field(qa, "answers", col, where)):
            a_where = f"{where}.answers[{n}]"
            answer = json_object(answer, col, a_where)
            text = text_field(answer, "text", col, a_where)
            answers.append(place_answer(context, text, answer.get("answer_start"), col, a_where))
    require_answers(answers, impossible, col, where)
    col.add(qid, title, context, question, answers, impossible)


# ---------------------------------------------------------------------------- MRQA jsonl


def _read_mrqa(path: Path, domain: str | None) -> tuple[Dataset, LoadReport]:
    """Parse and validate an MRQA 2019 jsonl(.gz) file, with or without its header line."""
    col = Collector(str(path))
    header_domain = ""
    first = True
    for line_no, record in jsonl_records(path, col):
        if first and isinstance(record, dict) and "header" in record:
            header_domain = _header_domain(record["header"], col, f"line {line_no}")
        else:
            _add_mrqa_context(record, f"line {line_no}", col)
        first = False
    return col.finish(domain or header_domain or _stem(path))


def _header_domain(header: Any, col: Collector, location: str) -> str:
    """The ``dataset`` field of an MRQA header line ("" when absent)."""
    header = json_object(header, col, location)
    return optional_text(header, "dataset", col, location)


def _add_mrqa_context(record: Any, location: str, col: Collector) -> None:
    """Add every question of one MRQA line (one context)."""
    record = json_object(record, col, location)
    context = text_field(record, "context", col, location)
    title = optional_text(record, "title", col, location)
    for k, qa in enumerate(list_field(record, "qas", col, location)):
        _add_mrqa_question(qa, title, context, f"{location}, qas[{k}]", col)


def _add_mrqa_question(qa: Any, title: str, context: str, location: str, col: Collector) -> None:
    """Validate one MRQA question; answers come from ``detected_answers`` or plain ``answers``."""
    qa = json_object(qa, col, location)
    key = "qid" if "qid" in qa else "id"
    qid = col.claim_id(qa.get(key), location, "qid")
    where = question_where(location, qid)
    question = text_field(qa, "question", col, where)
    impossible = flag_field(qa, "is_impossible", col, where)
    refuse_impossible_answers(qa, impossible, col, where)
    answers: list[Answer] = []
    if not impossible and "detected_answers" in qa:
        answers = _detected_answers(qa, context, col, where)
    elif not impossible:
        answers = _located_answers(qa, context, col, where)
    require_answers(answers, impossible, col, where)
    col.add(qid, title, context, question, answers, impossible)


def _detected_answers(qa: Mapping[str, Any], context: str, col: Collector, where: str) -> list[Answer]:
    """One answer per char span of every ``detected_answers`` entry, its text taken from the context."""
    answers = []
    for n, detected in enumerate(list_field(qa, "detected_answers", col, where)):
        d_where = f"{where}.detected_answers[{n}]"
        detected = json_object(detected, col, d_where)
        spans = list_field(detected, "char_spans", col, d_where)
        if not spans:
            raise col.error(d_where, '"char_spans" is empty')
        for span in spans:
            start, end = _char_span(span, context, col, d_where)
            text = context[start : end + 1]
            if not text.strip():
                raise col.error(d_where, f"char span [{start}, {end}] covers only whitespace")
            if detected.get("text", text) != text:
                col.report.n_span_text_differs += 1
            answers.append(strip_answer(text, start, col))
    return answers


def _char_span(span: Any, context: str, col: Collector, where: str) -> tuple[int, int]:
    """Validate one inclusive ``[start, end]`` char span against the context."""
    if not (isinstance(span, list) and len(span) == 2 and all(is_int(x) for x in span)):
        raise col.error(where, f"char span must be [start, end] integers, got {shown(json.dumps(span))}")
    start, end = span
    if not 0 <= start <= end < len(context):
        raise col.error(where, f"char span [{start}, {end}] is outside the context (length {len(context)})")
    return start, end


def _located_answers(qa: Mapping[str, Any], context: str, col: Collector, where: str) -> list[Answer]:
    """Plain MRQA ``answers`` strings placed at their first occurrence; absent ones are dropped."""
    answers = []
    for n, text in enumerate(list_field(qa, "answers", col, where)):
        if not isinstance(text, str) or not text.strip():
            raise col.error(f"{where}.answers[{n}]", "answer must be a non-empty string")
        text = text.strip()
        start = context.find(text)
        if start < 0:
            col.report.n_answers_dropped += 1
        else:
            answers.append((text, start))
    return answers


# ---------------------------------------------------------------------------- Hugging Face


def _read_hf(name: str, split: str, domain: str | None, config: str | None) -> tuple[Dataset, LoadReport]:
    """Load one split of a SQuAD-style hub dataset and validate it like a SQuAD file."""
    try:
        raw = load_dataset(name, config, split=split)
    except Exception as err:  # hub, cache and builders raise many unrelated types; all mean "cannot load"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(name, "load_dataset", f"cannot load split {split!r}: {reason}") from err
    col = Collector(name)
    missing = {"id", "context", "question", "answers"} - set(raw.column_names)
    if missing:
        raise col.error("columns", f"not a SQuAD-style dataset, missing columns {sorted(missing)}")
    for n, row in enumerate(raw):
        _add_hf_row(row, f"row {n}", col)
    return col.finish(domain or name.rstrip("/").rsplit("/", 1)[-1])


def _add_hf_row(row: Mapping[str, Any], location: str, col: Collector) -> None:
    """Validate one hub row; empty answer lists mark unanswerable (SQuAD v2.0) questions."""
    qid = col.claim_id(row.get("id"), location, "id")
    where = question_where(location, qid)
    context = text_field(row, "context", col, where)
    question = text_field(row, "question", col, where)
    title = optional_text(row, "title", col, where)
    spans = json_object(row.get("answers"), col, f"{where}.answers")
    texts, starts = spans.get("text") or [], spans.get("answer_start") or []
    if len(texts) != len(starts):
        raise col.error(f"{where}.answers", f"{len(texts)} texts but {len(starts)} answer_start values")
    answers = []
    for n, (text, start) in enumerate(zip(texts, starts)):
        a_where = f"{where}.answers[{n}]"
        if not isinstance(text, str) or not text.strip():
            raise col.error(a_where, "answer text must be a non-empty string")
        answers.append(place_answer(context, text, start, col, a_where))
    col.add(qid, title, context, question, answers, not answers)



def _stem(path: Path) -> str:
    """File name without its data suffix (``SQuAD.jsonl.gz`` -> ``SQuAD``)."""
    name = path.name
    for suffix in (".jsonl.gz", ".jsonl", ".json"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
