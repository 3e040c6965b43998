"""Task metrics, their direction, and their [0, 1) quality for the score formula.

Labels are 0..k-1 (see ``data.Task``). Classification scores are class probabilities: (n, k),
or for binary tasks also (n,) / (n, 1) holding P(class 1). Predicted labels are the argmax
(ties go to the lower label, so a binary P(class 1) of exactly 0.5 predicts 0). Regression
scores are predictions, (n,) or (n, 1). Bad input raises ``MetricError`` (a ValueError).
"""

from __future__ import annotations

import difflib
import math

import numpy as np
from sklearn.metrics import balanced_accuracy_score, log_loss, r2_score, roc_auc_score

from autopilot_lab.scorecard import QUALITY_CAP

PRIMARY = {"binary": "roc_auc", "multiclass": "balanced_accuracy", "regression": "rmse"}
HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "balanced_accuracy": True,
                    "log_loss": False, "rmse": False, "mae": False, "r2": True}
METRICS_BY_KIND = {  # what all_metrics reports, primary first
    "binary": ("roc_auc", "accuracy", "log_loss"),
    "multiclass": ("balanced_accuracy", "accuracy", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
REGRESSION_METRICS = frozenset(METRICS_BY_KIND["regression"])
PROBABILITY_ATOL = 1e-3  # how far a row of probabilities may sum from 1 (float32 rounding)


class MetricError(ValueError):
    """A metric cannot be computed from the given labels and scores."""


def compute(metric: str, y_true: np.ndarray, scores: np.ndarray) -> float:
    """Value of ``metric`` for labels/targets ``y_true`` and ``scores`` (see module doc)."""
    if metric not in HIGHER_IS_BETTER:
        close = difflib.get_close_matches(metric, list(HIGHER_IS_BETTER), n=2, cutoff=0.5)
        raise MetricError(f"unknown metric {metric!r}; known: {', '.join(HIGHER_IS_BETTER)}"
                          + (f" (did you mean {', '.join(close)}?)" if close else ""))
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores, dtype=np.float64)
    if len(y) == 0:
        raise MetricError(f"{metric}: no rows to score")
    if s.shape[0] != len(y):
        raise MetricError(f"{metric}: scores have {s.shape[0]} rows but y_true has {len(y)}")
    if not np.isfinite(s).all():
        raise MetricError(f"{metric}: scores contain NaN or infinite values")
    if metric in REGRESSION_METRICS:
        return _regression(metric, y.astype(np.float64), _predictions(metric, s))
    labels, proba = _labels(metric, y), _probabilities(metric, s)
    if labels.max() >= proba.shape[1]:
        raise MetricError(f"{metric}: y_true has label {int(labels.max())} but scores have "
                          f"only {proba.shape[1]} class columns")
    return _classification(metric, labels, proba)


def all_metrics(kind: str, y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Every metric of METRICS_BY_KIND[kind]."""
    if kind not in METRICS_BY_KIND:
        raise MetricError(f"unknown task kind {kind!r}; use one of {', '.join(METRICS_BY_KIND)}")
    return {m: compute(m, y_true, scores) for m in METRICS_BY_KIND[kind]}


def better(metric: str, a: float, b: float) -> bool:
    """``a`` is strictly better than ``b``; NaN is never better, and anything beats NaN."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if HIGHER_IS_BETTER[metric] else a < b


def quality(metric: str, value: float, *, y_std: float | None = None) -> float:
    """Map a metric value to [0, QUALITY_CAP] for the score formula, higher is better.

    roc_auc, accuracy, balanced_accuracy, r2: the value, clipped. rmse, mae: 1 / (1 + value /
    y_std), so an error of one target standard deviation gives 0.5. log_loss: 1 / (1 + value).
    NaN gives 0.
    """
    if metric not in HIGHER_IS_BETTER:
        raise MetricError(f"unknown metric {metric!r}; known: {', '.join(HIGHER_IS_BETTER)}")
    if value is None or math.isnan(value):
        return 0.0
    if metric in ("rmse", "mae"):
        if y_std is None or not y_std > 0:
            raise MetricError(f"quality of {metric} needs y_std > 0 (the standard deviation of "
                              f"the target), got {y_std!r}")
        q = 1.0 / (1.0 + value / y_std)
    elif metric == "log_loss":
        q = 1.0 / (1.0 + value)
    else:
        q = value
    return float(min(max(q, 0.0), QUALITY_CAP))


def _labels(metric: str, y: np.ndarray) -> np.ndarray:
    labels = y.astype(np.int64)
    if not np.array_equal(labels, y) or labels.min() < 0:
        raise MetricError(f"{metric}: y_true must hold integer labels 0..k-1")
    return labels


def _probabilities(metric: str, s: np.ndarray) -> np.ndarray:
    if s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 1):
        p1 = s.reshape(-1)
        return np.column_stack([1.0 - p1, p1])
    if s.ndim == 2 and s.shape[1] >= 2:
        return s
    raise MetricError(f"{metric}: classification scores must be (n,), (n, 1) or (n, k); got "
                      f"shape {s.shape}")


def _predictions(metric: str, s: np.ndarray) -> np.ndarray:
    if s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 1):
        return s.reshape(-1)
    raise MetricError(f"{metric}: regression predictions must be (n,) or (n, 1); got shape "
                      f"{s.shape}")


def _classification(metric: str, labels: np.ndarray, proba: np.ndarray) -> float:
    k = proba.shape[1]
    if metric == "accuracy":
        return float(np.mean(proba.argmax(axis=1) == labels))
    if metric == "balanced_accuracy":
        return float(balanced_accuracy_score(labels, proba.argmax(axis=1)))
    if metric == "roc_auc":
        present = np.unique(labels)
        if len(present) < 2:
            raise MetricError("roc_auc: y_true holds a single class; AUC is undefined")
        if k == 2:
            return float(roc_auc_score(labels, proba[:, 1]))
        if len(present) < k:
            missing = sorted(set(range(k)) - set(present.tolist()))
            raise MetricError(f"roc_auc: y_true lacks classes {missing}; one-vs-rest AUC needs "
                              "every class")
        proba = _distribution(metric, proba)
        return float(roc_auc_score(labels, proba, multi_class="ovr", labels=list(range(k))))
    proba = _distribution(metric, proba)  # log_loss
    return float(log_loss(labels, proba, labels=list(range(k))))


def _distribution(metric: str, proba: np.ndarray) -> np.ndarray:
    """``proba`` checked to be class probabilities, then renormalized in float64: a float32
    softmax sums to 1 only within 1e-7, which scikit-learn warns about on every call."""
    if proba.min() < 0 or proba.max() > 1:
        raise MetricError(f"{metric}: scores must be probabilities in [0, 1]; got values in "
                          f"[{proba.min():.4g}, {proba.max():.4g}] (apply softmax/sigmoid)")
    sums = proba.sum(axis=1)
    if np.abs(sums - 1).max() > PROBABILITY_ATOL:
        raise MetricError(f"{metric}: each row of class probabilities must sum to 1; sums range "
                          f"[{sums.min():.4g}, {sums.max():.4g}] (apply softmax)")
    return proba / sums[:, None]


def _regression(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    err = pred - y
    if metric == "rmse":
        return float(np.sqrt(np.mean(err**2)))
    if metric == "mae":
        return float(np.mean(np.abs(err)))
    if len(y) < 2:
        raise MetricError("r2: needs at least two rows")
    return float(r2_score(y, pred))
