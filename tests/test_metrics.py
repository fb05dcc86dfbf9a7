"""SQuAD EM/F1: hand-computed values, agreement with torchmetrics, and the evaluate CLI's errors."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kd_core.evaluation.squad_metrics import (
    adversarial_scores,
    exact_match,
    f1_score,
    is_adversarial,
    max_over_references,
    normalize_answer,
    span_exact_match,
    span_f1,
    squad_scores,
    token_f1_zero,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Quick, brown fox!", "quick brown fox"),  # case, punctuation, article, whitespace
        ("An apple a day", "apple day"),  # all three articles are whole words
        ("theatre and another anthem", "theatre and another anthem"),  # articles only as whole words
        ("A.B.C.", "abc"),  # punctuation goes before articles are looked for: "a.b.c." -> "abc"
        ("U.S.-led\tcoalition\n", "usled coalition"),
        ("24–10", "24–10"),  # the en dash is not in string.punctuation
        ("Żelazowa WOLA", "żelazowa wola"),
        ("  the  ", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


# --------------------------------------------------------------------------- single pair


def test_exact_match_ignores_case_punctuation_articles_whitespace() -> None:
    assert exact_match("The Eiffel   Tower.", "eiffel tower") == 1.0
    assert exact_match("Eiffel Tower", "Eiffel") == 0.0


def test_f1_partial_overlap() -> None:
    # tok(p) = [big, red, barn] (3), tok(g) = [red, barn, in, ohio] (4), common = 2
    # P = 2/3, R = 2/4 = 1/2, F1 = 2 * (2/3) * (1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
    assert f1_score("the big red barn", "a red barn in Ohio") == pytest.approx(4 / 7, abs=1e-12)


def test_f1_counts_repeated_tokens_as_a_multiset() -> None:
    # tok(p) = [paris, paris, paris], tok(g) = [paris, france]; common = min(3, 1) = 1
    # P = 1/3, R = 1/2, F1 = 2 * (1/6) / (5/6) = 2/5
    assert f1_score("Paris, Paris, Paris", "Paris France") == pytest.approx(2 / 5, abs=1e-12)


def test_f1_identical_after_normalisation_and_disjoint() -> None:
    assert f1_score("7 February 2016", "February 7, 2016") == 1.0  # same token bag, different order
    assert f1_score("24-10", "24–10") == 0.0  # "2410" vs "24–10"


def test_texts_that_normalise_to_nothing_follow_v1_1() -> None:
    # official v1.1: EM compares the normalised strings ("" == ""); F1 is 0 since common == 0
    assert exact_match("the", "A") == 1.0
    assert f1_score("the", "A") == 0.0


# --------------------------------------------------------------------------- several references


def test_max_over_references() -> None:
    # vs "1990": tok(p) = [in, 1990], tok(g) = [1990]; P = 1/2, R = 1, F1 = 2/3
    # vs "the year 1990": tok(g) = [year, 1990]; P = 1/2, R = 1/2, F1 = 1/2  -> max 2/3
    references = ["1990", "the year 1990"]
    assert max_over_references(f1_score, "in 1990", references) == pytest.approx(2 / 3, abs=1e-12)
    assert max_over_references(exact_match, "in 1990", references) == 0.0
    assert max_over_references(exact_match, "The year 1990.", references) == 1.0


def test_max_over_references_refuses_an_empty_list() -> None:
    with pytest.raises(ValueError, match="at least one reference"):
        max_over_references(f1_score, "x", [])


def test_span_scores_unanswerable_question_uses_squad_v2_rule() -> None:
    assert span_exact_match("", []) == 1.0 and span_f1("", []) == 1.0
    assert span_f1("The.", []) == 1.0  # normalises to ""
    assert span_exact_match("Denver", []) == 0.0 and span_f1("Denver", []) == 0.0


def test_span_f1_multiple_references() -> None:
    # vs "NASA": tok(p) has 6 tokens, common 1: P = 1/6, R = 1, F1 = 2/7
    # vs "National Aeronautics and Space Administration": common 5, P = 5/6, R = 1, F1 = 10/11
    prediction = "NASA (National Aeronautics and Space Administration)"
    references = ["NASA", "National Aeronautics and Space Administration"]
    assert span_f1(prediction, references) == pytest.approx(10 / 11, abs=1e-12)
    assert span_exact_match(prediction, references) == 0.0


def test_token_f1_zero() -> None:
    assert token_f1_zero("Chicago Bears", ["Denver Broncos", "the Broncos"])
    assert not token_f1_zero("Denver", ["Denver Broncos", "Carolina"])
    assert token_f1_zero("the", ["the Broncos"])  # nothing left after normalisation
    assert token_f1_zero("anything", [])


def test_squad_scores_percentages_and_missing() -> None:
    references = {"q1": ["red barn"], "q2": ["Ohio"], "q3": ["blue sky"], "q4": []}
    predictions = {"q1": "the red barn", "q3": "sky", "q4": "", "extra": "ignored"}
    # q1: EM 1, F1 1; q2 missing: 0, 0; q3: EM 0, F1 = 2 * 1 * (1/2) / (3/2) = 2/3; q4 unanswerable: 1, 1
    scores = squad_scores(predictions, references)
    assert scores["exact_match"] == pytest.approx(100 * 2 / 4, abs=1e-12)
    assert scores["f1"] == pytest.approx(100 * (1 + 0 + 2 / 3 + 1) / 4, abs=1e-12)
    assert scores["missing"] == 1


# --------------------------------------------------------------------------- agreement with torchmetrics

# (title, context, [(question, reference answers, prediction or None when unanswered)])
# Every reference and prediction keeps at least one token after normalisation: for texts that
# normalise to nothing torchmetrics uses the SQuAD v2 F1 rule while the v1.1 script gives 0.
PARAGRAPHS: list[tuple[str, str, list[tuple[str, list[str], str | None]]]] = [
    (
        "Super_Bowl_50",
        "Super Bowl 50 was an American football game to determine the champion of the National Football "
        "League (NFL) for the 2015 season. The American Football Conference (AFC) champion Denver Broncos "
        "defeated the National Football Conference (NFC) champion Carolina Panthers 24–10 to earn their "
        "third Super Bowl title. The game was played on February 7, 2016, at Levi's Stadium in the San "
        "Francisco Bay Area at Santa Clara, California.",
        [
            ("Which team won Super Bowl 50?", ["Denver Broncos", "Denver Broncos", "Denver Broncos"], "Denver Broncos"),
            ("Which NFL team represented the NFC?", ["Carolina Panthers"], "the Carolina Panthers."),
            (
                "Where was the game played?",
                ["Levi's Stadium", "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California.", "Santa Clara, California"],
                "Levi's Stadium in Santa Clara",
            ),
            ("What was the final score?", ["24–10"], "24-10"),
            ("When was the game played?", ["February 7, 2016", "February 7"], "7 February 2016"),
            ("Which season did the game decide?", ["2015 season", "2015"], "the 2015 NFL season"),
            ("How many Super Bowl titles did Denver have?", ["third"], "3"),
            ("What does AFC stand for?", ["American Football Conference"], "AMERICAN   football conference"),
            ("Which league's champion was determined?", ["National Football League", "NFL"], "NFL"),
        ],
    ),
    (
        "Normans",
        'The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the 10th '
        'and 11th centuries gave their name to Normandy, a region in France. They were descended from Norse '
        '("Norman" comes from "Norseman") raiders and pirates from Denmark, Iceland and Norway who, under their '
        "leader Rollo, agreed to swear fealty to King Charles III of West Francia.",
        [
            ("In what country is Normandy located?", ["France", "France"], "France."),
            ("When were the Normans in Normandy?", ["10th and 11th centuries", "in the 10th and 11th centuries"], "10th century"),
            ("From which countries did the Norse originate?", ["Denmark, Iceland and Norway"], "Denmark Iceland Norway"),
            ("Who was the Norse leader?", ["Rollo"], "Rollo the Walker"),
            ("Who did they swear fealty to?", ["King Charles III", "Charles III"], "King Charles III of West Francia"),
            ('Where does "Norman" come from?', ["Norseman"], '"Norseman"'),
            ("What region did they name?", ["Normandy"], "Norway"),
            ("Who were the Normans descended from?", ["Norse"], None),
        ],
    ),
    (
        "Amazon_rainforest",
        "The Amazon rainforest, also known in English as Amazonia or the Amazon Jungle, is a moist broadleaf "
        "forest that covers most of the Amazon basin of South America. This basin encompasses 7,000,000 square "
        "kilometres (2,700,000 sq mi), of which 5,500,000 square kilometres (2,100,000 sq mi) are covered by the "
        "rainforest. The majority of the forest is contained within Brazil, with 60% of the rainforest, followed "
        "by Peru with 13%, and Colombia with 10%.",
        [
            ("What is another name for the Amazon rainforest?", ["Amazonia", "Amazonia or the Amazon Jungle", "the Amazon Jungle"], "Amazon Jungle"),
            ("How large is the Amazon basin?", ["7,000,000 square kilometres", "7,000,000 square kilometres (2,700,000 sq mi)"], "7000000 square kilometers"),
            ("Which country has most of the forest?", ["Brazil"], "Brazil, with 60% of the rainforest"),
            ("How much of the rainforest does Peru have?", ["13%", "13"], "13 percent"),
            ("Which country has 10% of the rainforest?", ["Colombia"], "Peru"),
            ("What type of forest is the Amazon?", ["moist broadleaf forest", "moist broadleaf"], "a moist broadleaf forest"),
            ("On which continent is the Amazon?", ["South America"], "south america"),
            ("How much of the basin is rainforest?", ["5,500,000 square kilometres"], "5,500,000 sq km"),
            ("What does the rainforest cover?", ["most of the Amazon basin", "Amazon basin"], None),
        ],
    ),
    (
        "Apollo_program",
        "The Apollo program, also known as Project Apollo, was the third United States human spaceflight program "
        "carried out by the National Aeronautics and Space Administration (NASA), which accomplished landing the "
        "first humans on the Moon from 1969 to 1972. It was first conceived during Dwight D. Eisenhower's "
        "administration as a three-man spacecraft to follow the one-man Project Mercury, which put the first "
        "Americans in space.",
        [
            ("Which agency ran Apollo?", ["NASA", "National Aeronautics and Space Administration"], "NASA (National Aeronautics and Space Administration)"),
            ("When did Apollo land humans on the Moon?", ["from 1969 to 1972", "1969 to 1972"], "1969-1972"),
            ("Under which president was Apollo conceived?", ["Dwight D. Eisenhower", "Eisenhower"], "Dwight Eisenhower"),
            ("Which program did Apollo follow?", ["Project Mercury", "the one-man Project Mercury"], "Mercury"),
            ("How many astronauts did the spacecraft carry?", ["three", "three-man"], "Three-man spacecraft"),
            ("Where did Apollo land humans?", ["the Moon", "Moon"], "The moon!"),
            ("Which US human spaceflight program was Apollo?", ["third"], "the third one"),
            ("What is another name for the Apollo program?", ["Project Apollo"], "project apollo"),
        ],
    ),
    (
        "Nikola_Tesla",
        "Nikola Tesla (10 July 1856 – 7 January 1943) was a Serbian American inventor, electrical engineer, "
        "mechanical engineer, physicist, and futurist best known for his contributions to the design of the "
        "modern alternating current (AC) electricity supply system.",
        [
            ("When was Tesla born?", ["10 July 1856"], "July 10, 1856"),
            ("What was Tesla's nationality?", ["Serbian American"], "Serbian"),
            ("Which electricity system did Tesla design?", ["alternating current", "alternating current (AC) electricity supply system", "AC"], "AC power"),
            ("When did Tesla die?", ["7 January 1943"], "1943"),
            (
                "What is Tesla best known for?",
                ["contributions to the design of the modern alternating current (AC) electricity supply system"],
                "the design of modern AC electricity supply",
            ),
            ("What was Tesla's first name?", ["Nikola"], "Nicola"),
            ("What were Tesla's professions?", ["inventor, electrical engineer, mechanical engineer, physicist, and futurist"], "electrical engineer and mechanical engineer"),
            ("What kind of American was Tesla?", ["Serbian American"], "Serbian-American"),
        ],
    ),
    (
        "Frédéric_Chopin",
        "Frédéric Chopin was born in Żelazowa Wola, a village in the Duchy of Warsaw. He moved to Paris in 1831 "
        "at the age of 20.",
        [
            ("Where was Chopin born?", ["Żelazowa Wola"], "żelazowa wola"),
            ("When did Chopin move to Paris?", ["1831", "in 1831"], "In 1831, at the age of 20"),
            ("Who was born in Żelazowa Wola?", ["Frédéric Chopin", "Chopin"], "Frederic Chopin"),
            ("How old was Chopin when he moved to Paris?", ["20"], "twenty"),
        ],
    ),
]


def _question_id(question: str) -> str:
    """A 24-hex-digit id in the style of SQuAD's."""
    return hashlib.sha1(question.encode("utf-8")).hexdigest()[:24]


def _squad_fixture() -> tuple[dict, dict[str, str], list[dict], list[dict]]:
    """(SQuAD JSON, predictions JSON, torchmetrics preds, torchmetrics targets) built from PARAGRAPHS."""
    articles, predictions, tm_preds, tm_targets = [], {}, [], []
    for title, context, questions in PARAGRAPHS:
        qas = []
        for question, answers, prediction in questions:
            qid = _question_id(question)
            starts = [context.index(answer) for answer in answers]
            qas.append({"id": qid, "question": question, "answers": [{"text": a, "answer_start": s} for a, s in zip(answers, starts)]})
            tm_targets.append({"id": qid, "answers": {"text": answers, "answer_start": starts}})
            if prediction is not None:
                predictions[qid] = prediction
                tm_preds.append({"id": qid, "prediction_text": prediction})
        articles.append({"title": title, "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "1.1", "data": articles}, predictions, tm_preds, tm_targets


def _write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return path


def _run_evaluate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python jobs/evaluate.py ARGS`` run in this process (its ``__main__`` is one ``run_cli(main)`` call):
    the exit status, stdout and stderr it would give. ``test_evaluate_cli_missing_file`` runs the real module."""
    from jobs.evaluate import main
    from kd_core.io.cli import run_cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run_cli(main, [str(a) for a in args])
        except SystemExit as done:  # argparse: --help, or a usage error
            code = int(done.code or 0)
    return subprocess.CompletedProcess(["jobs/evaluate.py", *map(str, args)], code, out.getvalue(), err.getvalue())


def _run_evaluate_module(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "jobs/evaluate.py", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.filterwarnings("ignore:Unanswered question")
def test_evaluate_cli_agrees_with_torchmetrics(tmp_path: Path) -> None:
    import torch
    from torchmetrics.text import SQuAD

    dataset, predictions, tm_preds, tm_targets = _squad_fixture()
    assert len(tm_targets) >= 40 and len(predictions) == len(tm_targets) - 2
    result = _run_evaluate(_write_json(tmp_path / "dev-v1.1.json", dataset), _write_json(tmp_path / "predictions.json", predictions))
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout)
    assert set(ours) == {"exact_match", "f1"}
    assert "2 of" in result.stderr  # the two unanswered questions are reported

    # torchmetrics computes in float32 by default; float64 everywhere to compare at 1e-6
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        metric = SQuAD()
        metric.set_dtype(torch.float64)
        metric.update(tm_preds, tm_targets)
        reference = {name: float(value) for name, value in metric.compute().items()}
    finally:
        torch.set_default_dtype(previous)

    assert 0 < ours["exact_match"] < ours["f1"] < 100  # the data mixes right, partial and wrong answers
    assert ours["exact_match"] == pytest.approx(reference["exact_match"], abs=1e-6)
    assert ours["f1"] == pytest.approx(reference["f1"], abs=1e-6)


# --------------------------------------------------------------------------- CLI behaviour

GOOD_DATA = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "red barn", "qas": [{"id": "q1", "question": "?", "answers": [{"text": "red barn", "answer_start": 0}]}]}]}]}


def test_evaluate_cli_help() -> None:
    result = _run_evaluate("--help")
    assert result.returncode == 0
    assert "exact match" in result.stdout and "prediction_file" in result.stdout


def test_evaluate_cli_scores_unanswerable_questions(tmp_path: Path) -> None:
    data = {"data": [{"paragraphs": [{"qas": [{"id": "a", "answers": []}, {"id": "b", "answers": [], "is_impossible": True}]}]}]}
    result = _run_evaluate(_write_json(tmp_path / "v2.json", data), _write_json(tmp_path / "p.json", {"a": "", "b": "barn"}))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"exact_match": 50.0, "f1": 50.0, "NoAns_exact_match": 50.0, "NoAns_f1": 50.0,
                                         "NoAns_total": 2, "HasAns_exact_match": None, "HasAns_f1": None,
                                         "HasAns_total": 0}


def test_evaluate_cli_reports_the_best_threshold_given_no_answer_scores(tmp_path: Path) -> None:
    data = _write_json(tmp_path / "v2.json", _squad_file(V2_REFERENCES))
    # The official v2 input: predictions already thresholded ("" = no answer) and each question's no-answer score.
    predictions = _write_json(tmp_path / "p.json", {"q1": "a b", "q2": "x", "q3": "c d", "q4": ""})
    na = _write_json(tmp_path / "na.json", V2_MARGINS)
    out = json.loads(_run_evaluate(data, predictions, "--na-prob-file", na).stdout)
    # As in the hand computation of test_squad_v2_null_rule_breakdown_and_best_threshold, but q4 already null:
    # answering q4 with "" changes nothing, so the best is still 3 of 4 at -2.
    assert out["best_f1"] == pytest.approx(75.0) and out["best_f1_threshold"] == -2.0
    assert out["HasAns_total"] == 2 and out["f1"] == pytest.approx(100 * (1 + 0 + 2 / 3 + 1) / 4)


def _without(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


_QA = GOOD_DATA["data"][0]["paragraphs"][0]["qas"][0]
_BAD_QA_DATA = json.loads(json.dumps(GOOD_DATA))
_BAD_QA_DATA["data"][0]["paragraphs"][0]["qas"] = [_QA, _without(_QA, "answers")]
_NO_ID_DATA = json.loads(json.dumps(GOOD_DATA))
_NO_ID_DATA["data"][0]["paragraphs"][0]["qas"] = [_without(_QA, "id")]
_DUPLICATE_DATA = json.loads(json.dumps(GOOD_DATA))
_DUPLICATE_DATA["data"][0]["paragraphs"][0]["qas"] = [_QA, _QA]
_GOOD_DATA_BYTES = json.dumps(GOOD_DATA).encode()
_GOOD_PREDICTIONS_BYTES = b'{"q1": "red barn"}'


@pytest.mark.parametrize(
    ("data_bytes", "predictions_bytes", "bad_file", "expected"),
    [
        (b'{"data": [\n  {"title": "t",\n   "paragraphs": [}\n]}', _GOOD_PREDICTIONS_BYTES, "data", ": line 3 column 19: malformed JSON"),
        (json.dumps(_BAD_QA_DATA).encode(), _GOOD_PREDICTIONS_BYTES, "data", ': data[0].paragraphs[0].qas[1]: missing field "answers"'),
        (json.dumps(_NO_ID_DATA).encode(), _GOOD_PREDICTIONS_BYTES, "data", ': data[0].paragraphs[0].qas[0]: missing field "id"'),
        (json.dumps(_DUPLICATE_DATA).encode(), _GOOD_PREDICTIONS_BYTES, "data", ": data[0].paragraphs[0].qas[1]: duplicate question id"),
        (b'{"version": "1.1", "data": {}}', _GOOD_PREDICTIONS_BYTES, "data", ": data: expected array, got object"),
        (b'{"version": "1.1"}', _GOOD_PREDICTIONS_BYTES, "data", ': top level: missing field "data"'),
        (b'{"data": []}', _GOOD_PREDICTIONS_BYTES, "data", ": data: no questions"),
        (_GOOD_DATA_BYTES, b'{"q1":\n "caf\xe9"}', "predictions", ": line 2 column 6: invalid UTF-8 byte 0xe9"),
        (_GOOD_DATA_BYTES, b'["red barn"]', "predictions", ": top level: expected object, got array"),
        (_GOOD_DATA_BYTES, b'{"q1": 3}', "predictions", ": id q1: expected string, got number"),
    ],
)
def test_evaluate_cli_bad_input(tmp_path: Path, data_bytes: bytes, predictions_bytes: bytes, bad_file: str, expected: str) -> None:
    paths = {"data": tmp_path / "data.json", "predictions": tmp_path / "predictions.json"}
    paths["data"].write_bytes(data_bytes)
    paths["predictions"].write_bytes(predictions_bytes)
    result = _run_evaluate(paths["data"], paths["predictions"])
    lines = result.stderr.splitlines()
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(lines) == 1 and lines[0].startswith(f"error: {paths[bad_file]}: ")
    assert expected in lines[0]


def test_evaluate_cli_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file.json"
    result = _run_evaluate_module(missing, _write_json(tmp_path / "p.json", {}))
    lines = result.stderr.splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].startswith(f"error: {missing}: file: cannot read")


# --------------------------------------------------------------------------- adversarial SQuAD

# Hand-made adversarial file: q1 with two variants, q2 without any, q3 with one.
ADVERSARIAL = {"q1": ["red barn"], "q1-high-conf": ["red barn"], "q1-turk0": ["red barn"], "q2": ["Paris"],
               "q3": ["blue sky"], "q3-x": ["blue sky"]}
ADVERSARIAL_PREDICTIONS = {
    "q1": "red barn",  # F1 1, EM 1
    "q1-high-conf": "red",  # P 1, R 1/2: F1 2/3, EM 0
    "q1-turk0": "barn door",  # P 1/2, R 1/2: F1 1/2, EM 0  <- worst of q1
    "q2": "paris",  # F1 1, EM 1 (no variants: counts as it is)
    "q3": "the blue sky",  # F1 1, EM 1
    "q3-x": "blue sky today",  # P 2/3, R 1: F1 4/5, EM 0  <- worst of q3
}


def test_adversarial_scores_take_the_worst_variant_per_original_question() -> None:
    scores = adversarial_scores(ADVERSARIAL_PREDICTIONS, ADVERSARIAL)
    assert scores["f1"] == pytest.approx(100 * (0.5 + 1 + 0.8) / 3)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["original_f1"] == pytest.approx(100.0) and scores["original_exact_match"] == pytest.approx(100.0)
    assert scores["originals"] == 3 and scores["missing"] == 0
    # An unanswered variant scores 0 and becomes its original's worst.
    unanswered = adversarial_scores(_without(ADVERSARIAL_PREDICTIONS, "q3-x"), ADVERSARIAL)
    assert unanswered["f1"] == pytest.approx(100 * (0.5 + 1 + 0) / 3) and unanswered["missing"] == 1


def test_adversarial_scores_follow_the_official_rule_where_the_worst_of_all_would_not() -> None:
    """Jia & Liang's script: the original counts only without variants; else the variant of lowest F1, the first in
    file order on ties (not the lower EM); an unanswered variant scores 0."""
    references = {
        "a": ["Paris"],  # no variants: its own scores
        "b": ["red barn"], "b-1": ["red barn"],  # the original is wrong, its variant right: the variant counts
        "c": ["red barn"], "c-1": ["red barn"], "c-2": ["red barn"],  # variants tied on F1 1: the first, EM 1
        "d": ["blue sky"], "d-1": ["blue sky"], "d-2": ["blue sky"],  # d-2 unanswered: 0
    }
    predictions = {
        "a": "paris",  # F1 1, EM 1
        "b": "green field", "b-1": "the red barn",  # b: F1 0; b-1: F1 1, EM 1
        "c": "red barn", "c-1": "red barn", "c-2": "barn red",  # c-1: F1 1, EM 1; c-2: F1 1, EM 0
        "d": "blue sky", "d-1": "blue",  # d-1: P 1, R 1/2: F1 2/3
    }
    scores = adversarial_scores(predictions, references)
    # a: (1, 1); b: b-1 (1, 1) although b scores 0; c: c-1 (1, 1); d: d-2 (0, 0)
    assert scores["f1"] == pytest.approx(100 * 3 / 4) and scores["exact_match"] == pytest.approx(100 * 3 / 4)
    assert scores["originals"] == 4 and scores["missing"] == 1
    assert scores["original_f1"] == pytest.approx(100 * 3 / 4)  # a, c, d right; b wrong
    # The tie is resolved by file order: with c-2 first, its EM 0 counts.
    reordered = {q: references[q] for q in ["a", "b", "b-1", "c", "c-2", "c-1", "d", "d-1", "d-2"]}
    assert adversarial_scores(predictions, reordered)["exact_match"] == pytest.approx(100 * 2 / 4)


def test_adversarial_files_are_detected_by_variants_of_present_ids() -> None:
    assert is_adversarial(ADVERSARIAL)
    assert not is_adversarial(["q1", "q2"])
    assert not is_adversarial(["a-1", "b-2"])  # dashes, but no original alongside


def _squad_file(references: dict[str, list[str]]) -> dict:
    qas = [{"id": q, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in texts]}
           for q, texts in references.items()]
    return {"version": "1.1", "data": [{"title": "adv", "paragraphs": [{"context": "c", "qas": qas}]}]}


def test_evaluate_cli_scores_adversarial_files_the_official_way(tmp_path: Path) -> None:
    data = _write_json(tmp_path / "sample1k-HCVerifyAll.json", _squad_file(ADVERSARIAL))
    result = _run_evaluate(data, _write_json(tmp_path / "p.json", ADVERSARIAL_PREDICTIONS))
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["f1"] == pytest.approx(100 * 2.3 / 3) and scores["original_f1"] == pytest.approx(100.0)
    assert scores["originals"] == 3
    # Variants whose originals are absent are plain questions unless --adversarial says otherwise.
    variants_only = {"z-1": ["red barn"], "z-2": ["red barn"]}
    data = _write_json(tmp_path / "variants.json", _squad_file(variants_only))
    predictions = _write_json(tmp_path / "pv.json", {"z-1": "red barn", "z-2": "barn"})
    assert json.loads(_run_evaluate(data, predictions).stdout) == pytest.approx({"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2})
    forced = json.loads(_run_evaluate(data, predictions, "--adversarial").stdout)
    assert forced["f1"] == pytest.approx(100 * 2 / 3) and forced["originals"] == 1


# --------------------------------------------------------------------------- SQuAD v2

V2_REFERENCES = {"q1": ["a b"], "q2": [], "q3": ["c"], "q4": []}
V2_ANSWERS = {"q1": "a b", "q2": "x", "q3": "c d", "q4": "y"}  # the best non-null answers
V2_MARGINS = {"q1": -2.0, "q2": -1.0, "q3": 0.5, "q4": 3.0}  # null score minus best span score


def test_squad_v2_null_rule_breakdown_and_best_threshold() -> None:
    from kd_core.evaluation.squad_metrics import answers_at_threshold, best_null_threshold, squad_v2_scores

    # t = 0: q1, q2 answered (margin <= 0), q3, q4 null. F1: q1 1, q2 0, q3 0 (gold "c"), q4 1 (null and unanswerable).
    at_zero = answers_at_threshold(V2_ANSWERS, V2_MARGINS, 0.0)
    assert at_zero == {"q1": "a b", "q2": "x", "q3": "", "q4": ""}
    scores = squad_v2_scores(at_zero, V2_REFERENCES)
    assert scores["f1"] == pytest.approx(50.0) and scores["HasAns_f1"] == pytest.approx(50.0)
    assert scores["NoAns_f1"] == pytest.approx(50.0) and (scores["HasAns_total"], scores["NoAns_total"]) == (2, 2)
    # All null: 2 of 4. Answering in margin order: q1 +1 (3), q2 -1 (2), q3 +2/3 (F1 of "c d" vs "c"), q4 -1:
    # the best is 3 of 4 after q1, at t = -2. EM: q3 adds 0; the same best.
    assert best_null_threshold(V2_ANSWERS, V2_MARGINS, V2_REFERENCES) == (pytest.approx(75.0), -2.0)
    assert best_null_threshold(V2_ANSWERS, V2_MARGINS, V2_REFERENCES, "exact_match") == (pytest.approx(75.0), -2.0)
    # Answering nothing is best when every question is unanswerable.
    none = best_null_threshold({"q2": "x"}, {"q2": -1.0}, {"q2": []})
    assert none == (pytest.approx(100.0), -2.0)
