"""The ladder on real candidates in the sandbox: fail fast, determinism, typed hints."""

from __future__ import annotations

import json

import pytest

from autopilot_lab.candidate import Recipe
from autopilot_lab.checks import default_ladder
from autopilot_lab.hints import HintKind
from autopilot_lab.objectives.improve import ImproveObjective
from autopilot_lab.sandbox import Limits, Sandbox

FAST = Recipe(lr=0.01, epochs=3, preprocessing="standardize")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    model = "examples/tabular_mlp.py:TabularMLP"
    objective = ImproveObjective(model, "sklearn:breast_cancer", target="roc_auc>=0.9",
                                 recipe=FAST)
    ctx = objective.setup(tmp_path_factory.mktemp("work"), Sandbox(Limits(wall_s=60)))
    ctx.objective = objective
    return ctx


def _candidate(ctx, source=None, **recipe):
    c = ctx.objective.initial_candidate()
    if source is not None:
        c = c.replace(files={"model.py": source})
    return c.replace(recipe=c.recipe.replace(**recipe)) if recipe else c


def test_a_syntax_error_is_rejected_by_tier_0_and_no_later_check_runs(ctx):
    events = []
    bad = _candidate(ctx, "import torch\nclass TabularMLP(torch.nn.Module:\n    pass\n")
    card = default_ladder().score(bad, ctx, on_start=lambda c: events.append(c.name))
    assert events == ["static"]
    assert [v.check for v in card.verdicts] == ["static"]
    assert card.skipped == ("build", "trainability", "stability", "metric")
    (hint,) = card.hints
    assert hint.kind is HintKind.SYNTAX_ERROR and hint.where == "model.py:2"
    assert card.score == 0


def test_the_same_candidate_scored_twice_gives_byte_identical_verdict_json(ctx):
    cand = _candidate(ctx)
    first = default_ladder().score(cand, ctx)
    second = default_ladder().score(cand, ctx)
    assert first.all_gates_passed, first.hints
    assert [v.to_json() for v in first.verdicts] == [v.to_json() for v in second.verdicts]
    assert first.to_json() == second.to_json()
    metric = json.loads(first.verdicts[-1].to_json())
    assert metric["check"] == "metric" and metric["evidence"]["metrics"]["valid"]["roc_auc"] > 0.9
    assert "test" not in metric["evidence"]["metrics"]  # test waits for the final scoring


def test_diverging_learning_rate_is_caught_by_the_probe_before_any_training(tmp_path):
    objective = ImproveObjective("examples/tabular_mlp.py:TabularMLP", "sklearn:diabetes",
                                 target=None, recipe=Recipe(optimizer="sgd", lr=10.0))
    ctx = objective.setup(tmp_path, Sandbox(Limits(wall_s=60)))
    card = default_ladder().score(objective.initial_candidate(), ctx)
    assert card.failed_gate == "trainability"
    assert "metric" in card.skipped
    nan = [h for h in card.hints if h.kind is HintKind.NAN_LOSS]
    assert nan and nan[0].priority.name == "P1" and nan[0].where == "recipe.lr"
    assert "lower the learning rate (now 10)" in nan[0].suggestion


def test_a_detached_layer_gets_a_no_gradient_hint_naming_the_parameter(ctx, mlp_source):
    src = mlp_source.replace("return self.net(x)",
                             "return self.net[-1](self.net[:-1](x).detach())")
    card = default_ladder().score(_candidate(ctx, src), ctx)
    names = {h.where for h in card.hints if h.kind is HintKind.NO_GRADIENT}
    assert names == {"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"}
    assert card.failed_gate == "trainability"


def test_wrong_output_width_is_a_shape_mismatch_at_build(ctx, mlp_source):
    src = mlp_source.replace("nn.Linear(hidden, n_outputs)", "nn.Linear(hidden, 5)")
    card = default_ladder().score(_candidate(ctx, src), ctx)
    assert card.failed_gate == "build"
    (hint,) = [h for h in card.hints if h.kind is HintKind.SHAPE_MISMATCH]
    assert hint.observed == [8, 5] and hint.expected == "[8, 2 or 1]"


def test_forbidden_import_is_an_import_error_with_its_line(ctx, mlp_source):
    card = default_ladder().score(_candidate(ctx, "import subprocess\n" + mlp_source), ctx)
    (hint,) = [h for h in card.hints if h.kind is HintKind.IMPORT_ERROR]
    assert hint.observed == "subprocess" and hint.where == "model.py:1"
    assert card.failed_gate == "static"


def test_a_candidate_that_crashes_the_interpreter_is_a_runtime_error_hint(ctx, mlp_source):
    # dynamic import: the static check cannot see it, the sandbox contains it
    src = mlp_source.replace(
        "super().__init__()",
        "super().__init__()\n        __import__('ctypes').string_at(0)")
    card = default_ladder().score(_candidate(ctx, src), ctx)
    assert card.failed_gate == "build"
    (hint,) = card.hints
    assert hint.kind is HintKind.RUNTIME_ERROR and "signal 11" in str(hint.observed)


def test_an_endless_loop_is_a_resource_limit_hint_and_scoring_goes_on(tmp_path, mlp_source):
    objective = ImproveObjective(mlp_source, "sklearn:iris", target=None, recipe=FAST)
    ctx = objective.setup(tmp_path, Sandbox(Limits(wall_s=8)))
    src = mlp_source.replace("return self.net(x)", "while True:\n            pass")
    card = default_ladder().score(objective.initial_candidate().replace(
        files={"model.py": src}), ctx)
    (hint,) = card.hints
    assert hint.kind is HintKind.RESOURCE_LIMIT and hint.metric == "sandbox wall limit"
    assert card.failed_gate == "build"
