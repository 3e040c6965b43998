"""Metrics against hand-computed values, their direction and quality, and the HGB baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autopilot_lab import data, metrics
from autopilot_lab.baseline import hgb_baseline
from autopilot_lab.metrics import MetricError, all_metrics, better, compute, quality

Y_BIN = np.array([0, 0, 1, 1])
P_BIN = np.array([0.1, 0.4, 0.35, 0.8])  # P(class 1)


@pytest.mark.parametrize("scores", [P_BIN, P_BIN[:, None], np.column_stack([1 - P_BIN, P_BIN])])
def test_binary_score_shapes_agree(scores):
    # AUC: of the 4 (negative, positive) pairs only (0.4, 0.35) is misordered -> 3/4.
    assert compute("roc_auc", Y_BIN, scores) == pytest.approx(0.75)
    assert compute("accuracy", Y_BIN, scores) == pytest.approx(0.75)  # predicts 0,0,0,1
    expected = -np.mean(np.log([0.9, 0.6, 0.35, 0.8]))
    assert compute("log_loss", Y_BIN, scores) == pytest.approx(expected)


def test_binary_all_metrics_and_tie():
    got = all_metrics("binary", Y_BIN, P_BIN)
    assert list(got) == ["roc_auc", "accuracy", "log_loss"]
    assert compute("accuracy", [0, 1], [0.5, 0.5]) == 0.5  # a tie predicts the lower label


def test_multiclass_metrics():
    y = np.array([0, 0, 0, 1, 2, 2])
    proba = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1],
                      [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    got = all_metrics("multiclass", y, proba)
    assert list(got) == ["balanced_accuracy", "accuracy", "log_loss"]
    # predictions 0,0,1,1,2,0: recalls 2/3, 1, 1/2
    assert got["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.6, 0.2, 0.8, 0.7, 0.4])))
    assert 0.5 < compute("roc_auc", y, proba) <= 1


def test_float32_softmax_scores_without_warnings():
    """A float32 softmax sums to 1 within ~1e-7: accepted, renormalized, no sklearn warning."""
    import warnings

    import torch

    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.standard_normal((200, 7)) * 5, dtype=torch.float32)
    proba = torch.softmax(logits, dim=1).numpy()
    assert np.abs(proba.astype(np.float64).sum(axis=1) - 1).max() > 1e-9  # not exact
    y = rng.integers(0, 7, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = compute("log_loss", y, proba)
        compute("roc_auc", y, proba)
    exact = torch.softmax(logits.double(), dim=1).numpy()
    assert got == pytest.approx(-np.mean(np.log(exact[np.arange(200), y])), rel=1e-6)


def test_regression_metrics():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([[1.5], [2.0], [2.0], [5.0]])
    got = all_metrics("regression", y, pred)
    assert list(got) == ["rmse", "mae", "r2"]
    assert got["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 1 + 1) / 4))
    assert got["mae"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert got["r2"] == pytest.approx(1 - 2.25 / 5.0)


def test_metric_errors():
    with pytest.raises(MetricError, match=r"unknown metric 'auc'.*did you mean roc_auc"):
        compute("auc", Y_BIN, P_BIN)
    with pytest.raises(MetricError, match="scores have 3 rows but y_true has 4"):
        compute("accuracy", Y_BIN, P_BIN[:3])
    with pytest.raises(MetricError, match="NaN or infinite"):
        compute("roc_auc", Y_BIN, [0.1, np.nan, 0.3, 0.4])
    with pytest.raises(MetricError, match="probabilities in \\[0, 1\\]"):
        compute("log_loss", Y_BIN, [-2.0, 0.5, 1.0, 3.0])
    with pytest.raises(MetricError, match="must sum to 1"):
        compute("log_loss", [0, 1, 2], np.full((3, 3), 0.5))
    with pytest.raises(MetricError, match="single class"):
        compute("roc_auc", [1, 1], [0.2, 0.9])
    with pytest.raises(MetricError, match="label 2 but scores have only 2 class columns"):
        compute("accuracy", [0, 2], [0.2, 0.9])
    with pytest.raises(MetricError, match="integer labels"):
        compute("accuracy", [0.5, 1.0], [0.2, 0.9])
    with pytest.raises(MetricError, match=r"must be \(n,\) or \(n, 1\)"):
        compute("rmse", [1.0, 2.0], np.ones((2, 2)))
    with pytest.raises(MetricError, match="unknown task kind 'ranking'"):
        all_metrics("ranking", Y_BIN, P_BIN)


def test_tables_agree():
    assert set(metrics.PRIMARY) == set(metrics.METRICS_BY_KIND)
    for kind, names in metrics.METRICS_BY_KIND.items():
        assert names[0] == metrics.PRIMARY[kind]
        assert set(names) <= set(metrics.HIGHER_IS_BETTER)


def test_better_follows_direction():
    assert better("roc_auc", 0.9, 0.8) and not better("roc_auc", 0.8, 0.8)
    assert better("rmse", 1.0, 2.0) and not better("log_loss", 0.5, 0.4)
    assert better("r2", 0.1, math.nan) and not better("mae", math.nan, 3.0)


def test_quality():
    assert quality("roc_auc", 0.8) == pytest.approx(0.8)
    assert quality("r2", -3.0) == 0.0
    assert quality("accuracy", 1.0) == pytest.approx(0.999)  # stays below 1
    assert quality("rmse", 2.0, y_std=2.0) == pytest.approx(0.5)
    assert quality("mae", 1.0, y_std=3.0) == pytest.approx(0.75)
    assert quality("log_loss", 0.25) == pytest.approx(0.8)
    assert quality("balanced_accuracy", math.nan) == 0.0
    with pytest.raises(MetricError, match="needs y_std > 0"):
        quality("rmse", 1.0)


def test_hgb_baseline_classification():
    task = data.load_task("local:iris", datasets_dir=data.PACKAGE_DATASETS)
    first, second = hgb_baseline(task, seed=0), hgb_baseline(task, seed=0)
    assert first["model"] == "HistGradientBoostingClassifier"
    assert first["primary"] == "balanced_accuracy"
    assert first["value"] == first["metrics"]["balanced_accuracy"] > 0.85
    assert set(first["metrics"]) == {"balanced_accuracy", "accuracy", "log_loss"}
    assert first["metrics"] == second["metrics"] and first["seconds"] >= 0
    binary = hgb_baseline(data.load_task("sklearn:breast_cancer"))
    assert binary["primary"] == "roc_auc" and binary["value"] > 0.95


def test_hgb_baseline_regression():
    task = data.load_task("local:1027_ESL", datasets_dir=data.PACKAGE_DATASETS)
    result = hgb_baseline(task, seed=1)
    assert result["model"] == "HistGradientBoostingRegressor" and result["primary"] == "rmse"
    assert result["value"] < float(np.std(task.part("test")[1]))  # beats predicting the mean
