"""Sentence tasks: metrics by hand, the synthetic generator, example-keyed knowledge, loss terms."""

import math
import re

import numpy as np
import pytest
import torch

from kd_core.data.schema import sentences_to_dataset
from kd_core.data.synthetic_sentences import SENTENCE_TASKS, generate_task, vocabulary
from kd_core.evaluation.sentence_metrics import classification_scores, regression_scores
from kd_core.io.errors import ConfigError, DataError
from kd_core.tasks.sentence import ClassificationTask, RegressionTask, SentenceOutput
from kd_core.tasks.synthetic import synthetic_task


def test_classification_scores_match_hand_computed_values():
    # gold 1 1 1 0 0 0, predicted 1 1 0 0 0 1: TP=2 FN=1 TN=2 FP=1
    scores = classification_scores([1, 1, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0], 2)
    assert scores["accuracy"] == pytest.approx(100 * 4 / 6)
    precision, recall = 2 / 3, 2 / 3
    assert scores["f1"] == pytest.approx(100 * 2 * precision * recall / (precision + recall))
    assert scores["mcc"] == pytest.approx(100 * (2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3))


def test_regression_scores_match_hand_computed_values():
    predictions, gold = [1.0, 2.0, 4.0], [1.0, 3.0, 2.0]
    # Pearson by hand: means 7/3 and 2; deviations (-4/3, -1/3, 5/3) and (-1, 1, 0)
    covariance = (-4 / 3) * -1 + (-1 / 3) * 1 + 0
    r = covariance / math.sqrt((16 / 9 + 1 / 9 + 25 / 9) * 2)
    # Spearman: ranks (1, 2, 3) and (1, 3, 2): 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 24
    scores = regression_scores(predictions, gold)
    assert scores["pearson"] == pytest.approx(100 * r)
    assert scores["spearman"] == pytest.approx(100 * 0.5)
    assert regression_scores([1.0, 1.0, 1.0], gold) == {"pearson": 0.0, "spearman": 0.0}  # undefined -> 0


def test_generator_is_seeded_per_task_and_noise_flips_the_asked_share():
    assert generate_task("sentiment", 50, seed=3)["text_a"] == generate_task("sentiment", 50, seed=3)["text_a"]
    assert generate_task("sentiment", 50, seed=3)["text_a"] != generate_task("sentiment", 50, seed=4)["text_a"]
    clean = generate_task("sentiment", 2000, seed=1, label_noise=0.0)["label"]
    noisy = generate_task("sentiment", 2000, seed=1, label_noise=0.2)["label"]
    flipped = np.mean(np.array(clean) != np.array(noisy))
    assert 0.15 < flipped < 0.25
    for name, info in SENTENCE_TASKS.items():
        examples = generate_task(name, 30)
        assert all(bool(b) == info.pair for b in examples["text_b"])
        assert all((v is not None) == (info.kind == "classification") for v in examples["label"])


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z]+", text.lower()))


def test_noise_free_entailment_labels_follow_the_premise():
    stop = {"a", "was", "in", "on", "by", "something"}
    for row in generate_task("entailment", 300, seed=0, label_noise=0.0):
        missing = (_words(row["text_b"]) - stop) - _words(row["text_a"])
        assert (row["label"] == 1) == bool(missing), row


def test_rating_score_follows_the_adjective():
    ratings = vocabulary()["ratings"]
    for row in generate_task("rating", 200, seed=0):
        words = _words(row["text_a"])
        (adjective,) = words & set(ratings)
        expected = 5 - ratings[adjective] if "not" in words else ratings[adjective]
        assert abs(row["score"] - expected) < 2.0


def test_preference_score_is_half_the_rating_difference_shifted_to_0_5():
    ratings = vocabulary()["ratings"]

    def rated(text: str) -> float:
        words = _words(text)
        (adjective,) = words & set(ratings)
        return 5 - ratings[adjective] if "not" in words else ratings[adjective]

    errors = [row["score"] - (rated(row["text_a"]) - rated(row["text_b"]) + 5) / 2
              for row in generate_task("preference", 300, seed=0)]
    assert max(abs(e) for e in errors) < 1.5 and abs(sum(errors) / len(errors)) < 0.1  # only the ratings' noise


def test_split_keeps_a_sentence_pair_on_one_side():
    task = synthetic_task("entailment")
    rows = [{"id": f"e{i}", "task": "entailment", "text_a": f"p{i % 5}", "text_b": "h", "label": 0} for i in range(20)]
    train, dev = task.split(sentences_to_dataset(rows), 0.4, seed=0)
    assert not {(r["text_a"], r["text_b"]) for r in train} & {(r["text_a"], r["text_b"]) for r in dev}
    assert len(train) + len(dev) == 20


def _features(ids):
    return sentences_to_dataset([{"id": i, "task": "t", "text_a": "x", "label": 0} for i in ids]).rename_column(
        "id", "example_id")


def test_classification_merge_keeps_member_logits_aligned_by_example_id():
    task = ClassificationTask("t", ("no", "yes"))
    members = []
    for logits in ([[0.0, 1.0], [2.0, 0.0]], [[1.0, 0.0], [0.0, 3.0]]):
        members.append(_member_table(task, ["a", "b"], np.array(logits, np.float32)))
    merged = task.merge(members, None, None, None)
    arrays = task.knowledge_arrays(merged, _features(["b", "a"]))  # another order: rows follow the features
    assert arrays["teacher_logits"].shape == (2, 2, 2)
    np.testing.assert_allclose(arrays["teacher_logits"][0], [[2.0, 0.0], [0.0, 3.0]])
    np.testing.assert_allclose(arrays["teacher_logits"][1], [[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(DataError, match="no knowledge for 1"):
        task.knowledge_arrays(merged, _features(["a", "c"]))
    with pytest.raises(DataError, match="task 't', not 'u'"):
        ClassificationTask("u", ("no", "yes")).knowledge_arrays(merged, _features(["a"]))


def _member_table(task, ids, logits):
    import pyarrow as pa

    from kd_core.knowledge.table import METADATA_KEY, fixed, with_metadata

    table = pa.table({"example_id": pa.array(ids), "gold": pa.array([True] * len(ids)),
                      "logits": fixed(logits.astype(np.float16), pa.float16())})
    return with_metadata(table, {METADATA_KEY: task._member_meta(1)})


def test_soft_term_averages_member_probabilities_with_tau_squared():
    task = ClassificationTask("t", ("no", "yes"))
    student = torch.tensor([[0.5, -0.5]])
    teachers = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])
    tau = 2.0
    # by hand: q = mean of softmax(t_n / tau); loss = tau^2 * -sum q log softmax(z / tau)
    def softmax(v):
        e = [math.exp(x / tau) for x in v]
        return [x / sum(e) for x in e]
    q = [(a + b) / 2 for a, b in zip(softmax([0.0, 1.0]), softmax([2.0, 0.0]))]
    p = softmax([0.5, -0.5])
    expected = tau**2 * -sum(qi * math.log(pi) for qi, pi in zip(q, p))
    value = task.soft_term(tau).fn(SentenceOutput(student), {"teacher_logits": teachers})
    assert float(value[0]) == pytest.approx(expected, rel=1e-5)


def test_hard_terms_skip_examples_without_gold_and_regression_soft_term_uses_the_members_mean():
    classification = ClassificationTask("t", ("no", "yes"))
    logits = torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    loss = classification.hard_term().fn(SentenceOutput(logits), {"label": torch.tensor([0, -1])})
    assert float(loss[0]) == pytest.approx(-math.log(1 / (1 + math.e)), rel=1e-5)
    assert float(loss[1]) == 0.0
    regression = RegressionTask("r")
    out = SentenceOutput(torch.tensor([[1.0], [2.0]]))
    hard = regression.hard_term().fn(out, {"score": torch.tensor([3.0, float("nan")])})
    assert hard.tolist() == [4.0, 0.0]
    soft = regression.soft_term(1.0).fn(out, {"teacher_values": torch.tensor([[0.0, 1.0], [4.0, 6.0]])})
    assert soft.tolist() == pytest.approx([(1 - 0.5) ** 2, (2 - 5.0) ** 2])


def test_bad_task_definitions_are_refused():
    with pytest.raises(ConfigError, match="at least 2 distinct labels"):
        ClassificationTask("t", ("yes", "yes"))
    with pytest.raises(ConfigError, match="primary_metric"):
        RegressionTask("r", primary_metric="accuracy")
    with pytest.raises(ConfigError, match="unknown synthetic task"):
        synthetic_task("nope")
