"""Featurisation: labels point at the answer, windows overlap, masks, ids and bad settings."""

import pytest

from kd_core.data.features import FeatureConfig, featurize, truncated_questions
from kd_core.data.schema import examples_to_dataset
from kd_core.evaluation.decode import span_text
from kd_core.io.errors import ConfigError
from tests.helpers import example, toy_examples, toy_tokenizer


def test_labels_map_back_to_the_answer_text():
    tok = toy_tokenizer()
    examples = toy_examples()
    features = featurize(examples, tok, FeatureConfig(max_length=48, doc_stride=8))
    assert features["feature_id"] == ["q1#0", "q2#0", "q3#0"]
    for row, ex in zip(features, examples):
        assert len(row["input_ids"]) == 48
        if ex["is_impossible"]:
            assert (row["start_position"], row["end_position"]) == (0, 0)
            continue
        text = span_text(ex["context"], row["offsets"], row["start_position"], row["end_position"])
        assert text == ex["answers"]["text"][0]
        assert row["passage_mask"][row["start_position"]] and row["passage_mask"][row["end_position"]]
        # [CLS] question [SEP] passage [SEP]: question tokens come before passage tokens
        assert row["question_mask"][1] and not row["passage_mask"][1]
        assert row["offsets"][0] == [-1, -1]


def test_long_context_is_windowed_with_overlap_and_cls_label_outside():
    filler = " ".join(f"word{i}" for i in range(60))
    context = f"{filler} The answer is Lyon Rovers indeed."
    ex = examples_to_dataset([example("long", context, "Who is the answer?", "Lyon Rovers")])
    tok = toy_tokenizer(vocab_size=120)
    features = featurize(ex, tok, FeatureConfig(max_length=32, doc_stride=8))
    assert len(features) > 2
    assert features["feature_id"] == [f"long#{i}" for i in range(len(features))]
    labelled = [f for f in features if f["start_position"] > 0]
    assert labelled, "the last window holds the answer"
    assert all(span_text(context, f["offsets"], f["start_position"], f["end_position"]) == "Lyon Rovers" for f in labelled)
    assert features[0]["start_position"] == 0  # the answer is not in the first window
    # consecutive windows overlap by doc_stride tokens: the first window's last passage chars reappear
    first_end = max(o[1] for o in features[0]["offsets"])
    second_start = min(o[0] for o in features[1]["offsets"] if o[0] >= 0)
    assert second_start < first_end


def test_a_question_over_max_query_length_is_cut_to_its_first_tokens_and_counted():
    tok = toy_tokenizer()
    long_question = "What dose of oxaprolin is given to adults " * 4 + "?"
    ex = examples_to_dataset([example("long-q", "The dose is 200 mg.", long_question, "200 mg"),
                              example("short-q", "The dose is 200 mg.", "What dose?", "200 mg")])
    question_ids = tok(long_question, add_special_tokens=False)["input_ids"]
    assert len(question_ids) > 12
    config = FeatureConfig(max_length=48, doc_stride=4, max_query_length=12)
    features = featurize(ex, tok, config)
    long_row, short_row = features[0], features[1]
    kept = [token for token, inside in zip(long_row["input_ids"], long_row["question_mask"]) if inside]
    assert kept == question_ids[:12]  # the first 12 tokens of the question, nothing else
    assert sum(short_row["question_mask"]) == len(tok("What dose?", add_special_tokens=False)["input_ids"])
    assert span_text(ex[0]["context"], long_row["offsets"], long_row["start_position"], long_row["end_position"]) \
        == "200 mg"
    assert truncated_questions(ex, tok, config) == 1
    assert truncated_questions(ex, tok, FeatureConfig(max_length=48, doc_stride=4)) == 0  # 64 keeps it whole


def test_question_longer_than_max_length_is_refused_with_example_named():
    tok = toy_tokenizer()
    long_question = "What dose of oxaprolin is given to adults " * 4 + "?"
    ex = examples_to_dataset([example("too-long", "The dose is 200 mg.", long_question, "200 mg")])
    with pytest.raises(ConfigError) as err:
        featurize(ex, tok, FeatureConfig(max_length=16, doc_stride=2))
    assert "too-long" in err.value.where
    assert "smaller than the question" in err.value.what


@pytest.mark.parametrize("kwargs", [{"max_length": 4}, {"max_length": 32, "doc_stride": 32}, {"doc_stride": -1},
                                    {"max_query_length": 0}])
def test_invalid_window_settings(kwargs):
    with pytest.raises(ConfigError):
        FeatureConfig(**kwargs)
