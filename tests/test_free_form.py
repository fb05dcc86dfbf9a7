"""Free-form answers (NarrativeQA): ROUGE-L span labels by hand, BLEU/ROUGE-L against the libraries, a run end to end."""

import json
import math

import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from kd_core.data.free_form import best_rouge_span, load_free_form, rouge_l, rouge_tokens
from kd_core.evaluation.free_form_metrics import free_form_scores
from kd_core.io.errors import DataError


def test_the_label_is_the_span_of_highest_rouge_l_against_any_reference():
    context = "Jack buried the gold under the old oak, far from the river."
    # Reference "under an old oak tree" (5 tokens). Span "under the old oak" (4): LCS = under, old, oak = 3,
    # P = 3/4, R = 3/5, F = 2 * .75 * .6 / 1.35 = 0.6667; "under the old oak far" would have P = 3/5: lower;
    # "old oak" (2): P = 1, R = 2/5, F = 0.5714.
    start, end, score = best_rouge_span(context, ["under an old oak tree"], max_answer_words=8)
    assert context[start:end] == "under the old oak" and score == pytest.approx(2 / 3)
    # A second reference can win: "the gold" matches exactly (F = 1).
    start, end, score = best_rouge_span(context, ["under an old oak tree", "The gold!"], max_answer_words=8)
    assert context[start:end] == "the gold" and score == 1.0
    # Spans are at most max_answer_words tokens.
    start, end, _ = best_rouge_span(context, ["jack buried the gold under the old oak"], max_answer_words=3)
    assert len(rouge_tokens(context[start:end])) == 3


def test_our_rouge_l_is_rouge_scores():
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for candidate, reference in [("the cat sat on the mat", "a cat was on the mat"), ("Over it!", "over  IT"),
                                 ("no overlap", "none at all"), ("x y z", "z y x")]:
        ours = rouge_l([t for t, _, _ in rouge_tokens(candidate)], [t for t, _, _ in rouge_tokens(reference)])
        assert ours == pytest.approx(scorer.score(reference, candidate)["rougeL"].fmeasure)


PREDICTIONS = {"q1": "the cat sat on the mat", "q2": "a dog", "q3": "in the garden behind the house"}
REFERENCES = {"q1": ["the cat sat on a mat", "a cat was sitting on the mat"], "q2": ["the dog"],
              "q3": ["behind the house", "in the back garden"]}


def test_bleu_and_rouge_l_are_the_libraries_numbers():
    scores = free_form_scores(PREDICTIONS, REFERENCES)
    ids = list(REFERENCES)
    hypotheses = [PREDICTIONS[q] for q in ids]
    streams = [[REFERENCES[q][0] for q in ids], [REFERENCES[q][1] if len(REFERENCES[q]) > 1 else None for q in ids]]
    assert scores["bleu_1"] == pytest.approx(BLEU(max_ngram_order=1).corpus_score(hypotheses, streams).score)
    assert scores["bleu_4"] == pytest.approx(BLEU().corpus_score(hypotheses, streams).score)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [max(scorer.score(r, PREDICTIONS[q])["rougeL"].fmeasure for r in REFERENCES[q]) for q in ids]
    assert scores["rouge_l"] == pytest.approx(100 * sum(rouge) / 3)
    assert 0 < scores["bleu_4"] < scores["bleu_1"] < 100


def test_bleu_1_by_hand():
    # One question: hypothesis "a b", reference "a b c": unigram precision 1, brevity penalty exp(1 - 3/2).
    scores = free_form_scores({"q": "a b"}, {"q": ["a b c"]})
    assert scores["bleu_1"] == pytest.approx(100 * math.exp(1 - 3 / 2), rel=1e-4)


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_a_free_form_file_loads_with_span_labels_and_keeps_the_written_answers(tmp_path):
    from kd_core.data.loaders import load_examples

    path = _write(tmp_path / "narrative.jsonl", [
        {"id": "n1", "context": "Jack buried the gold under the old oak.", "question": "Where?",
         "answers": ["under an old oak tree"]},
        {"id": "n2", "context": "Mary sailed to Spain in May.", "question": "When?", "answers": ["in may", "May"]}])
    ds = load_examples(str(path))
    assert ds["references"] == [["under an old oak tree"], ["in may", "May"]]
    assert [a["text"] for a in ds["answers"]] == [["under the old oak"], ["in May"]]
    context = ds[1]["context"]
    assert context[ds[1]["answers"]["answer_start"][0]:].startswith("in May")
    bad = _write(tmp_path / "bad.jsonl", [{"id": "x", "context": "abc", "question": "q", "answers": ["zzz"]}])
    with pytest.raises(DataError, match=r"line 1 \(id 'x'\): no context span shares a word"):
        load_free_form(bad)
    with pytest.raises(DataError, match="line 1"):
        load_free_form(_write(tmp_path / "empty.jsonl", [{"id": "x", "context": "abc", "question": "q", "answers": []}]))


def test_a_reader_trained_on_free_form_answers_is_scored_with_bleu_and_rouge_l(tmp_path):
    from jobs.distill import DistillConfig, workspace
    from kd_core.data.synthetic import generate
    from kd_core.engine.local import run_locally
    from kd_core.methods.a2d import A2DSettings, a2d_recipe

    # Synthetic questions whose written answers paraphrase the span ("it was X").
    rows = [{"id": ex["id"], "context": ex["context"], "question": ex["question"],
             "answers": [f"it was {ex['answers']['text'][0]}"]} for ex in generate(n_per_domain=12, seed=0)]
    config = DistillConfig(train=str(_write(tmp_path / "train.jsonl", rows)), vocab_size=400, teacher_epochs=1.0,
                           epochs=1.0, run_dir=str(tmp_path / "run"))
    ws = workspace(config)
    assert all(written[0].startswith("it was ") for written in ws.examples("train")["references"])
    results = run_locally(a2d_recipe(A2DSettings(members=1, teacher_epochs=1.0, epochs=1.0, baseline=False), ws), ws)
    scores = results["eval-student-dev"]["scores"]
    assert {"bleu_1", "bleu_4", "rouge_l", "f1"} <= set(scores)
    assert all(0 <= scores[k] <= 100 for k in ("bleu_1", "bleu_4", "rouge_l"))
