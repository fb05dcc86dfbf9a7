"""Tests of the embedded synthetic multi-domain QA generator."""

from __future__ import annotations

import itertools
import re
from collections import Counter

import pytest

from kd_core.data.synthetic import DOMAINS, generate, generate_examples
from kd_core.io.errors import ConfigError


@pytest.fixture(scope="module")
def examples():
    return generate_examples(n_per_domain=120, seed=3)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _question_vocab(examples, domain: str, parity: int | None = None) -> set[str]:
    """Word set of a domain's questions; ``parity`` keeps only even (0) or odd (1) contexts."""
    vocab: set[str] = set()
    for ex in examples:
        context_index = int(ex.id.split("-")[1])
        if ex.domain == domain and (parity is None or context_index % 2 == parity):
            vocab |= _words(ex.question)
    return vocab


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


def test_at_least_four_domains():
    assert len(DOMAINS) >= 4 and len(set(DOMAINS)) == len(DOMAINS)


def test_same_seed_same_data_other_seed_other_data():
    first = generate(n_per_domain=12, seed=7).to_list()
    assert first == generate(n_per_domain=12, seed=7).to_list()
    assert first != generate(n_per_domain=12, seed=8).to_list()


def test_domain_data_does_not_depend_on_other_domains():
    alone = generate(n_per_domain=10, domains=["finance"], seed=1).to_list()
    together = [r for r in generate(n_per_domain=10, seed=1).to_list() if r["domain"] == "finance"]
    assert alone == together


@pytest.mark.parametrize("n, per_context", [(1, 2), (7, 2), (10, 3), (5, 1)])
def test_counts_per_domain(n, per_context):
    ds = generate(n_per_domain=n, seed=0, questions_per_context=per_context)
    assert Counter(ds["domain"]) == {d: n for d in DOMAINS}
    titles_per_domain = Counter(title.rsplit(" ", 1)[0] for title in set(ds["title"]))
    assert titles_per_domain == {d: -(-n // per_context) for d in DOMAINS}


def test_ids_unique_and_stable_format(examples):
    ids = [ex.id for ex in examples]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(rf"{ex.domain}-\d{{5}}-\d", ex.id) for ex in examples)


def test_schema_rows():
    row = generate(n_per_domain=1, domains=["sports"]).to_list()[0]
    assert set(row) == {"id", "domain", "title", "context", "question", "answers", "is_impossible", "references"}
    assert row["is_impossible"] is False and len(row["answers"]["text"]) == 1 and row["references"] == []


def test_answer_offsets_exact_and_answers_short(examples):
    for ex in examples:
        text, start = ex.answer.text, ex.answer.start
        assert ex.context[start : start + len(text)] == text, ex.id
        assert 1 <= len(text.split()) <= 4, ex.id
        assert ex.context.count(text) == 1, ex.id
        record = ex.to_record()["answers"]
        assert record == {"text": [text], "answer_start": [start]}


def test_passages_have_four_to_eight_sentences(examples):
    for ex in examples:
        ends = len(re.findall(r"\.(?= |$)", ex.context)) - ex.context.count("Dr. ")
        assert 4 <= ends <= 8, ex.id


def _shape(text: str) -> str:
    """Coarse answer type: numeric answers keep their currency sign, names their capital."""
    if re.search(r"\d", text):
        return "money" if text.startswith("$") else "number"
    return "name" if text[:1].isupper() else "other"


def test_every_context_has_same_type_confusing_span(examples):
    for ex in examples:
        assert ex.distractors, ex.id
        for span in ex.distractors:
            assert ex.context[span.start : span.start + len(span.text)] == span.text, ex.id
            assert span.text != ex.answer.text and span.start != ex.answer.start, ex.id
            assert _shape(span.text) == _shape(ex.answer.text), ex.id


def test_every_domain_has_several_answer_types(examples):
    for domain in DOMAINS:
        assert len({ex.answer_type for ex in examples if ex.domain == domain}) >= 3


def test_questions_are_not_copies_of_answer_sentences(examples):
    for ex in examples:
        assert ex.question.rstrip("?") not in ex.context, ex.id


def test_question_vocabularies_separate_domains(examples):
    within = [_jaccard(_question_vocab(examples, d, 0), _question_vocab(examples, d, 1)) for d in DOMAINS]
    across = [
        _jaccard(_question_vocab(examples, a), _question_vocab(examples, b))
        for a, b in itertools.combinations(DOMAINS, 2)
    ]
    assert min(within) > 0.6
    assert max(across) < 0.3
    assert max(across) - min(across) > 0.05, "some domain pairs should be closer than others"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n_per_domain": 0}, "n_per_domain"),
        ({"n_per_domain": 2.5}, "n_per_domain"),
        ({"n_per_domain": True}, "n_per_domain"),
        ({"seed": "0"}, "seed"),
        ({"questions_per_context": 0}, "questions_per_context"),
        ({"questions_per_context": 4}, "questions_per_context"),
        ({"domains": []}, "domains"),
        ({"domains": "sports"}, "domains"),
        ({"domains": ["sports", "cooking"]}, "domains"),
        ({"domains": ["sports", "sports"]}, "domains"),
    ],
)
def test_invalid_config_raises(kwargs, field):
    with pytest.raises(ConfigError) as info:
        generate(**kwargs)
    assert (info.value.source, info.value.where) == ("synthetic", field)
