"""Tests of kd_core.data.loaders: SQuAD/MRQA/HF loading, validation errors and answer re-alignment."""

from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset

from kd_core.data import loaders
from kd_core.data.loaders import (
    REALIGN_WINDOW,
    LoadReport,
    load_examples,
    load_examples_with_report,
    load_hf,
    load_mrqa,
    load_squad,
)
from kd_core.data.schema import EXAMPLE_COLUMNS, EXAMPLE_FEATURES
from kd_core.io.errors import DataError

SHARED = Path("/work/shared/data")
XQUAD = SHARED / "squad11" / "xquad.en.json"
MRQA_SQUAD = SHARED / "mrqa_domains" / "squad_mrqa" / "SQuAD.jsonl.gz"
COVID_QA = SHARED / "mrqa_domains" / "covidqa" / "200423_covidQA.json"

CONTEXT = "The Broncos beat the Panthers 24-10 in Santa Clara. The Panthers had lost before."


# ---------------------------------------------------------------------------- fixtures


def squad_doc(qas: list[dict[str, Any]], context: str = CONTEXT, version: str = "1.1") -> dict[str, Any]:
    """A one-article, one-paragraph SQuAD document."""
    return {"version": version, "data": [{"title": "Super_Bowl", "paragraphs": [{"context": context, "qas": qas}]}]}


def question(qid: str, text: str, start: int, q: str = "Who won?") -> dict[str, Any]:
    """A SQuAD question with one answer."""
    return {"id": qid, "question": q, "answers": [{"text": text, "answer_start": start}]}


def write_json(path: Path, doc: Any) -> Path:
    """Write ``doc`` as JSON and return the path."""
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def mrqa_line(qas: list[dict[str, Any]], context: str = CONTEXT) -> dict[str, Any]:
    """One MRQA context line."""
    return {"context": context, "context_tokens": [], "qas": qas}


def mrqa_question(qid: str, start: int, end: int, text: str | None = None) -> dict[str, Any]:
    """An MRQA question with one detected answer (inclusive char span)."""
    span_text = CONTEXT[start : end + 1] if text is None else text
    return {
        "qid": qid,
        "question": "Who won?",
        "answers": [span_text],
        "detected_answers": [{"text": span_text, "char_spans": [[start, end]], "token_spans": [[1, 1]]}],
    }


def write_jsonl(path: Path, lines: list[Any], header: dict[str, Any] | None = None) -> Path:
    """Write MRQA lines (optionally after a header line), gzipped when the name ends in .gz."""
    records = ([{"header": header}] if header else []) + lines
    data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def broncos() -> dict[str, Any]:
    """A well-formed question whose answer is "Broncos" at offset 4."""
    return question("q1", "Broncos", 4)


# ---------------------------------------------------------------------------- SQuAD


def test_squad_v11_loads_into_the_schema(tmp_path: Path) -> None:
    path = write_json(tmp_path / "sb.json", squad_doc([broncos(), question("q2", "Santa Clara", 39, "Where?")]))
    ds = load_squad(path)
    assert ds.features == EXAMPLE_FEATURES
    assert tuple(ds.column_names) == EXAMPLE_COLUMNS
    assert ds["id"] == ["q1", "q2"]
    assert ds["domain"] == ["sb", "sb"]
    assert ds["title"] == ["Super_Bowl", "Super_Bowl"]
    assert ds[1]["answers"] == {"text": ["Santa Clara"], "answer_start": [39]}
    assert ds["is_impossible"] == [False, False]


def test_squad_v20_keeps_impossible_questions_with_the_same_features(tmp_path: Path) -> None:
    impossible = {"id": "q2", "question": "Who lost in 2020?", "answers": [], "is_impossible": True,
                  "plausible_answers": [{"text": "Panthers", "answer_start": 21}]}
    answerable = dict(broncos(), is_impossible=False)
    v2 = load_squad(write_json(tmp_path / "v2.json", squad_doc([answerable, impossible], version="v2.0")))
    v1 = load_squad(write_json(tmp_path / "v1.json", squad_doc([broncos()])))
    assert v2.features == v1.features == EXAMPLE_FEATURES
    assert v2["is_impossible"] == [False, True]
    assert v2[1]["answers"] == {"text": [], "answer_start": []}


def test_squad_domain_override_and_missing_title(tmp_path: Path) -> None:
    doc = {"data": [{"paragraphs": [{"context": CONTEXT, "qas": [dict(broncos(), id=17)]}]}]}
    ds = load_squad(write_json(tmp_path / "covid.json", doc), domain="bio")
    assert ds["domain"] == ["bio"] and ds["title"] == [""] and ds["id"] == ["17"]


def test_loading_is_deterministic(tmp_path: Path) -> None:
    path = write_json(tmp_path / "sb.json", squad_doc([broncos(), question("q2", "Panthers", 21)]))
    assert load_squad(path).to_dict() == load_squad(path).to_dict()


# ---------------------------------------------------------------------------- MRQA


@pytest.mark.parametrize("name", ["news.jsonl", "news.jsonl.gz"])
def test_mrqa_with_header_takes_its_domain(tmp_path: Path, name: str) -> None:
    lines = [mrqa_line([mrqa_question("a1", 4, 10), mrqa_question("a2", 39, 49)])]
    ds = load_mrqa(write_jsonl(tmp_path / name, lines, header={"dataset": "NewsQA", "split": "dev"}))
    assert ds.features == EXAMPLE_FEATURES
    assert ds["domain"] == ["NewsQA", "NewsQA"]
    assert ds["title"] == ["", ""]
    assert ds["answers"] == [{"text": ["Broncos"], "answer_start": [4]},
                             {"text": ["Santa Clara"], "answer_start": [39]}]


@pytest.mark.parametrize("name", ["news.jsonl", "news.jsonl.gz"])
def test_mrqa_without_header_uses_the_file_stem(tmp_path: Path, name: str) -> None:
    ds = load_mrqa(write_jsonl(tmp_path / name, [mrqa_line([mrqa_question("a1", 4, 10)])]))
    assert ds["domain"] == ["news"] and ds["id"] == ["a1"]


def test_mrqa_span_text_comes_from_the_context(tmp_path: Path) -> None:
    lines = [mrqa_line([mrqa_question("a1", 4, 10, text="broncos")])]
    ds, report = load_examples_with_report(str(write_jsonl(tmp_path / "m.jsonl", lines)))
    assert ds[0]["answers"] == {"text": ["Broncos"], "answer_start": [4]}
    assert report.n_span_text_differs == 1


def test_mrqa_plain_answers_are_located_and_missing_ones_dropped(tmp_path: Path) -> None:
    qa = {"id": "a1", "question": "Who played?", "answers": ["Panthers", "Seahawks"]}
    ds, report = load_examples_with_report(str(write_jsonl(tmp_path / "m.jsonl", [mrqa_line([qa])])))
    assert ds[0]["answers"] == {"text": ["Panthers"], "answer_start": [21]}
    assert report.n_answers_dropped == 1


# ---------------------------------------------------------------------------- re-alignment


def test_realignment_is_counted_and_fixes_offsets(tmp_path: Path) -> None:
    padded = CONTEXT + " " * (REALIGN_WINDOW + 5) + "Final words here."
    qas = [
        question("near", "Panthers", 21 + 3),  # nearest occurrence is 3 characters back
        question("far", "Final words", 2),  # only occurrence is far away
        question("space", " Santa Clara", 40),  # leading space, off by one
        question("exact", "Broncos", 4),
    ]
    ds, report = load_examples_with_report(str(write_json(tmp_path / "r.json", squad_doc(qas, context=padded))))
    starts = {qid: a["answer_start"][0] for qid, a in zip(ds["id"], ds["answers"])}
    texts = {qid: a["text"][0] for qid, a in zip(ds["id"], ds["answers"])}
    assert starts == {"near": 21, "far": padded.index("Final words"), "space": 39, "exact": 4}
    assert texts["space"] == "Santa Clara"
    assert (report.n_realigned_near, report.n_realigned_far, report.n_stripped) == (2, 1, 1)
    for context, answers in zip(ds["context"], ds["answers"]):
        for text, start in zip(answers["text"], answers["answer_start"]):
            assert context[start : start + len(text)] == text


def test_realignment_prefers_the_occurrence_nearest_the_offset(tmp_path: Path) -> None:
    # "Panthers" occurs at 21 and 56; offset 50 is nearer to the second one.
    ds = load_squad(write_json(tmp_path / "r.json", squad_doc([question("q", "Panthers", 50)])))
    assert ds[0]["answers"]["answer_start"] == [CONTEXT.rindex("Panthers")]


def test_report_is_returned_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_json(tmp_path / "sb.json", squad_doc([broncos(), question("q2", "Panthers", 22)]))
    with caplog.at_level(logging.INFO, logger="kd_core.data"):
        _, report = load_examples_with_report(str(path))
    assert isinstance(report, LoadReport)
    assert (report.n_examples, report.n_contexts, report.n_answers, report.n_realigned_near) == (2, 1, 2, 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "kd_core.data"]
    assert len(lines) == 1 and str(path) in lines[0] and "n_realigned_near=1" in lines[0]


# ---------------------------------------------------------------------------- bad input


def bad_squad_cases() -> list[tuple[str, Any, str, str]]:
    """(case, document or raw bytes, expected where, expected what) for SQuAD JSON."""
    ok = broncos()
    return [
        ("malformed", b'{"data": [\n  {"title": }\n]}', "line 2, column 13", "malformed JSON"),
        ("not-object", [1, 2], "top level", "expected a JSON object"),
        ("data-not-list", {"data": {"title": "x"}}, "top level", 'field "data" must be a list'),
        ("qas-not-list", {"data": [{"paragraphs": [{"context": CONTEXT, "qas": {}}]}]},
         "data[0].paragraphs[0]", 'field "qas" must be a list'),
        ("no-question", squad_doc([{"id": "q9", "answers": []}]),
         'question id "q9" at data[0].paragraphs[0].qas[0]', 'missing field "question"'),
        ("no-id", squad_doc([{"question": "Who?", "answers": []}]),
         "data[0].paragraphs[0].qas[0]", 'missing field "id"'),
        ("empty-context", squad_doc([ok], context=" \n\t"), "data[0].paragraphs[0]", 'field "context" is empty'),
        ("empty-question", squad_doc([dict(ok, question="   ")]), 'question id "q1"', 'field "question" is empty'),
        ("offset-outside", squad_doc([question("q1", "Broncos", 500)]),
         'question id "q1" at data[0].paragraphs[0].qas[0].answers[0]', "answer_start 500 is outside the context"),
        ("negative-offset", squad_doc([question("q1", "Broncos", -1)]), 'question id "q1"', "outside the context"),
        ("offset-not-int", squad_doc([question("q1", "Broncos", "4")]), 'question id "q1"', "must be an integer"),
        ("absent-text", squad_doc([question("q1", "Seahawks", 4)]),
         'question id "q1" at data[0].paragraphs[0].qas[0].answers[0]', "does not occur in the context"),
        ("duplicate-id", squad_doc([ok, dict(ok, question="Again?")]),
         'question id "q1" at data[0].paragraphs[0].qas[1]',
         "duplicate id (first used at data[0].paragraphs[0].qas[0])"),
        ("no-answers", squad_doc([dict(ok, answers=[])]), 'question id "q1"', "not marked is_impossible"),
        ("empty-file", {"data": []}, "file", "contains no questions"),
    ]


@pytest.mark.parametrize(("case", "doc", "where", "what"), bad_squad_cases(), ids=[c[0] for c in bad_squad_cases()])
def test_bad_squad_input_names_file_and_example(
    tmp_path: Path, case: str, doc: Any, where: str, what: str
) -> None:
    path = tmp_path / f"{case}.json"
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    else:
        write_json(path, doc)
    with pytest.raises(DataError) as info:
        load_squad(path)
    assert info.value.source == str(path)
    assert where in info.value.where
    assert what in info.value.what
    assert str(info.value).startswith(f"{path}: ")


def test_non_utf8_bytes_report_the_byte_offset(tmp_path: Path) -> None:
    raw = json.dumps(squad_doc([broncos()]), indent=1).encode("utf-8")
    offset = raw.index(b"Broncos beat")
    path = tmp_path / "latin.json"
    path.write_bytes(raw[:offset] + b"\xe9" + raw[offset + 1 :])
    line = raw[:offset].count(b"\n") + 1
    with pytest.raises(DataError, match=rf"invalid UTF-8 byte 0xe9 at byte offset {offset}") as info:
        load_squad(path)
    assert info.value.where == f"line {line}"


def bad_mrqa_cases() -> list[tuple[str, list[bytes], str, str]]:
    """(case, raw lines, expected where, expected what) for MRQA jsonl."""
    header = json.dumps({"header": {"dataset": "X"}}).encode()
    good = json.dumps(mrqa_line([mrqa_question("a1", 4, 10)])).encode()

    def line(*qas: dict[str, Any], context: str = CONTEXT) -> bytes:
        return json.dumps(mrqa_line(list(qas), context=context)).encode()

    return [
        ("malformed", [header, good, b'{"context": "x", "qas": [}'], "line 3, column 26", "malformed JSON"),
        ("non-utf8", [header, b'{"context": "caf\xe9"}'], "line 2", f"0xe9 at byte offset {len(header) + 1 + 16}"),
        ("span-outside", [line(mrqa_question("a1", 4, 500))],
         'question id "a1" at line 1, qas[0].detected_answers[0]', "char span [4, 500] is outside the context"),
        ("duplicate-qid", [good, line(mrqa_question("a1", 21, 28))],
         'question id "a1" at line 2, qas[0]', "duplicate id (first used at line 1, qas[0])"),
        ("empty-context", [line(mrqa_question("a1", 0, 0), context="  ")], "line 1", 'field "context" is empty'),
        ("qas-not-list", [b'{"context": "abc", "qas": "none"}'], "line 1", 'field "qas" must be a list'),
        ("no-question", [json.dumps(mrqa_line([{"qid": "a7", "answers": ["x"]}])).encode()],
         'question id "a7" at line 1, qas[0]', 'missing field "question"'),
        ("answer-absent", [json.dumps(mrqa_line([{"qid": "a8", "question": "Q?", "answers": ["Jets"]}])).encode()],
         'question id "a8" at line 1, qas[0]', "no answer found in the context"),
    ]


@pytest.mark.parametrize(("case", "lines", "where", "what"), bad_mrqa_cases(), ids=[c[0] for c in bad_mrqa_cases()])
def test_bad_mrqa_input_names_file_and_example(
    tmp_path: Path, case: str, lines: list[bytes], where: str, what: str
) -> None:
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError) as info:
        load_mrqa(path)
    assert info.value.source == str(path)
    assert where in info.value.where
    assert what in info.value.what


def test_corrupt_gzip_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match="corrupt gzip data") as info:
        load_examples(str(path))
    assert info.value.source == str(path)


# ---------------------------------------------------------------------------- dispatch and hub


def test_load_examples_dispatches_on_suffix(tmp_path: Path) -> None:
    squad = write_json(tmp_path / "a.json", squad_doc([broncos()]))
    mrqa = write_jsonl(tmp_path / "b.jsonl.gz", [mrqa_line([mrqa_question("a1", 4, 10)])])
    assert load_examples(str(squad))["domain"] == ["a"]
    assert load_examples(str(mrqa), domain="news")["domain"] == ["news"]


def test_load_examples_refuses_directories_and_other_files(tmp_path: Path) -> None:
    other = tmp_path / "data.csv"
    other.write_text("id,context\n", encoding="utf-8")
    with pytest.raises(DataError, match="is a directory"):
        load_examples(str(tmp_path))
    with pytest.raises(DataError, match="unsupported file type"):
        load_examples(str(other))
    with pytest.raises(DataError, match="no such file"):
        load_examples(str(tmp_path / "missing.json"))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the Hugging Face libraries offline (they read the variables at import time)."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.usefixtures("offline")
def test_hf_offline_is_a_clear_data_error() -> None:
    name = "kd-core-tests/no-such-dataset"
    with pytest.raises(DataError) as info:
        load_hf(name, "train")
    assert (info.value.source, info.value.where) == (name, "load_dataset")
    assert "cannot load split 'train'" in info.value.what and "\n" not in str(info.value)
    with pytest.raises(DataError, match="load_dataset"):
        load_examples(f"hf:{name}", split="validation")
    with pytest.raises(DataError, match="load_dataset"):
        load_examples(name)


def test_hf_rows_map_to_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = {
        "id": ["h1", "h2"], "title": ["T", "T"], "context": [CONTEXT, CONTEXT],
        "question": ["Who won?", "Who lost in 2020?"],
        "answers": [{"text": ["Broncos"], "answer_start": [5]}, {"text": [], "answer_start": []}],
    }
    monkeypatch.setattr(loaders, "load_dataset", lambda name, config, split: Dataset.from_dict(rows))
    ds, report = load_examples_with_report("hf:org/squad_like", split="validation")
    assert ds.features == EXAMPLE_FEATURES
    assert ds["domain"] == ["squad_like", "squad_like"]
    assert ds["answers"][0] == {"text": ["Broncos"], "answer_start": [4]}
    assert ds["is_impossible"] == [False, True]
    assert (report.n_realigned_near, report.n_impossible) == (1, 1)


def test_hf_rows_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {"text": ["Broncos"], "answer_start": [4]}
    rows = {"id": ["h1", "h1"], "context": [CONTEXT] * 2, "question": ["Q?"] * 2, "answers": [answer] * 2}
    monkeypatch.setattr(loaders, "load_dataset", lambda name, config, split: Dataset.from_dict(rows))
    with pytest.raises(DataError, match=r'^org/dup: question id "h1" at row 1: duplicate id'):
        load_hf("org/dup", "train")
    monkeypatch.setattr(loaders, "load_dataset", lambda name, config, split: Dataset.from_dict({"id": ["x"]}))
    with pytest.raises(DataError, match=r"^org/bad: columns: not a SQuAD-style dataset"):
        load_hf("org/bad", "train")


# ---------------------------------------------------------------------------- real data (optional)


@pytest.mark.skipif(not XQUAD.exists(), reason="shared XQuAD file not present")
def test_real_xquad_loads_fast() -> None:
    start = time.perf_counter()
    ds, report = load_examples_with_report(str(XQUAD))
    assert time.perf_counter() - start < 1.0
    assert (len(ds), report.n_contexts, report.n_realigned_near + report.n_realigned_far) == (1190, 240, 0)


@pytest.mark.skipif(not MRQA_SQUAD.exists(), reason="shared MRQA SQuAD file not present")
def test_real_mrqa_squad_loads() -> None:
    ds, report = load_examples_with_report(str(MRQA_SQUAD))
    assert (len(ds), report.n_contexts, report.domain) == (10507, 2067, "SQuAD")
    assert report.n_span_text_differs == 384


@pytest.mark.skipif(not COVID_QA.exists(), reason="shared COVID-QA file not present")
def test_real_covid_qa_offsets_are_repaired() -> None:
    ds, report = load_examples_with_report(str(COVID_QA))
    assert (len(ds), report.n_realigned_near, report.n_realigned_far) == (1380, 234, 0)
    for context, answers in zip(ds["context"], ds["answers"]):
        (text,), (start,) = answers["text"], answers["answer_start"]
        assert context[start : start + len(text)] == text == text.strip()
