"""The CUDA path of the training harness (run with `pytest -m gpu` on a machine with a GPU)."""

import pytest

from autopilot_lab.checks.metric import MetricCheck
from autopilot_lab.objectives.improve import ImproveObjective
from autopilot_lab.sandbox import Sandbox


@pytest.mark.gpu
def test_the_metric_check_trains_on_cuda_and_matches_the_target(tmp_path):
    objective = ImproveObjective("examples/tabular_mlp.py:TabularMLP", "sklearn:breast_cancer",
                                 target="roc_auc>=0.95", device="cuda",
                                 recipe={"lr": 0.01, "epochs": 20,
                                         "preprocessing": "standardize"})
    ctx = objective.setup(tmp_path, Sandbox())
    verdict = MetricCheck().run(objective.initial_candidate(), ctx)
    assert verdict.passed, [h.to_text() for h in verdict.hints]
    assert verdict.evidence["metrics"]["valid"]["roc_auc"] >= 0.95
