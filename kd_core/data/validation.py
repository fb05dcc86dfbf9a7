"""Validated reading of example files: the collector of examples and counts, answers, fields, bytes.

Shared by every reader in :mod:`kd_core.data.loaders`, and raising :class:`DataError` s whose
message reads ``<source>: <where>: <what>`` (the module doc of :mod:`kd_core.data.loaders` gives
the location scheme and the answer policy these functions implement).
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

from datasets import Dataset

from kd_core.data.schema import examples_to_dataset
from kd_core.io.errors import DataError

logger = logging.getLogger("kd_core.data")

REALIGN_WINDOW = 20

Answer = tuple[str, int]  # (text, answer_start)
SHOWN_CHARS = 60



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


# ---------------------------------------------------------------------------- collecting


class Collector:
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
            raise self.error(location, f'field "{key}" must be a string or an integer, got {json_type(raw)}')
        qid = str(raw)
        if not qid.strip():
            raise self.error(location, f'field "{key}" is empty')
        if qid in self._first_seen:
            raise self.error(question_where(location, qid), f"duplicate id (first used at {self._first_seen[qid]})")
        self._first_seen[qid] = location
        return qid

    def add(
        self, qid: str, title: str, context: str, question: str, answers: list[Answer], impossible: bool
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


# ---------------------------------------------------------------------------- answers


def place_answer(context: str, text: str, start: Any, col: Collector, where: str) -> Answer:
    """Check ``answer_start``, re-align it to the text when needed, then strip the text."""
    if not is_int(start):
        raise col.error(where, f'"answer_start" must be an integer, got {json_type(start)}')
    if not 0 <= start < len(context):
        raise col.error(where, f"answer_start {start} is outside the context (length {len(context)})")
    if not context.startswith(text, start):
        moved = nearest_occurrence(context, text, start)
        if moved is None:
            raise col.error(where, f"answer text {shown(text)} does not occur in the context")
        if abs(moved - start) <= REALIGN_WINDOW:
            col.report.n_realigned_near += 1
        else:
            col.report.n_realigned_far += 1
        start = moved
    return strip_answer(text, start, col)


def nearest_occurrence(context: str, text: str, target: int) -> int | None:
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


def strip_answer(text: str, start: int, col: Collector) -> Answer:
    """Remove surrounding whitespace from an answer, shifting its start; counts the change."""
    stripped = text.strip()
    if stripped == text:
        return text, start
    col.report.n_stripped += 1
    return stripped, start + len(text) - len(text.lstrip())


def require_answers(answers: list[Answer], impossible: bool, col: Collector, where: str) -> None:
    """An answerable question needs at least one answer."""
    if not impossible and not answers:
        raise col.error(where, "no answer found in the context, and the question is not marked is_impossible")


def refuse_impossible_answers(qa: Mapping[str, Any], impossible: bool, col: Collector, where: str) -> None:
    """A question marked ``is_impossible: true`` has no answer (SQuAD v2.0 keeps its guesses in
    ``plausible_answers``): one with ``answers`` or ``detected_answers`` is contradictory, and would be trained
    as unanswerable while its answer was dropped, so it is refused."""
    if not impossible:
        return
    for key in ("answers", "detected_answers"):
        given = qa.get(key)
        if isinstance(given, list) and given:
            raise col.error(where, f"is_impossible is true but it has {len(given)} {key} (an unanswerable "
                            f"question keeps them in plausible_answers, or set is_impossible false)")


# ---------------------------------------------------------------------------- bytes and JSON


def parse_json_document(path: Path, col: Collector) -> Any:
    """Read a whole JSON file as strict UTF-8 and parse it."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise col.error("file", os_reason(err)) from None
    text = decode(raw, col, 0, 1)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise col.error(f"line {err.lineno}, column {err.colno}", f"malformed JSON: {err.msg}") from None


def jsonl_records(path: Path, col: Collector) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, parsed JSON)`` for each non-blank line, streaming (gzip if ``.gz``)."""
    line_no, offset = 0, 0
    try:
        with open_binary(path) as handle:
            for line_no, raw in enumerate(handle, start=1):
                text = decode(raw, col, offset, line_no)
                offset += len(raw)
                if text.strip():
                    yield line_no, parse_json_line(text, col, line_no)
    except (OSError, EOFError, zlib.error) as err:
        where = "file" if line_no == 0 else f"line {line_no + 1}"
        raise col.error(where, os_reason(err)) from None


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for binary reading, decompressing ``.gz`` files."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def parse_json_line(text: str, col: Collector, line_no: int) -> Any:
    """Parse one jsonl line, reporting the line and column of malformed JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise col.error(f"line {line_no}, column {err.colno}", f"malformed JSON: {err.msg}") from None


def decode(raw: bytes, col: Collector, offset: int, first_line: int) -> str:
    """Strict UTF-8 decoding (a leading BOM is dropped); ``offset`` is ``raw``'s byte offset in the file."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + raw.count(b"\n", 0, err.start)
        byte = raw[err.start]
        what = f"invalid UTF-8 byte 0x{byte:02x} at byte offset {offset + err.start}"
        raise col.error(f"line {line}", what) from None
    return text.removeprefix("\ufeff") if offset == 0 else text


def os_reason(err: BaseException) -> str:
    """A short reason for an error raised while opening or reading a file."""
    if isinstance(err, FileNotFoundError):
        return "no such file"
    if isinstance(err, IsADirectoryError):
        return "is a directory"
    if isinstance(err, (gzip.BadGzipFile, EOFError, zlib.error)):
        return f"corrupt gzip data ({err})"
    return f"cannot read ({getattr(err, 'strerror', None) or err})"


# ---------------------------------------------------------------------------- fields


def json_object(value: Any, col: Collector, where: str) -> Mapping[str, Any]:
    """``value`` as a JSON object, or a DataError."""
    if not isinstance(value, Mapping):
        raise col.error(where, f"expected a JSON object, got {json_type(value)}")
    return value


def list_field(obj: Mapping[str, Any], key: str, col: Collector, where: str) -> list[Any]:
    """A required list field."""
    if key not in obj:
        raise col.error(where, f'missing field "{key}"')
    value = obj[key]
    if not isinstance(value, list):
        raise col.error(where, f'field "{key}" must be a list, got {json_type(value)}')
    return value


def text_field(obj: Mapping[str, Any], key: str, col: Collector, where: str) -> str:
    """A required string field that is not empty or whitespace only."""
    if key not in obj or obj[key] is None:
        raise col.error(where, f'missing field "{key}"')
    value = obj[key]
    if not isinstance(value, str):
        raise col.error(where, f'field "{key}" must be a string, got {json_type(value)}')
    if not value.strip():
        raise col.error(where, f'field "{key}" is empty')
    return value


def optional_text(obj: Mapping[str, Any], key: str, col: Collector, where: str) -> str:
    """An optional string field ("" when absent or null)."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise col.error(where, f'field "{key}" must be a string, got {json_type(value)}')
    return value


def flag_field(obj: Mapping[str, Any], key: str, col: Collector, where: str) -> bool:
    """An optional boolean field (false when absent)."""
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise col.error(where, f'field "{key}" must be true or false, got {json_type(value)}')
    return value


# ---------------------------------------------------------------------------- small helpers


def question_where(location: str, qid: str) -> str:
    """The ``where`` of a question whose id is known."""
    return f'question id "{qid}" at {location}'


def is_int(value: Any) -> bool:
    """True for JSON integers (booleans excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def json_type(value: Any) -> str:
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


def shown(text: str) -> str:
    """``text`` quoted and cut to a readable length for an error message."""
    return repr(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "...")
