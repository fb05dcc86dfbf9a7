"""Load extractive-QA examples from SQuAD JSON, MRQA jsonl(.gz) or the Hugging Face hub.

Every loader returns the one example schema of :mod:`kd_core.data.schema` and validates its
input on the way: any problem raises :class:`~kd_core.errors.DataError` whose message reads
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
moved far or dropped, INFO otherwise).
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from datasets import Dataset, load_dataset

from kd_core.data.schema import examples_to_dataset
from kd_core.errors import DataError

logger = logging.getLogger("kd_core.data")

REALIGN_WINDOW = 20
"""Largest move (in characters) of ``answer_start`` that still counts as a near re-alignment."""

_SQUAD_SUFFIXES = (".json",)
_MRQA_SUFFIXES = (".jsonl", ".jsonl.gz")
_HF_PREFIX = "hf:"
_Answer = tuple[str, int]  # (text, answer_start)
_SHOWN_CHARS = 60


@dataclass
class LoadReport:
    """What one load read and how many answers it had to repair (filled in by the loader).

    ``n_contexts`` counts distinct context strings; ``n_answers`` the answers kept. The
    repair counts are explained in the module docstring.
    """

    source: str
    domain: str = ""
    n_examples: int = 0
    n_contexts: int = 0
    n_answers: int = 0
    n_impossible: int = 0
    n_realigned_near: int = 0
    n_realigned_far: int = 0
    n_stripped: int = 0
    n_span_text_differs: int = 0
    n_answers_dropped: int = 0

    def summary(self) -> str:
        """One line with every count, e.g. for a log."""
        counts = " ".join(f"{k}={v}" for k, v in asdict(self).items() if k not in ("source", "domain"))
        return f"loaded {self.source} (domain {self.domain!r}): {counts}"


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

    ``*.json`` is read as SQuAD, ``*.jsonl`` / ``*.jsonl.gz`` as MRQA. Any other existing path
    (a directory, another suffix) is refused; anything else, or ``hf:NAME``, names a Hugging
    Face dataset, of which ``split`` is loaded (``split`` is ignored for files).
    """
    if source.startswith(_HF_PREFIX):
        return _read_hf(source[len(_HF_PREFIX) :], split, domain, None)
    path = Path(source)
    name = path.name.lower()
    if name.endswith(_SQUAD_SUFFIXES):
        return _read_squad(path, domain)
    if name.endswith(_MRQA_SUFFIXES):
        return _read_mrqa(path, domain)
    if path.is_dir():
        raise DataError(source, "source", "is a directory; give a .json, .jsonl or .jsonl.gz file")
    if path.exists():
        raise DataError(source, "source", "unsupported file type; expected .json, .jsonl or .jsonl.gz")
    return _read_hf(source, split, domain, None)


# ---------------------------------------------------------------------------- collecting


class _Collector:
    """Accumulates the validated examples of one source, their ids and the load counts."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.report = LoadReport(source=source)
        self.rows: list[dict[str, Any]] = []
        self._first_seen: dict[str, str] = {}

    def error(self, where: str, what: str) -> DataError:
        """A DataError about this source."""
        return DataError(self.source, where, what)

    def claim_id(self, raw: Any, location: str, key: str) -> str:
        """Validate a question id (string or integer) and refuse one already used in this source."""
        if raw is None:
            raise self.error(location, f'missing field "{key}"')
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise self.error(location, f'field "{key}" must be a string or an integer, got {_json_type(raw)}')
        qid = str(raw)
        if not qid.strip():
            raise self.error(location, f'field "{key}" is empty')
        if qid in self._first_seen:
            raise self.error(_where(location, qid), f"duplicate id (first used at {self._first_seen[qid]})")
        self._first_seen[qid] = location
        return qid

    def add(
        self, qid: str, title: str, context: str, question: str, answers: list[_Answer], impossible: bool
    ) -> None:
        """Keep one validated example (``domain`` is filled in by :meth:`finish`)."""
        self.rows.append(
            {
                "id": qid,
                "title": title,
                "context": context,
                "question": question,
                "answers": {"text": [t for t, _ in answers], "answer_start": [s for _, s in answers]},
                "is_impossible": impossible,
            }
        )
        self.report.n_answers += len(answers)
        self.report.n_impossible += int(impossible)

    def finish(self, domain: str) -> tuple[Dataset, LoadReport]:
        """Build the dataset, complete the report and log it in one line."""
        if not self.rows:
            raise self.error("file", "contains no questions")
        report = self.report
        report.domain = domain
        report.n_examples = len(self.rows)
        report.n_contexts = len({row["context"] for row in self.rows})
        dataset = examples_to_dataset({**row, "domain": domain} for row in self.rows)
        repaired = report.n_realigned_far + report.n_answers_dropped
        logger.log(logging.WARNING if repaired else logging.INFO, "%s", report.summary())
        return dataset, report


# ---------------------------------------------------------------------------- SQuAD JSON


def _read_squad(path: Path, domain: str | None) -> tuple[Dataset, LoadReport]:
    """Parse and validate a SQuAD v1.1/v2.0 JSON file."""
    col = _Collector(str(path))
    document = _parse_json_document(path, col)
    if not isinstance(document, dict):
        raise col.error("top level", f'expected a JSON object with a "data" list, got {_json_type(document)}')
    for i, article in enumerate(_list_field(document, "data", col, "top level")):
        _add_squad_article(article, f"data[{i}]", col)
    return col.finish(domain or _stem(path))


def _add_squad_article(article: Any, location: str, col: _Collector) -> None:
    """Add every question of one ``data[i]`` article."""
    article = _object(article, col, location)
    title = _optional_text(article, "title", col, location)
    for j, paragraph in enumerate(_list_field(article, "paragraphs", col, location)):
        p_location = f"{location}.paragraphs[{j}]"
        paragraph = _object(paragraph, col, p_location)
        context = _text_field(paragraph, "context", col, p_location)
        for k, qa in enumerate(_list_field(paragraph, "qas", col, p_location)):
            _add_squad_question(qa, title, context, f"{p_location}.qas[{k}]", col)


def _add_squad_question(qa: Any, title: str, context: str, location: str, col: _Collector) -> None:
    """Validate one SQuAD question and its ``answers`` list of ``{text, answer_start}``."""
    qa = _object(qa, col, location)
    qid = col.claim_id(qa.get("id"), location, "id")
    where = _where(location, qid)
    question = _text_field(qa, "question", col, where)
    impossible = _flag(qa, "is_impossible", col, where)
    answers: list[_Answer] = []
    if not impossible:
        for n, answer in enumerate(_list_field(qa, "answers", col, where)):
            a_where = f"{where}.answers[{n}]"
            answer = _object(answer, col, a_where)
            text = _text_field(answer, "text", col, a_where)
            answers.append(_place_answer(context, text, answer.get("answer_start"), col, a_where))
    _require_answers(answers, impossible, col, where)
    col.add(qid, title, context, question, answers, impossible)


# ---------------------------------------------------------------------------- MRQA jsonl


def _read_mrqa(path: Path, domain: str | None) -> tuple[Dataset, LoadReport]:
    """Parse and validate an MRQA 2019 jsonl(.gz) file, with or without its header line."""
    col = _Collector(str(path))
    header_domain = ""
    first = True
    for line_no, record in _jsonl_records(path, col):
        if first and isinstance(record, dict) and "header" in record:
            header_domain = _header_domain(record["header"], col, f"line {line_no}")
        else:
            _add_mrqa_context(record, f"line {line_no}", col)
        first = False
    return col.finish(domain or header_domain or _stem(path))


def _header_domain(header: Any, col: _Collector, location: str) -> str:
    """The ``dataset`` field of an MRQA header line ("" when absent)."""
    header = _object(header, col, location)
    return _optional_text(header, "dataset", col, location)


def _add_mrqa_context(record: Any, location: str, col: _Collector) -> None:
    """Add every question of one MRQA line (one context)."""
    record = _object(record, col, location)
    context = _text_field(record, "context", col, location)
    title = _optional_text(record, "title", col, location)
    for k, qa in enumerate(_list_field(record, "qas", col, location)):
        _add_mrqa_question(qa, title, context, f"{location}, qas[{k}]", col)


def _add_mrqa_question(qa: Any, title: str, context: str, location: str, col: _Collector) -> None:
    """Validate one MRQA question; answers come from ``detected_answers`` or plain ``answers``."""
    qa = _object(qa, col, location)
    key = "qid" if "qid" in qa else "id"
    qid = col.claim_id(qa.get(key), location, "qid")
    where = _where(location, qid)
    question = _text_field(qa, "question", col, where)
    impossible = _flag(qa, "is_impossible", col, where)
    answers: list[_Answer] = []
    if not impossible and "detected_answers" in qa:
        answers = _detected_answers(qa, context, col, where)
    elif not impossible:
        answers = _located_answers(qa, context, col, where)
    _require_answers(answers, impossible, col, where)
    col.add(qid, title, context, question, answers, impossible)


def _detected_answers(qa: Mapping[str, Any], context: str, col: _Collector, where: str) -> list[_Answer]:
    """One answer per char span of every ``detected_answers`` entry, its text taken from the context."""
    answers = []
    for n, detected in enumerate(_list_field(qa, "detected_answers", col, where)):
        d_where = f"{where}.detected_answers[{n}]"
        detected = _object(detected, col, d_where)
        spans = _list_field(detected, "char_spans", col, d_where)
        if not spans:
            raise col.error(d_where, '"char_spans" is empty')
        for span in spans:
            start, end = _char_span(span, context, col, d_where)
            text = context[start : end + 1]
            if not text.strip():
                raise col.error(d_where, f"char span [{start}, {end}] covers only whitespace")
            if detected.get("text", text) != text:
                col.report.n_span_text_differs += 1
            answers.append(_strip_answer(text, start, col))
    return answers


def _char_span(span: Any, context: str, col: _Collector, where: str) -> tuple[int, int]:
    """Validate one inclusive ``[start, end]`` char span against the context."""
    if not (isinstance(span, list) and len(span) == 2 and all(_is_int(x) for x in span)):
        raise col.error(where, f"char span must be [start, end] integers, got {_shown(json.dumps(span))}")
    start, end = span
    if not 0 <= start <= end < len(context):
        raise col.error(where, f"char span [{start}, {end}] is outside the context (length {len(context)})")
    return start, end


def _located_answers(qa: Mapping[str, Any], context: str, col: _Collector, where: str) -> list[_Answer]:
    """Plain MRQA ``answers`` strings placed at their first occurrence; absent ones are dropped."""
    answers = []
    for n, text in enumerate(_list_field(qa, "answers", col, where)):
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
    col = _Collector(name)
    missing = {"id", "context", "question", "answers"} - set(raw.column_names)
    if missing:
        raise col.error("columns", f"not a SQuAD-style dataset, missing columns {sorted(missing)}")
    for n, row in enumerate(raw):
        _add_hf_row(row, f"row {n}", col)
    return col.finish(domain or name.rstrip("/").rsplit("/", 1)[-1])


def _add_hf_row(row: Mapping[str, Any], location: str, col: _Collector) -> None:
    """Validate one hub row; empty answer lists mark unanswerable (SQuAD v2.0) questions."""
    qid = col.claim_id(row.get("id"), location, "id")
    where = _where(location, qid)
    context = _text_field(row, "context", col, where)
    question = _text_field(row, "question", col, where)
    title = _optional_text(row, "title", col, where)
    spans = _object(row.get("answers"), col, f"{where}.answers")
    texts, starts = spans.get("text") or [], spans.get("answer_start") or []
    if len(texts) != len(starts):
        raise col.error(f"{where}.answers", f"{len(texts)} texts but {len(starts)} answer_start values")
    answers = []
    for n, (text, start) in enumerate(zip(texts, starts)):
        a_where = f"{where}.answers[{n}]"
        if not isinstance(text, str) or not text.strip():
            raise col.error(a_where, "answer text must be a non-empty string")
        answers.append(_place_answer(context, text, start, col, a_where))
    col.add(qid, title, context, question, answers, not answers)


# ---------------------------------------------------------------------------- answers


def _place_answer(context: str, text: str, start: Any, col: _Collector, where: str) -> _Answer:
    """Check ``answer_start``, re-align it to the text when needed, then strip the text."""
    if not _is_int(start):
        raise col.error(where, f'"answer_start" must be an integer, got {_json_type(start)}')
    if not 0 <= start < len(context):
        raise col.error(where, f"answer_start {start} is outside the context (length {len(context)})")
    if not context.startswith(text, start):
        moved = _nearest_occurrence(context, text, start)
        if moved is None:
            raise col.error(where, f"answer text {_shown(text)} does not occur in the context")
        if abs(moved - start) <= REALIGN_WINDOW:
            col.report.n_realigned_near += 1
        else:
            col.report.n_realigned_far += 1
        start = moved
    return _strip_answer(text, start, col)


def _nearest_occurrence(context: str, text: str, target: int) -> int | None:
    """Start of the occurrence of ``text`` nearest to ``target`` (the earlier one on a tie)."""
    best: int | None = None
    position = context.find(text)
    while position >= 0:
        if best is None or abs(position - target) < abs(best - target):
            best = position
        if position >= target:
            break
        position = context.find(text, position + 1)
    return best


def _strip_answer(text: str, start: int, col: _Collector) -> _Answer:
    """Remove surrounding whitespace from an answer, shifting its start; counts the change."""
    stripped = text.strip()
    if stripped == text:
        return text, start
    col.report.n_stripped += 1
    return stripped, start + len(text) - len(text.lstrip())


def _require_answers(answers: list[_Answer], impossible: bool, col: _Collector, where: str) -> None:
    """An answerable question needs at least one answer."""
    if not impossible and not answers:
        raise col.error(where, "no answer found in the context, and the question is not marked is_impossible")


# ---------------------------------------------------------------------------- bytes and JSON


def _parse_json_document(path: Path, col: _Collector) -> Any:
    """Read a whole JSON file as strict UTF-8 and parse it."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise col.error("file", _os_reason(err)) from None
    text = _decode(raw, col, 0, 1)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise col.error(f"line {err.lineno}, column {err.colno}", f"malformed JSON: {err.msg}") from None


def _jsonl_records(path: Path, col: _Collector) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, parsed JSON)`` for each non-blank line, streaming (gzip if ``.gz``)."""
    line_no, offset = 0, 0
    try:
        with _open_binary(path) as handle:
            for line_no, raw in enumerate(handle, start=1):
                text = _decode(raw, col, offset, line_no)
                offset += len(raw)
                if text.strip():
                    yield line_no, _parse_json_line(text, col, line_no)
    except (OSError, EOFError, zlib.error) as err:
        where = "file" if line_no == 0 else f"line {line_no + 1}"
        raise col.error(where, _os_reason(err)) from None


def _open_binary(path: Path) -> IO[bytes]:
    """Open a file for binary reading, decompressing ``.gz`` files."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def _parse_json_line(text: str, col: _Collector, line_no: int) -> Any:
    """Parse one jsonl line, reporting the line and column of malformed JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise col.error(f"line {line_no}, column {err.colno}", f"malformed JSON: {err.msg}") from None


def _decode(raw: bytes, col: _Collector, offset: int, first_line: int) -> str:
    """Strict UTF-8 decoding (a leading BOM is dropped); ``offset`` is ``raw``'s byte offset in the file."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + raw.count(b"\n", 0, err.start)
        byte = raw[err.start]
        what = f"invalid UTF-8 byte 0x{byte:02x} at byte offset {offset + err.start}"
        raise col.error(f"line {line}", what) from None
    return text.removeprefix("\ufeff") if offset == 0 else text


def _os_reason(err: BaseException) -> str:
    """A short reason for an error raised while opening or reading a file."""
    if isinstance(err, FileNotFoundError):
        return "no such file"
    if isinstance(err, IsADirectoryError):
        return "is a directory"
    if isinstance(err, (gzip.BadGzipFile, EOFError, zlib.error)):
        return f"corrupt gzip data ({err})"
    return f"cannot read ({getattr(err, 'strerror', None) or err})"


# ---------------------------------------------------------------------------- fields


def _object(value: Any, col: _Collector, where: str) -> Mapping[str, Any]:
    """``value`` as a JSON object, or a DataError."""
    if not isinstance(value, Mapping):
        raise col.error(where, f"expected a JSON object, got {_json_type(value)}")
    return value


def _list_field(obj: Mapping[str, Any], key: str, col: _Collector, where: str) -> list[Any]:
    """A required list field."""
    if key not in obj:
        raise col.error(where, f'missing field "{key}"')
    value = obj[key]
    if not isinstance(value, list):
        raise col.error(where, f'field "{key}" must be a list, got {_json_type(value)}')
    return value


def _text_field(obj: Mapping[str, Any], key: str, col: _Collector, where: str) -> str:
    """A required string field that is not empty or whitespace only."""
    if key not in obj or obj[key] is None:
        raise col.error(where, f'missing field "{key}"')
    value = obj[key]
    if not isinstance(value, str):
        raise col.error(where, f'field "{key}" must be a string, got {_json_type(value)}')
    if not value.strip():
        raise col.error(where, f'field "{key}" is empty')
    return value


def _optional_text(obj: Mapping[str, Any], key: str, col: _Collector, where: str) -> str:
    """An optional string field ("" when absent or null)."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise col.error(where, f'field "{key}" must be a string, got {_json_type(value)}')
    return value


def _flag(obj: Mapping[str, Any], key: str, col: _Collector, where: str) -> bool:
    """An optional boolean field (false when absent)."""
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise col.error(where, f'field "{key}" must be true or false, got {_json_type(value)}')
    return value


# ---------------------------------------------------------------------------- small helpers


def _where(location: str, qid: str) -> str:
    """The ``where`` of a question whose id is known."""
    return f'question id "{qid}" at {location}'


def _stem(path: Path) -> str:
    """File name without its data suffix (``SQuAD.jsonl.gz`` -> ``SQuAD``)."""
    name = path.name
    for suffix in (".jsonl.gz", ".jsonl", ".json"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_int(value: Any) -> bool:
    """True for JSON integers (booleans excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _shown(text: str) -> str:
    """``text`` quoted and cut to a readable length for an error message."""
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")
