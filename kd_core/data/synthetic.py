"""Embedded synthetic multi-domain reading-comprehension data (extractive QA, SQuAD-like).

This is the offline default corpus for the demo and the tests: no download, fully
deterministic, and built so that the questions the distillation system cares about
(which span does a weak model pick? how close are two domains?) have interesting answers.

How an example is built
-----------------------
Each domain (:data:`DOMAINS`) owns a few *frames*. A frame is one kind of fact with a
fixed answer type, e.g. sports "who scored for TEAM in HALF" (a person) or medicine
"recommended dose of DRUG for POPULATION" (a dose in mg). A frame has

* two slots, the *subject* (team, drug, company, ...) and the *qualifier* ("in the second
  half", "for children", "in Q3", ...), each drawn from the domain's own vocabulary;
* several *statement* templates that state the fact (different verbs and word orders);
* several *question* templates that paraphrase it with other verbs/word order but keep the
  subject and qualifier verbatim.

A context holds ``questions_per_context`` facts from distinct frames of one domain. For every
fact it contains

* the *answer sentence*: the statement with the real subject, qualifier and answer value;
* one *confusing sentence*: the same frame (so an answer of the same type, in a similar
  frame, often in another phrasing) where exactly one slot differs -- the qualifier
  ("in the first half" instead of "in the second half") or the subject (another team) --
  and the value differs. The question therefore overlaps lexically with both sentences, and
  only its distinguishing content words (the qualifier or the subject) single out the
  answer sentence. This is the span a weak model gets wrong and answer distillation targets;

plus domain filler sentences (no facts), so a passage has 4 to 8 sentences, in shuffled order.
Answers are short spans (names, numbers with units, dates, places), each occurring exactly
once in its context (not even inside another string), so ``answer_start`` is exact and unambiguous.

Domain similarity
-----------------
Every domain has its own entities, verbs and wh-style (sports "Who scored ...?", medicine
"What dose of ... is recommended ...?", finance "How much revenue did ... report ...?",
technology "When did ... launch ...?", travel "Which city ...?"), so TF-IDF over questions
separates them. Some vocabulary is shared on purpose, so the similarity map is not flat:
finance and technology share company names and "How much ... did"; sports and travel share
city names (teams are named after cities); medicine and travel share "for adults/children".

The vocabulary (named word lists, each domain's frames, templates and fillers) is data,
``vocab/span_qa.yaml``; the value formats a frame names (``person``, ``year``, ...) are the
samplers in this module.

Randomness comes only from ``random.Random`` seeded with ``(seed, domain)``: the same seed
gives the same data, and a domain's examples do not depend on which other domains are asked for.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kd_core.io.errors import ConfigError

if TYPE_CHECKING:
    from datasets import Dataset

MAX_QUESTIONS_PER_CONTEXT = 3
MIN_SENTENCES, MAX_SENTENCES = 4, 8
_MAX_ATTEMPTS = 200

ValueSampler = Callable[[random.Random], str]


@dataclass(frozen=True)
class Frame:
    """One kind of fact: answer type, slot vocabularies, statement and question templates.

    Templates use ``{s}`` (subject), ``{q}`` (qualifier) and, in statements only, ``{a}``.
    """

    answer_type: str
    subjects: tuple[str, ...]
    qualifiers: tuple[str, ...]
    statements: tuple[str, ...]
    questions: tuple[str, ...]
    values: ValueSampler


@dataclass(frozen=True)
class DomainSpec:
    """The frames of one domain and its filler sentences (``{s}`` takes a filler subject)."""

    frames: tuple[Frame, ...]
    fillers: tuple[str, ...]
    filler_subjects: tuple[str, ...]


@dataclass(frozen=True)
class Span:
    """A character span of a context."""

    text: str
    start: int


@dataclass(frozen=True)
class SyntheticExample:
    """One generated question with its answer and the confusing same-type spans of its context."""

    id: str
    domain: str
    title: str
    context: str
    question: str
    answer_type: str
    answer: Span
    distractors: tuple[Span, ...]

    def to_record(self) -> dict[str, Any]:
        """The example as a row of the shared schema (:mod:`kd_core.data.schema`)."""
        return {
            "id": self.id,
            "domain": self.domain,
            "title": self.title,
            "context": self.context,
            "question": self.question,
            "answers": {"text": [self.answer.text], "answer_start": [self.answer.start]},
            "is_impossible": False,
        }


# ----------------------------------------------------------------------------- vocabulary (data)

VOCAB_FILE = Path(__file__).with_name("vocab") / "span_qa.yaml"
_TRIP_MINUTES = (10, 15, 20, 25, 35, 40, 45, 50)


def _named_samplers(lists: Mapping[str, tuple[str, ...]]) -> dict[str, ValueSampler]:
    """The answer-value formats a frame names in the vocabulary file (each draws in a fixed order)."""
    first, last, months = lists["first_names"], lists["last_names"], lists["months"]

    def trip_time(rng: random.Random) -> str:
        hours, minutes = rng.randint(1, 9), rng.choice(_TRIP_MINUTES)
        unit = "hour" if hours == 1 else "hours"
        return f"{hours} {unit}" if rng.random() < 0.4 else f"{hours} {unit} {minutes} minutes"

    return {
        "person": lambda rng: f"{rng.choice(first)} {rng.choice(last)}",
        "doctor": lambda rng: f"Dr. {rng.choice(last)}",
        "year": lambda rng: str(rng.randint(1990, 2023)),
        "month_year": lambda rng: f"{rng.choice(months)} {rng.randint(2015, 2024)}",
        "billions": lambda rng: f"${rng.randint(11, 990) / 10:.1f} billion",
        "per_share": lambda rng: f"${rng.randint(5, 180) / 100:.2f}",
        "stadium": lambda rng: f"{rng.choice(lists['stadium_names'])} {rng.choice(lists['stadium_kinds'])}",
        "trip_time": trip_time,
        "course_length": lambda rng: (f"{rng.randint(3, 21)} days" if rng.random() < 0.6
                                      else f"{rng.randint(2, 12)} weeks"),
        "price": lambda rng: f"${rng.randrange(149, 1999, 50)}",
    }


def _words(value: str | list[str], lists: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """A word list: a list given inline, or the name of one of the file's named lists."""
    return lists[value] if isinstance(value, str) else tuple(value)


def _sampler(spec: str | dict[str, Any], lists: Mapping[str, tuple[str, ...]],
             named: Mapping[str, ValueSampler]) -> ValueSampler:
    """A frame's value sampler: a named format, ``{number: [low, high, unit]}`` or ``{choice: words}``."""
    if isinstance(spec, str):
        return named[spec]
    if "number" in spec:
        low, high, unit = spec["number"]
        return lambda rng: f"{rng.randint(low, high)} {unit}"
    options = _words(spec["choice"], lists)
    return lambda rng: rng.choice(options)


@cache
def domain_specs() -> dict[str, DomainSpec]:
    """Every domain's frames and fillers, read once from ``vocab/span_qa.yaml``."""
    data = yaml.safe_load(VOCAB_FILE.read_text(encoding="utf-8"))
    lists = {name: tuple(words) for name, words in data["lists"].items()}
    named = _named_samplers(lists)
    return {
        domain: DomainSpec(
            frames=tuple(Frame(f["answer_type"], _words(f["subjects"], lists), _words(f["qualifiers"], lists),
                               tuple(f["statements"]), tuple(f["questions"]), _sampler(f["values"], lists, named))
                         for f in spec["frames"]),
            fillers=tuple(spec["fillers"]),
            filler_subjects=_words(spec["filler_subjects"], lists),
        )
        for domain, spec in data["domains"].items()
    }


DOMAINS: tuple[str, ...] = tuple(domain_specs())


# ----------------------------------------------------------------------------- building


@dataclass(frozen=True)
class _Fact:
    """A frame instantiated with subject, qualifier and answer value."""

    frame: Frame
    subject: str
    qualifier: str
    value: str


@dataclass(frozen=True)
class _Sentence:
    """A sentence of a context; ``answer_offset`` locates the fact's value inside it."""

    text: str
    answer_offset: int = 0
    value_length: int = 0


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _state(fact: _Fact, rng: random.Random) -> _Sentence:
    """Render a fact with a random statement template, remembering where the value lands."""
    before, after = rng.choice(fact.frame.statements).split("{a}")
    slots = {"s": fact.subject, "q": fact.qualifier}
    prefix = before.format(**slots)
    text = _capitalize(prefix + fact.value + after.format(**slots))
    return _Sentence(text, len(prefix), len(fact.value))


def _ask(fact: _Fact, rng: random.Random) -> str:
    return _capitalize(rng.choice(fact.frame.questions).format(s=fact.subject, q=fact.qualifier))


def _draw_other(options: Sequence[str], rng: random.Random, *exclude: str) -> str:
    return rng.choice([o for o in options if o not in exclude])


def _slots_ok(subject: str, qualifier: str) -> bool:
    """Subject and qualifier must not name the same thing ("from Porto to Porto")."""
    return subject not in qualifier


def _draw_fact(frame: Frame, rng: random.Random) -> _Fact:
    while True:
        subject, qualifier = rng.choice(frame.subjects), rng.choice(frame.qualifiers)
        if _slots_ok(subject, qualifier):
            return _Fact(frame, subject, qualifier, frame.values(rng))


def _draw_confuser(fact: _Fact, rng: random.Random) -> _Fact:
    """Same frame, exactly one slot changed (qualifier or subject), another value."""
    frame = fact.frame
    while True:
        if rng.random() < 0.5:
            subject, qualifier = fact.subject, _draw_other(frame.qualifiers, rng, fact.qualifier)
        else:
            subject, qualifier = _draw_other(frame.subjects, rng, fact.subject), fact.qualifier
        value = frame.values(rng)
        if _slots_ok(subject, qualifier) and value != fact.value:
            return _Fact(frame, subject, qualifier, value)


def _fillers(spec: DomainSpec, count: int, rng: random.Random) -> list[_Sentence]:
    templates = rng.sample(spec.fillers, count)
    return [_Sentence(_capitalize(t.format(s=rng.choice(spec.filler_subjects)))) for t in templates]


@dataclass(frozen=True)
class _Context:
    """A rendered passage with, per fact, its question, answer span and distractor span."""

    text: str
    questions: tuple[str, ...]
    answer_types: tuple[str, ...]
    answers: tuple[Span, ...]
    distractors: tuple[Span, ...]


def _layout(sentences: Sequence[_Sentence], rng: random.Random) -> tuple[str, list[int]]:
    """Join the sentences in shuffled order; return the text and each sentence's start offset."""
    order = list(range(len(sentences)))
    rng.shuffle(order)
    starts = [0] * len(sentences)
    offset = 0
    for i in order:
        starts[i] = offset
        offset += len(sentences[i].text) + 1
    return " ".join(sentences[i].text for i in order), starts


def _try_context(spec: DomainSpec, n_questions: int, rng: random.Random) -> _Context | None:
    """Render one passage; ``None`` when a value would not be unique in it (caller redraws).

    Sentences ``2i`` and ``2i + 1`` (before shuffling) are fact ``i``'s answer and confuser.
    """
    facts = [_draw_fact(frame, rng) for frame in rng.sample(spec.frames, n_questions)]
    stated = [s for f in facts for s in (_state(f, rng), _state(_draw_confuser(f, rng), rng))]
    n_fillers = rng.randint(max(1, MIN_SENTENCES - 2 * n_questions), MAX_SENTENCES - 2 * n_questions)
    text, starts = _layout(stated + _fillers(spec, n_fillers, rng), rng)
    spans = []
    for sentence, start in zip(stated, starts):
        begin = start + sentence.answer_offset
        spans.append(Span(text[begin : begin + sentence.value_length], begin))
    if any(text.count(span.text) != 1 for span in spans):
        return None
    return _Context(
        text,
        tuple(_ask(f, rng) for f in facts),
        tuple(f.frame.answer_type for f in facts),
        tuple(spans[0::2]),
        tuple(spans[1::2]),
    )


def _build_context(spec: DomainSpec, n_questions: int, rng: random.Random) -> _Context:
    for _ in range(_MAX_ATTEMPTS):
        context = _try_context(spec, n_questions, rng)
        if context is not None:
            return context
    raise RuntimeError("synthetic generator could not place unique answers; vocabulary too small")


def _domain_examples(
    domain: str, n_questions: int, seed: int, questions_per_context: int
) -> list[SyntheticExample]:
    rng = random.Random(f"{seed}/{domain}")
    examples: list[SyntheticExample] = []
    index = 0
    while len(examples) < n_questions:
        k = min(questions_per_context, n_questions - len(examples))
        context = _build_context(domain_specs()[domain], k, rng)
        for q in range(k):
            examples.append(
                SyntheticExample(
                    id=f"{domain}-{index:05d}-{q}",
                    domain=domain,
                    title=f"{domain} {index}",
                    context=context.text,
                    question=context.questions[q],
                    answer_type=context.answer_types[q],
                    answer=context.answers[q],
                    distractors=(context.distractors[q],),
                )
            )
        index += 1
    return examples


# ----------------------------------------------------------------------------- public API


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(
    n_per_domain: int, domains: Sequence[str] | None, seed: int, questions_per_context: int
) -> tuple[str, ...]:
    """Check every knob; return the domains to generate."""
    if not _is_int(n_per_domain) or n_per_domain < 1:
        raise ConfigError("synthetic", "n_per_domain", f"must be an integer >= 1, got {n_per_domain!r}")
    if not _is_int(seed):
        raise ConfigError("synthetic", "seed", f"must be an integer, got {seed!r}")
    if not _is_int(questions_per_context) or not 1 <= questions_per_context <= MAX_QUESTIONS_PER_CONTEXT:
        raise ConfigError(
            "synthetic",
            "questions_per_context",
            f"must be an integer in 1..{MAX_QUESTIONS_PER_CONTEXT}, got {questions_per_context!r}",
        )
    if domains is None:
        return DOMAINS
    if isinstance(domains, str) or not domains:
        raise ConfigError("synthetic", "domains", f"must be a non-empty list of domain names, got {domains!r}")
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ConfigError("synthetic", "domains", f"unknown {unknown}; known: {list(DOMAINS)}")
    if len(set(domains)) != len(domains):
        raise ConfigError("synthetic", "domains", f"duplicate names in {list(domains)}")
    return tuple(domains)


def generate_examples(
    n_per_domain: int = 200,
    domains: Sequence[str] | None = None,
    seed: int = 0,
    questions_per_context: int = 2,
) -> list[SyntheticExample]:
    """Generate the examples with their metadata (answer type, distractor spans).

    ``n_per_domain`` is the number of questions per domain; contexts carry
    ``questions_per_context`` questions each (the last context of a domain may carry fewer).
    Raises :class:`ConfigError` on an invalid knob.
    """
    chosen = _validate(n_per_domain, domains, seed, questions_per_context)
    return [
        example
        for domain in chosen
        for example in _domain_examples(domain, n_per_domain, seed, questions_per_context)
    ]


def generate(
    n_per_domain: int = 200,
    domains: Sequence[str] | None = None,
    seed: int = 0,
    questions_per_context: int = 2,
) -> Dataset:
    """Generate the synthetic corpus as a dataset of the shared schema (see :func:`generate_examples`)."""
    from kd_core.data.schema import examples_to_dataset  # datasets: not needed for DOMAINS (a job's --help)

    examples = generate_examples(n_per_domain, domains, seed, questions_per_context)
    return examples_to_dataset(example.to_record() for example in examples)
