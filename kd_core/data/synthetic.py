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

Randomness comes only from ``random.Random`` seeded with ``(seed, domain)``: the same seed
gives the same data, and a domain's examples do not depend on which other domains are asked for.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from kd_core.data.schema import examples_to_dataset
from kd_core.errors import ConfigError

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


# ----------------------------------------------------------------------------- vocabulary

FIRST_NAMES = (
    "Maria", "James", "Aiko", "Lucas", "Fatima", "Oliver", "Priya", "Mateo", "Elena", "Noah",
    "Ingrid", "Kwame", "Sofia", "Daniel", "Leila", "Tomas", "Hana", "Victor", "Amara", "Felix",
)
LAST_NAMES = (
    "Rivera", "Okafor", "Tanaka", "Lindqvist", "Haddad", "Novak", "Mensah", "Costa", "Brennan",
    "Kowalski", "Sato", "Moreau", "Petrov", "Adeyemi", "Larsen", "Quinn", "Varga", "Duarte",
)
CITIES = (
    "Lisbon", "Porto", "Valencia", "Bergen", "Lyon", "Krakow", "Seville", "Tallinn", "Graz",
    "Utrecht", "Ghent", "Malmo",
)
COMPANIES = (
    "Norvex Systems", "Altamira Corp", "Brightline Labs", "Quantis Group", "Helio Dynamics",
    "Corvane Networks", "Stellar Micro", "Vantor Software",
)
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
TEAMS = tuple(f"{city} {suffix}" for city in CITIES for suffix in ("Rovers", "United", "Athletic"))
DRUGS = (
    "oxaprolin", "cardimexol", "lumivastin", "neurafex", "pulmocort", "hepatrine", "dermazole",
    "renaxil", "zentramab", "glycorin",
)
PRODUCTS = (
    "Orbit phone", "Pixelate tablet", "Nimbus laptop", "Atlas router", "Pulse watch",
    "Vega headset", "Comet speaker",
)
QUARTERS = ("in Q1", "in Q2", "in Q3", "in Q4")


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _doctor(rng: random.Random) -> str:
    return f"Dr. {rng.choice(LAST_NAMES)}"


def _number(low: int, high: int, unit: str) -> ValueSampler:
    return lambda rng: f"{rng.randint(low, high)} {unit}"


def _choice(options: Sequence[str]) -> ValueSampler:
    return lambda rng: rng.choice(options)


def _year(rng: random.Random) -> str:
    return str(rng.randint(1990, 2023))


def _month_year(rng: random.Random) -> str:
    return f"{rng.choice(MONTHS)} {rng.randint(2015, 2024)}"


def _billions(rng: random.Random) -> str:
    return f"${rng.randint(11, 990) / 10:.1f} billion"


def _per_share(rng: random.Random) -> str:
    return f"${rng.randint(5, 180) / 100:.2f}"


def _stadium(rng: random.Random) -> str:
    name = rng.choice(("Riverside", "Northgate", "Kingsmead", "Harbour View", "Castle Hill", "Elm Road"))
    return f"{name} {rng.choice(('Stadium', 'Arena', 'Park'))}"


def _trip_time(rng: random.Random) -> str:
    hours, minutes = rng.randint(1, 9), rng.choice((10, 15, 20, 25, 35, 40, 45, 50))
    unit = "hour" if hours == 1 else "hours"
    return f"{hours} {unit}" if rng.random() < 0.4 else f"{hours} {unit} {minutes} minutes"


SPORTS = DomainSpec(
    frames=(
        Frame(
            "person", TEAMS,
            ("in the first half", "in the second half", "in extra time", "in the final minute"),
            ("{a} scored for {s} {q}.", "{q}, {a} put {s} ahead.",
             "{s} took the lead {q} through a goal by {a}."),
            ("Who scored for {s} {q}?", "Which player found the net for {s} {q}?",
             "Who got the goal for {s} {q}?"),
            _person,
        ),
        Frame(
            "points", TEAMS,
            ("in the first quarter", "in the second quarter", "in the third quarter",
             "in the fourth quarter"),
            ("{s} scored {a} {q}.", "{q}, {s} piled up {a}.", "{s} put up {a} {q}."),
            ("How many points did {s} score {q}?", "What was the points total of {s} {q}?",
             "How many points did {s} rack up {q}?"),
            _number(8, 45, "points"),
        ),
        Frame(
            "year", TEAMS,
            ("the league title", "the national cup", "the regional trophy", "the super cup"),
            ("{s} won {q} in {a}.", "In {a}, {s} lifted {q}.", "{s} claimed {q} back in {a}."),
            ("In which year did {s} win {q}?", "When did {s} lift {q}?",
             "What year did {s} claim {q}?"),
            _year,
        ),
        Frame(
            "stadium", TEAMS,
            ("the final", "the semi-final", "the derby", "the opening match"),
            ("{s} played {q} at {a}.", "{q} of {s} was staged at {a}.",
             "At {a}, {s} contested {q}."),
            ("At which stadium did {s} play {q}?", "Where did {s} contest {q}?",
             "Which ground staged {q} of {s}?"),
            _stadium,
        ),
    ),
    fillers=(
        "The coach praised the defensive effort after the match.",
        "Supporters packed the stands despite the rain.",
        "{s} had struggled for form earlier in the season.",
        "The referee showed several yellow cards.",
        "Both sides rotated their squads ahead of the next fixture.",
        "Injuries kept two regular starters on the bench.",
        "{s} will travel for an away game next weekend.",
    ),
    filler_subjects=TEAMS,
)

MEDICINE = DomainSpec(
    frames=(
        Frame(
            "dose", DRUGS,
            ("for adults", "for children", "for elderly patients", "for patients with kidney disease"),
            ("The recommended dose of {s} {q} is {a} daily.",
             "{q}, clinicians prescribe {a} of {s} per day.",
             "Guidelines advise {a} of {s} each day {q}."),
            ("What dose of {s} is recommended {q}?", "What daily amount of {s} is advised {q}?",
             "What is the prescribed daily dose of {s} {q}?"),
            _choice(("5 mg", "10 mg", "20 mg", "25 mg", "50 mg", "100 mg", "200 mg", "250 mg",
                     "400 mg", "500 mg", "750 mg")),
        ),
        Frame(
            "duration", DRUGS,
            ("for pneumonia", "for sinusitis", "for skin infections", "for bronchitis"),
            ("A course of {s} {q} lasts {a}.", "Treatment with {s} {q} runs for {a}.",
             "{q}, patients stay on {s} for {a}."),
            ("What is the length of a course of {s} {q}?",
             "What treatment duration of {s} is used {q}?",
             "What period should patients remain on {s} {q}?"),
            lambda rng: f"{rng.randint(3, 21)} days" if rng.random() < 0.6 else f"{rng.randint(2, 12)} weeks",
        ),
        Frame(
            "percent", DRUGS,
            ("blood pressure", "cholesterol", "blood sugar", "migraine frequency"),
            ("In trials, {s} lowered {q} by {a}.", "{q} fell by {a} in patients on {s}.",
             "Patients taking {s} saw {q} drop {a}."),
            ("What percentage reduction in {q} did {s} achieve?",
             "What drop in {q} was seen with {s} in trials?",
             "What proportion of {q} did {s} reduce in studies?"),
            _number(5, 60, "percent"),
        ),
        Frame(
            "researcher", DRUGS,
            ("phase one", "phase two", "phase three", "pediatric"),
            ("{a} led the {q} trial of {s}.", "The {q} trial of {s} was directed by {a}.",
             "Results of the {q} study of {s} were presented by {a}."),
            ("What researcher led the {q} trial of {s}?",
             "What clinician directed the {q} study of {s}?",
             "Which physician ran the {q} trial of {s}?"),
            _doctor,
        ),
    ),
    fillers=(
        "Common side effects include nausea and mild headache.",
        "Patients should report any rash to their doctor.",
        "{s} should be stored at room temperature.",
        "The drug is not recommended alongside alcohol.",
        "Regulators reviewed the safety data before approval.",
        "Dosing may be adjusted after routine blood tests.",
        "{s} is taken with food to limit stomach upset.",
    ),
    filler_subjects=DRUGS,
)

FINANCE = DomainSpec(
    frames=(
        Frame(
            "money", COMPANIES, QUARTERS,
            ("{s} reported revenue of {a} {q}.", "{q}, {s} booked sales of {a}.",
             "Revenue at {s} reached {a} {q}."),
            ("How much revenue did {s} report {q}?", "How much did {s} earn in sales {q}?",
             "What were the total sales of {s} {q}?"),
            _billions,
        ),
        Frame(
            "percent", COMPANIES, ("in 2019", "in 2020", "in 2021", "in 2022", "in 2023"),
            ("{s} said net profit grew by {a} {q}.", "{q}, net profit at {s} climbed {a}.",
             "Net income of {s} rose {a} {q}."),
            ("How much did net profit at {s} grow {q}?",
             "By what percentage did the profit of {s} rise {q}?",
             "How much did {s} report its net income increased {q}?"),
            _number(2, 45, "percent"),
        ),
        Frame(
            "person", COMPANIES,
            ("chief executive", "chief financial officer", "chairman", "head of strategy"),
            ("{s} named {a} as its new {q}.", "{a} was appointed {q} of {s}.",
             "The board of {s} picked {a} to serve as {q}."),
            ("Who did {s} appoint as {q}?", "Who was named {q} of {s}?",
             "Who did the board of {s} choose as {q}?"),
            _person,
        ),
        Frame(
            "dividend", COMPANIES, QUARTERS,
            ("{s} declared a dividend of {a} per share {q}.",
             "{q}, {s} paid shareholders {a} per share.",
             "Shareholders of {s} received {a} per share {q}."),
            ("How much did {s} pay per share in dividends {q}?",
             "What dividend per share did {s} report {q}?",
             "How much was the dividend of {s} {q}?"),
            _per_share,
        ),
    ),
    fillers=(
        "Shares of {s} rose in early trading.",
        "Analysts had expected weaker results.",
        "The board reaffirmed its full-year guidance.",
        "Currency swings weighed on overseas sales.",
        "Management highlighted cost cuts in the supply chain.",
        "Investors welcomed the share buyback plan.",
        "{s} will publish its annual report next month.",
    ),
    filler_subjects=COMPANIES,
)

TECHNOLOGY = DomainSpec(
    frames=(
        Frame(
            "month", COMPANIES, tuple(f"the {p}" for p in PRODUCTS),
            ("{s} launched {q} in {a}.", "In {a}, {s} released {q}.",
             "{q} from {s} went on sale in {a}."),
            ("When did {s} launch {q}?", "When did {s} release {q} to customers?",
             "In which month did {s} ship {q}?"),
            _month_year,
        ),
        Frame(
            "memory", PRODUCTS, ("base model", "pro model", "max model", "entry model"),
            ("The {q} of the {s} ships with {a} of memory.",
             "{a} of memory comes with the {q} of the {s}.",
             "The {s} {q} is equipped with {a} of RAM."),
            ("How much memory does the {q} of the {s} have?",
             "How much RAM is built into the {s} {q}?",
             "What memory capacity does the {s} {q} offer?"),
            _choice(("4 GB", "6 GB", "8 GB", "12 GB", "16 GB", "24 GB", "32 GB", "64 GB")),
        ),
        Frame(
            "price", PRODUCTS, ("in Europe", "in the United States", "in Japan", "in India"),
            ("The {s} sells for {a} {q}.", "{q}, the {s} is priced at {a}.",
             "Buyers pay {a} for the {s} {q}."),
            ("How much does the {s} cost {q}?", "What is the retail price of the {s} {q}?",
             "How much do customers pay for the {s} {q}?"),
            lambda rng: f"${rng.randrange(149, 1999, 50)}",
        ),
        Frame(
            "person", COMPANIES, tuple(f"the {p}" for p in PRODUCTS),
            ("{a} led the design of {q} at {s}.", "At {s}, {q} was designed by {a}.",
             "{s} credited {a} with engineering {q}."),
            ("Who designed {q} at {s}?", "Which engineer led the design of {q} for {s}?",
             "Who did {s} credit with building {q}?"),
            _person,
        ),
    ),
    fillers=(
        "Reviewers praised the battery life.",
        "{s} said a software update would follow later.",
        "The device supports fast charging and wireless sync.",
        "Early units sold out within days.",
        "Developers received a preview of the new platform.",
        "{s} declined to comment on future models.",
        "The launch event was streamed online.",
    ),
    filler_subjects=COMPANIES,
)

AIRLINES = ("SkyBridge Air", "Nordic Wings", "Azure Airways", "Coastline Air", "Meridian Jet")

TRAVEL = DomainSpec(
    frames=(
        Frame(
            "city", AIRLINES, ("in winter", "in summer", "in spring", "in autumn"),
            ("{s} adds direct flights to {a} {q}.", "{q}, {s} flies nonstop to {a}.",
             "Travellers can reach {a} on {s} {q}."),
            ("Which city does {s} serve with direct flights {q}?",
             "Which destination can travellers fly to nonstop on {s} {q}?",
             "Which city is added to the {s} network {q}?"),
            _choice(CITIES),
        ),
        Frame(
            "trip", CITIES, tuple(f"to {city}" for city in CITIES),
            ("The train from {s} {q} takes {a}.",
             "Rail passengers from {s} {q} spend {a} on board.",
             "The journey by rail from {s} {q} lasts {a}."),
            ("How long is the train ride from {s} {q}?",
             "How long does the rail journey from {s} {q} take?",
             "How many hours does the train from {s} {q} need?"),
            _trip_time,
        ),
        Frame(
            "fare", ("the harbour ferry", "the castle tour", "the cable car", "the old town museum"),
            ("for adults", "for children", "for students", "for seniors"),
            ("A ticket for {s} costs {a} {q}.", "{q}, entry to {s} is {a}.",
             "Visitors pay {a} for {s} {q}."),
            ("Which fare applies to {s} {q}?", "How much is a ticket for {s} {q}?",
             "Which price do visitors pay for {s} {q}?"),
            _number(4, 80, "euros"),
        ),
        Frame(
            "city", ("jazz festival", "film festival", "lantern parade", "food market"),
            ("in June", "in July", "in August", "in September"),
            ("The {s} takes place in {a} {q}.", "{q}, {a} hosts the {s}.",
             "{a} welcomes visitors to the {s} {q}."),
            ("Which city hosts the {s} {q}?", "Which town holds the {s} {q}?",
             "Which city should travellers visit for the {s} {q}?"),
            _choice(CITIES),
        ),
    ),
    fillers=(
        "Visitors are advised to book accommodation early.",
        "The old harbour is a short walk from the station.",
        "{s} is known for its narrow streets and cafes.",
        "Local buses run every few minutes during the day.",
        "Guided walks leave from the main square each morning.",
        "{s} attracts crowds of tourists on weekends.",
        "Most museums close on public holidays.",
    ),
    filler_subjects=CITIES,
)

_SPECS: dict[str, DomainSpec] = {
    "sports": SPORTS,
    "medicine": MEDICINE,
    "finance": FINANCE,
    "technology": TECHNOLOGY,
    "travel": TRAVEL,
}
DOMAINS: tuple[str, ...] = tuple(_SPECS)


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
        context = _build_context(_SPECS[domain], k, rng)
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
    unknown = [d for d in domains if d not in _SPECS]
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
    examples = generate_examples(n_per_domain, domains, seed, questions_per_context)
    return examples_to_dataset(example.to_record() for example in examples)
