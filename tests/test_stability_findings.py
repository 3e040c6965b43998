"""Tier 4's findings and non-findings (issue 14): noise at inference and a half-precision round
trip are named for what they are; an Embedding over an integer-coded column is no false alarm
(its extreme inputs are the smallest and largest valid ids, not x1e3)."""

from __future__ import annotations

import pytest

from autopilot_lab import data
from autopilot_lab.checks.stability import StabilityCheck, integer_columns
from autopilot_lab.hints import HintKind
from autopilot_lab.objectives.improve import ImproveObjective
from autopilot_lab.sandbox import Sandbox

TEMPLATE = '''import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, n_features: int, n_outputs: int):
        super().__init__()
        self.emb = nn.Embedding(10, 3)
        self.lin = nn.Linear(n_features - 1 + 3, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = self.emb(x[:, 0].long())
        h = torch.cat([codes, x[:, 1:]], dim=1)
        BODY
        return self.lin(h)
'''

CASES = {
    "correct": ("h = h", set()),
    "noise at inference": ("h = h + 1e-5 * torch.randn_like(h)", {HintKind.NONDETERMINISM}),
    "half-precision round trip": ("h = h.half().float()", {HintKind.PRECISION_LOSS}),
}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    task = data.load_task("local:1027_ESL", datasets_dir=data.PACKAGE_DATASETS)
    objective = ImproveObjective(TEMPLATE.replace("BODY", "h = h"), task, target=None)
    return objective, objective.setup(tmp_path_factory.mktemp("stab"), Sandbox())


@pytest.mark.parametrize("label", list(CASES))
def test_stability_names_what_it_finds_and_nothing_else(ctx, label):
    objective, context = ctx
    body, kinds = CASES[label]
    candidate = objective.initial_candidate().replace(
        files={"model.py": TEMPLATE.replace("BODY", body)})
    verdict = StabilityCheck().run(candidate, context)
    assert {h.kind for h in verdict.hints} == kinds, [h.to_text() for h in verdict.hints]
    assert verdict.passed is (not kinds)
    if label == "half-precision round trip":
        (hint,) = verdict.hints
        assert "half" in hint.observed and "float16" in hint.observed


def test_integer_columns_are_found_with_their_valid_range():
    import numpy as np

    X = np.array([[0, 1.5, 3], [9, 2.5, 7], [4, -1.0, 5]], dtype=np.float32)
    assert integer_columns(X) == {"idx": [0, 2], "low": [0.0, 3.0], "high": [9.0, 7.0]}


@pytest.mark.parametrize("device,moved,flagged", [
    ("cpu", 1e-8, True),    # the CPU is deterministic here: any difference is the candidate's
    ("cuda", 1e-8, False),  # a GPU kernel's reordered sum is not a finding ...
    ("cuda", 1e-5, True),   # ... noise a candidate adds at inference is
])
def test_repeat_tolerance_depends_on_the_device(device, moved, flagged):
    import numpy as np

    from autopilot_lab.checks.measured import Measurements
    from autopilot_lab.checks.stability import measured_stability
    from autopilot_lab.harness.wire import pack

    out = np.linspace(-1, 1, 32, dtype=np.float32).reshape(16, 2)
    result = {"out32": pack(out), "again": pack(out + np.float32(moved)),
              "single": pack(out), "half_ops": [], "f64_error": None,
              "extremes": {k: pack(out) for k in ("x1e3", "x-1e3", "zeros")}}
    res = measured_stability(Measurements(result), device)
    assert (res["nondeterministic"] is not None) is flagged, res
