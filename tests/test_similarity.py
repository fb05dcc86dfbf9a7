"""Domain similarity against a TF-IDF case computed by hand."""

import numpy as np
import pytest

from kd_core.data.similarity import cosine_similarity_matrix, domain_similarity
from kd_core.io.errors import ConfigError


def test_similarity_matches_hand_computed_tfidf():
    # Documents: A = "who won who", B = "who lost", C = "what won" (N = 3).
    # idf = ln(4 / (1 + df)) + 1: who, won (df 2) -> 1.287682; lost, what (df 1) -> 1.693147.
    # A = [who 2 * 1.287682, won 1.287682] / norm -> who 0.894427, won 0.447214
    # B = [who 1.287682, lost 1.693147] / 2.127175 -> who 0.605350, lost 0.795970
    # C = [won 1.287682, what 1.693147] / 2.127175 -> won 0.605350, what 0.795970
    # cos(A,B) = 0.894427 * 0.605350 = 0.541443; cos(A,C) = 0.447214 * 0.605350 = 0.270720; cos(B,C) = 0
    questions = {"A": ["who won", "who"], "B": ["who lost"], "C": ["what won"]}
    cosine = cosine_similarity_matrix(questions)
    assert cosine[0, 1] == pytest.approx(0.541443, abs=1e-5)
    assert cosine[0, 2] == pytest.approx(0.270720, abs=1e-5)
    assert cosine[1, 2] == pytest.approx(0.0, abs=1e-12)
    s = domain_similarity(questions)
    # s_ij = c_ij / sum_{k != i} c_ik: row A -> [0, 2/3, 1/3]; B and C only share words with A
    expected = np.array([[0, 2 / 3, 1 / 3], [1, 0, 0], [1, 0, 0]])
    assert np.allclose(s, expected, atol=1e-6)
    assert np.allclose(s.sum(axis=1), 1.0)


def test_domain_sharing_no_words_falls_back_to_uniform():
    s = domain_similarity({"A": ["who won"], "B": ["who lost"], "Z": ["xyz qqq"]})
    assert s[2].tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert s[0, 2] == pytest.approx(0.0)


def test_needs_two_domains_with_questions():
    with pytest.raises(ConfigError):
        domain_similarity({"A": ["who"]})
    with pytest.raises(ConfigError, match="no questions"):
        domain_similarity({"A": ["who won"], "B": []})
