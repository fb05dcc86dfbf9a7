"""Metrics of the sentence tasks, computed with kept libraries (scikit-learn, scipy), as GLUE does.

Classification, over ``n`` examples with gold ``y`` and predicted ``y_hat``:

* accuracy ``= 1/n sum_i [y_hat_i == y_i]``;
* F1 ``= 2 P R / (P + R)`` of the positive class (label index 1) for two labels, the
  unweighted mean of the per-class F1 ("macro") for more;
* Matthews correlation ``= (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))`` (its
  multi-class generalisation for more labels; 0 when undefined, as scikit-learn returns).

Regression: Pearson's ``r`` of predictions and gold scores and Spearman's ``rho`` (Pearson
on ranks). One departure from scipy: with constant predictions (or constant gold scores)
both are undefined and scipy returns NaN; here they are 0, so that model selection and
sweeps can compare such a model with others.

Every metric is returned in percent (x100), like the SQuAD scores, so one "primary metric"
scale serves every task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")


def classification_scores(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy, F1 and Matthews correlation (percent) of class predictions; see the module doc."""
    if len(predictions) != len(labels) or not len(labels):
        raise ValueError(f"need equally many predictions and labels (> 0), got {len(predictions)} and {len(labels)}")
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef  # 1 s: only where scores are computed

    y_true, y_pred = np.asarray(labels), np.asarray(predictions)
    average = "binary" if num_labels == 2 else "macro"
    return {
        "accuracy": 100.0 * float(accuracy_score(y_true, y_pred)),
        "f1": 100.0 * float(f1_score(y_true, y_pred, average=average, labels=list(range(num_labels)),
                                     zero_division=0.0)),
        "mcc": 100.0 * float(matthews_corrcoef(y_true, y_pred)),
    }


def _defined(value: float) -> float:
    return 0.0 if math.isnan(value) else float(value)


def regression_scores(predictions: Sequence[float], scores: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation (percent) of predicted and gold scores; see the module doc."""
    if len(predictions) != len(scores) or len(scores) < 2:
        raise ValueError(f"need equally many predictions and scores (>= 2), got {len(predictions)} and {len(scores)}")
    from scipy.stats import pearsonr, spearmanr

    y_true, y_pred = np.asarray(scores, np.float64), np.asarray(predictions, np.float64)
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return {"pearson": 0.0, "spearman": 0.0}
    return {
        "pearson": 100.0 * _defined(pearsonr(y_pred, y_true).statistic),
        "spearman": 100.0 * _defined(spearmanr(y_pred, y_true).statistic),
    }
