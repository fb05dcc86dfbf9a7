"""Span decoding: legality rules, top-K order, text mapping, best over windows."""

import pytest
import torch

from kd_core.evaluation.decode import (
    Span,
    batch_top_k_spans,
    best_span,
    predict_answers,
    span_text,
    top_k_spans,
    whole_words,
)
from kd_core.io.errors import ConfigError

NEG = -100.0


def test_best_span_respects_order_length_and_passage():
    start = torch.tensor([9.0, 1.0, 5.0, 0.0, 4.0])  # position 0 ([CLS]) is not passage
    end = torch.tensor([9.0, 6.0, 0.0, 3.0, 1.0])
    passage = torch.tensor([False, True, True, True, True])
    # best unconstrained would be (0, 0) = 18, but 0 is not passage; (2, 1) is start > end.
    # legal: (1,1)=7, (2,3)=8, (2,4)=6, (1,3)=4, (4,4)=5, (2,2)=5 ...; best is (2, 3) = 8
    assert best_span(start, end, passage, max_answer_length=30) == Span(2, 3, 8.0)
    # with max length 1 only single tokens: (1,1)=7 is best
    assert best_span(start, end, passage, max_answer_length=1) == Span(1, 1, 7.0)


def test_top_k_sorted_and_padded():
    start = torch.tensor([0.0, 2.0, 1.0])
    end = torch.tensor([0.0, 0.5, 3.0])
    passage = torch.tensor([False, True, True])
    spans = top_k_spans(start, end, passage, k=5, max_answer_length=5)
    # legal: (1,1)=2.5, (1,2)=5, (2,2)=4 -> only 3 exist
    assert spans == [Span(1, 2, 5.0), Span(2, 2, 4.0), Span(1, 1, 2.5)]
    starts, ends, scores = batch_top_k_spans(start[None], end[None], passage[None], 5, 5)
    assert starts[0].tolist() == [1, 2, 1, -1, -1]
    assert torch.isinf(scores[0, 3:]).all()


def test_no_passage_no_span_and_bad_arguments():
    assert best_span(torch.zeros(3), torch.zeros(3), torch.zeros(3, dtype=torch.bool), 5) is None
    with pytest.raises(ConfigError):
        top_k_spans(torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.bool), k=0, max_answer_length=5)
    with pytest.raises(ConfigError):
        top_k_spans(torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.bool), k=1, max_answer_length=0)


def test_span_text_and_best_answer_over_windows():
    context = "Paris is the capital of France."
    offsets = [[-1, -1], [0, 5], [6, 8], [9, 12], [13, 20], [21, 23], [24, 30], [30, 31]]
    assert span_text(context, offsets, 4, 6) == "capital of France"
    passage = [[False] + [True] * 7, [False] + [True] * 7]
    s1 = [NEG, 5.0, 0, 0, 0, 0, 0, 0]  # window 0: "Paris" scores 5 + 5
    e1 = [NEG, 5.0, 0, 0, 0, 0, 0, 0]
    s2 = [NEG, 0, 0, 0, 6.0, 0, 0, 0]  # window 1: "capital of France" scores 6 + 6
    e2 = [NEG, 0, 0, 0, 0, 0, 6.0, 0]
    answers = predict_answers(["q1", "q1"], {"q1": context}, [offsets, offsets], torch.tensor([s1, s2]),
                              torch.tensor([e1, e2]), torch.tensor(passage), max_answer_length=10)
    assert answers == {"q1": "capital of France"}


def test_single_models_and_ensembles_are_decoded_from_window_log_probabilities():
    import numpy as np
    from datasets import Dataset

    from kd_core.evaluation.predict import ModelOutputs, answers_from_outputs, ensemble_outputs

    context = "Paris is the capital of France."
    offsets = [[-1, -1], [0, 5], [6, 8], [9, 12], [13, 20], [21, 23], [24, 30], [30, 31]]
    examples = Dataset.from_dict({"id": ["q1"], "context": [context]})
    features = Dataset.from_dict({"example_id": ["q1", "q1"], "offsets": [offsets, offsets]})
    span_mask = np.array([[True] * 8] * 2)
    arrays = {"span_mask": span_mask, "passage_mask": np.array([[False] + [True] * 7] * 2)}
    # Window 0 is sure of "Paris": p = e^5 / (e^5 + 7) = 0.955 at start and end, log-sum -0.09.
    # Window 1 is unsure, its raw logits higher: "capital" 11 against 10 elsewhere, p = e / (e + 7) = 0.280 at
    # start and end ("capital".."capital"), log-sum -2.55; raw logits would pick it (22 > 10).
    window_0 = [0, 5.0, 0, 0, 0, 0, 0, 0]
    window_1 = [10.0, 10, 10, 10, 11.0, 10, 10, 10]
    single = ModelOutputs(np.array([window_0, window_1], np.float32), np.array([window_0, window_1], np.float32))
    assert answers_from_outputs(examples, features, arrays, single, 10) == {"q1": "Paris"}
    # An ensemble of one is the model itself.
    alone = ensemble_outputs([single], span_mask)
    assert answers_from_outputs(examples, features, arrays, alone, 10) == {"q1": "Paris"}


def test_squad_v2_sets_predict_no_answer_when_the_null_score_wins():
    import numpy as np
    from datasets import Dataset

    from kd_core.evaluation.predict import ModelOutputs, scores_from_outputs

    context = "Paris is the capital of France."
    offsets = [[-1, -1], [0, 5], [6, 8], [9, 12], [13, 20], [21, 23], [24, 30], [30, 31]]
    examples = Dataset.from_dict({"id": ["q1", "q2"], "context": [context, context],
                                  "answers": [{"text": ["Paris"], "answer_start": [0]},
                                              {"text": [], "answer_start": []}]})
    features = Dataset.from_dict({"example_id": ["q1", "q2"], "offsets": [offsets, offsets]})
    arrays = {"span_mask": np.ones((2, 8), bool), "passage_mask": np.array([[False] + [True] * 7] * 2)}
    answerable = [0, 6.0, 0, 0, 0, 0, 0, 0]  # "Paris" far above [CLS]
    unanswerable = [6.0, 0, 0, 0, 0, 0, 0, 0]  # [CLS] far above every span
    logits = np.array([answerable, unanswerable], np.float32)
    scores = scores_from_outputs(examples, features, arrays, ModelOutputs(logits, logits), 10)
    assert scores["f1"] == 100.0 and scores["HasAns_f1"] == 100.0 and scores["NoAns_f1"] == 100.0
    assert scores["HasAns_total"] == 1 and scores["NoAns_total"] == 1 and scores["null_threshold"] == 0.0
    # A threshold above q2's margin (2 x (6 - 0) in log-probabilities = 12) makes the model answer it.
    forced = scores_from_outputs(examples, features, arrays, ModelOutputs(logits, logits), 10, null_threshold=12.5)
    assert forced["NoAns_f1"] == 0.0 and forced["f1"] == 50.0


def test_answers_are_whole_words_of_the_passage():
    context = "He played against the Bears. Then 1990s jazz."
    # A span cut inside words at both ends ("ainst the Bea") becomes the words it touches.
    first, last = context.index("ainst"), context.index("Bears") + 3
    assert whole_words(context, first, last) == (context.index("against"), context.index("Bears") + 5)
    offsets = [[-1, -1], [first, first + 5], [first + 6, first + 9], [first + 10, last]]
    assert span_text(context, offsets, 1, 3) == "against the Bears"
    # Punctuation is not a word: a span ending before the full stop does not take it; one on it stays.
    bears = context.index("Bears")
    assert context[slice(*whole_words(context, bears, bears + 5))] == "Bears"
    assert context[slice(*whole_words(context, bears + 5, bears + 6))] == "."
    # Digits are word characters: a piece of "1990s" is the whole token.
    assert context[slice(*whole_words(context, context.index("1990"), context.index("1990") + 4))] == "1990s"
    assert whole_words(context, 3, 3) == (3, 3)
