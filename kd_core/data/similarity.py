"""Domain similarity for IMM: TF-IDF over each domain's questions, cosine, normalised over j != i.

Each domain is one TF-IDF document: the concatenation of its questions. With scikit-learn's
defaults (``smooth_idf=True``, ``sublinear_tf=False``, l2-normalised rows) the weight of
term ``t`` in domain ``d`` is ``tf(t, d) * (ln((1 + N) / (1 + df(t))) + 1)``, ``N`` the
number of domains. The raw similarity is the cosine ``c_ij = v_i . v_j``; IMM weights the
knowledge of domain ``j`` for target ``i`` by

    s_ij = c_ij / sum_{k != i} c_ik      (j != i),   s_ii = 0,

so each row sums to one over the other domains. A row whose off-diagonal cosines are all
zero (no shared words) falls back to the uniform ``1 / (N - 1)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from kd_core.io.errors import ConfigError


def cosine_similarity_matrix(questions_by_domain: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Raw cosine similarity ``c_ij`` between the domains' TF-IDF vectors, in mapping order."""
    if len(questions_by_domain) < 2:
        raise ConfigError("domains", "similarity", f"needs at least 2 domains, got {len(questions_by_domain)}")
    for name, questions in questions_by_domain.items():
        if not questions:
            raise ConfigError("domains", f"domain {name!r}", "has no questions")
    documents = [" ".join(questions) for questions in questions_by_domain.values()]
    vectors = TfidfVectorizer().fit_transform(documents)
    return (vectors @ vectors.T).toarray()


def normalise_similarity(cosine: np.ndarray) -> np.ndarray:
    """IMM's weights ``s_ij = c_ij / sum_{k != i} c_ik`` with a zero diagonal (see module doc)."""
    n = cosine.shape[0]
    off_diagonal = cosine * (1.0 - np.eye(n))
    totals = off_diagonal.sum(axis=1, keepdims=True)
    uniform = (1.0 - np.eye(n)) / (n - 1)
    return np.where(totals > 0, off_diagonal / np.where(totals > 0, totals, 1.0), uniform)


def domain_similarity(questions_by_domain: Mapping[str, Sequence[str]]) -> np.ndarray:
    """The IMM weight matrix ``S`` (rows: target domain ``i``; columns: source domain ``j``)."""
    return normalise_similarity(cosine_similarity_matrix(questions_by_domain))
