"""Target parsing: the grammar, baseline arithmetic in both directions, and every error."""

from __future__ import annotations

import json
import math

import pytest

from autopilot_lab import data
from autopilot_lab.baseline import hgb_baseline
from autopilot_lab.objectives.target import Target, TargetError, parse_target

AUC_BASE = {"primary": "roc_auc", "value": 0.85}
RMSE_BASE = {"primary": "rmse", "value": 3.0}


@pytest.mark.parametrize("text, kind, metric, op, value, strict", [
    ("roc_auc>=0.90", "binary", "roc_auc", ">=", 0.90, False),
    (" roc_auc > 0.9 ", "binary", "roc_auc", ">=", 0.9, True),
    ("ACCURACY>=0.8", "multiclass", "accuracy", ">=", 0.8, False),
    ("rmse<=3.1", "regression", "rmse", "<=", 3.1, False),
    ("log_loss<0.3", "multiclass", "log_loss", "<=", 0.3, True),
    ("r2>=-0.5", "regression", "r2", ">=", -0.5, False),
    ("mae<=1e-1", "regression", "mae", "<=", 0.1, False),
])
def test_explicit_targets(text, kind, metric, op, value, strict):
    target = parse_target(text, kind=kind)
    assert (target.metric, target.op, target.value, target.strict) == (metric, op, value, strict)
    assert target.text == text and target.baseline is None


def test_met_and_gap():
    target = parse_target("roc_auc>=0.9", kind="binary")
    assert target.met(0.9) and target.met(0.95) and not target.met(0.85)
    assert target.gap(0.85) == pytest.approx(0.05) and target.gap(0.95) == 0.0
    assert not target.met(math.nan) and target.gap(math.nan) == math.inf
    strict = parse_target("roc_auc>0.9", kind="binary")
    assert not strict.met(0.9) and strict.met(0.9001)
    lower = parse_target("rmse<=3.1", kind="regression")
    assert lower.met(3.0) and not lower.met(3.5)
    assert lower.gap(3.5) == pytest.approx(0.4) and lower.gap(2.0) == 0.0


@pytest.mark.parametrize("text, value", [
    ("baseline+0.01", 0.86), ("baseline-0.02", 0.83), ("baseline", 0.85),
    ("baseline + 0.05", 0.90),
])
def test_baseline_higher_is_better(text, value):
    target = parse_target(text, kind="binary", baseline=AUC_BASE)
    assert (target.metric, target.op, target.baseline) == ("roc_auc", ">=", 0.85)
    assert target.value == pytest.approx(value)


@pytest.mark.parametrize("text, value", [
    ("baseline+0.1", 2.9), ("baseline-0.1", 3.1), ("baseline", 3.0),
])
def test_baseline_lower_is_better(text, value):
    target = parse_target(text, kind="regression", baseline=lambda: RMSE_BASE)
    assert (target.metric, target.op, target.baseline) == ("rmse", "<=", 3.0)
    assert target.value == pytest.approx(value)
    assert target.met(value) and not target.met(value + 0.01)


def test_baseline_callable_only_called_when_used():
    calls = []

    def baseline():
        calls.append(1)
        return AUC_BASE

    parse_target("roc_auc>=0.9", kind="binary", baseline=baseline)
    parse_target(None, kind="binary", baseline=baseline)
    assert calls == []
    parse_target("baseline+0.01", kind="binary", baseline=baseline)
    assert calls == [1]


def test_no_target():
    for text in (None, "", "  "):
        target = parse_target(text, kind="regression")
        assert target.metric == "rmse" and target.op == "<=" and not target.is_set
        assert target.met(1e9) and target.met(math.nan) and target.gap(1e9) == 0.0
    assert parse_target(None, kind="binary").op == ">="


@pytest.mark.parametrize("target", [
    parse_target("baseline-0.02", kind="binary", baseline=AUC_BASE),
    parse_target("rmse<3", kind="regression"),
    parse_target(None, kind="multiclass"),
])
def test_dict_round_trip(target):
    d = json.loads(json.dumps(target.to_dict(), allow_nan=False))
    assert Target.from_dict(d) == target


def test_str_describes_the_bound():
    assert str(parse_target("baseline+0.1", kind="regression", baseline=RMSE_BASE)) \
        == "rmse <= 2.9 (baseline 3)"
    assert str(parse_target(None, kind="binary")) == "no target (roc_auc is reported)"


@pytest.mark.parametrize("text, kind, message", [
    ("auc>=0.9", "binary", r"unknown metric 'auc'; metrics for binary: roc_auc, accuracy, "
                           r"log_loss \(did you mean roc_auc\?\)"),
    ("f1>=0.9", "multiclass", r"unknown metric 'f1'; metrics for multiclass: "
                              r"balanced_accuracy, accuracy, log_loss"),
    ("rmse<=3", "binary", r"rmse does not fit a binary task; metrics for binary"),
    ("roc_auc>=0.9", "regression", r"roc_auc does not fit a regression task"),
    ("roc_auc>=0.9", "multiclass", r"roc_auc is not reported for multiclass tasks"),
    ("rmse>=3", "regression", r"points the wrong way: rmse is lower-is-better, so the bound "
                              r"must use <= or < \(e.g. rmse<=3\)"),
    ("roc_auc<=0.9", "binary", r"roc_auc is higher-is-better, so the bound must use >="),
    ("roc_auc>=1.2", "binary", r"roc_auc lies in \[0, 1\]; it can never be met"),
    ("roc_auc>1", "binary", r"it can never be met"),
    ("rmse<=-1", "regression", r"rmse lies in \[0, inf\]"),
    ("accuracy=0.9", "binary", r"cannot parse target 'accuracy=0.9': expected "
                               r"<metric><op><number>"),
    ("roc_auc>=high", "binary", r"'high' is not a number"),
    ("roc_auc>=nan", "binary", r"must be a finite number"),
    ("baseline+0.01", "binary", r"relative to the HGB baseline, but no baseline was given"),
])
def test_errors(text, kind, message):
    with pytest.raises(TargetError, match=message):
        parse_target(text, kind=kind)


def test_baseline_errors():
    with pytest.raises(TargetError, match="D in baseline\\+D / baseline-D must be >= 0"):
        parse_target("baseline+-0.1", kind="binary", baseline=AUC_BASE)
    with pytest.raises(TargetError, match="must be a dict with 'primary' and a numeric 'value'"):
        parse_target("baseline", kind="binary", baseline={"value": 0.8})
    with pytest.raises(TargetError, match="rmse does not fit a binary task"):
        parse_target("baseline", kind="binary", baseline=RMSE_BASE)
    with pytest.raises(TargetError, match=r"asks for roc_auc >= 1.05.*can never be met"):
        parse_target("baseline+0.2", kind="binary", baseline=AUC_BASE)
    with pytest.raises(TargetError, match=r"asks for rmse <= -2"):
        parse_target("baseline+5", kind="regression", baseline=RMSE_BASE)
    with pytest.raises(TargetError, match="baseline's roc_auc is nan"):
        parse_target("baseline", kind="binary", baseline={"primary": "roc_auc",
                                                          "value": math.nan})
    with pytest.raises(TargetError, match="unknown task kind 'ranking'"):
        parse_target("baseline", kind="ranking", baseline=AUC_BASE)


def test_with_the_real_baseline():
    task = data.load_task("local:penguins", datasets_dir=data.PACKAGE_DATASETS)
    target = parse_target("baseline-0.02", kind=task.kind, baseline=lambda: hgb_baseline(task))
    assert target.metric == "balanced_accuracy" and target.op == ">="
    assert target.value == pytest.approx(target.baseline - 0.02)
    assert target.met(target.baseline)
