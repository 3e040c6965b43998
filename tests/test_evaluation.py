"""The split protocol (issue 20, docs/evaluation.md): train fits, valid decides, test is
scored once by the parent, for the candidate already chosen."""

from __future__ import annotations

import json
import re

import pytest

from autopilot_lab import api, data
from autopilot_lab.agents.base import Agent
from autopilot_lab.candidate import Recipe
from autopilot_lab.store import Store
from tests.llm_server import ScriptedLLMServer, answer
from tests.test_llm_agent import IMPLEMENTED, KEY, point_at, scaled_tanh_model

RECIPE = Recipe(lr=0.01, epochs=3)

# Perfect on the valid rows it holds (looked up by their features), inverted everywhere
# else in eval mode: the best candidate valid can see, the worst on test. It trains and
# passes every gate like an honest MLP (train mode is plain).
LOOKUP = '''import torch
from torch import nn


class Lookup(nn.Module):
    def __init__(self, n_features: int, n_outputs: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, 16), nn.ReLU(),
                                 nn.Linear(16, n_outputs))
        self.register_buffer("rows", torch.tensor(ROWS, dtype=torch.float32))
        self.register_buffer("labels", torch.tensor(LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.training:
            return out
        near = ((x[:, None, :] - self.rows[None]) ** 2).sum(-1).min(dim=1)
        known = near.values < 1e-8
        onehot = nn.functional.one_hot(self.labels[near.indices], out.shape[1]).float()
        return torch.where(known[:, None], 20.0 * onehot, -out)
'''

HONEST = '''import torch
from torch import nn


class Honest(nn.Module):
    def __init__(self, n_features: int, n_outputs: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, 16), nn.ReLU(),
                                 nn.Linear(16, n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
'''


class Scripted(Agent):
    """Proposes the given (label, source, entry) in order, with RECIPE (a test double of an
    agent: the candidates run for real)."""

    name = "scripted"

    def __init__(self, sources):
        self.sources = sources

    def propose(self, objective, journal, hints, keeps):
        label, source, entry = self.sources[len(journal)]
        return objective.initial_candidate().replace(
            files={"model.py": source}, entry=entry, recipe=RECIPE,
            notes={"agent": self.name, "summary": label})


def test_valid_chooses_and_test_is_read_once_for_the_chosen_candidate(home, monkeypatch):
    task = data.load_task("sklearn:iris")
    X_valid, y_valid = task.part("valid")
    lookup = (LOOKUP.replace("ROWS", json.dumps(X_valid.astype(float).tolist()))
              .replace("LABELS", json.dumps(y_valid.astype(int).tolist())))
    sources = [("honest", HONEST, "Honest"), ("valid lookup", lookup, "Lookup")]
    monkeypatch.setattr(api, "make_agent", lambda name, **_: Scripted(sources))
    result = api.improve(HONEST, "sklearn:iris", target="balanced_accuracy>=0.999",
                         recipe=RECIPE, agent="scripted", max_iters=2, home=home)

    honest, lookup_it = result.history
    valid = {it.candidate.notes["summary"]: it.scorecard.verdict("metric").evidence["value"]
             for it in result.history}
    assert valid["valid lookup"] == 1.0 > valid["honest"]
    assert result.best is lookup_it and result.targets_met  # valid decides
    test = result.report["test"]
    assert test["scored"] and test["iteration"] == lookup_it.n
    assert test["test_label_reads"] == 1  # the test labels were read once, at the end
    assert test["value"] < 0.5 and test["target_met_on_test"] is False
    assert "met on valid" in test["note"] and "not on test" in test["note"]
    # no scorecard carries a test figure
    for it in result.history:
        assert set(it.scorecard.verdict("metric").evidence["metrics"]) == {"train", "valid"}
    assert "## Test (scored once" in result.report_paths["md"].read_text()


def _figures(metrics_by_part: dict, part: str = "test") -> set[float]:
    return {float(v) for v in (metrics_by_part.get(part) or {}).values()}


def _renderings(value: float) -> set[str]:
    return {f"{value:.4g}", f"{value:.6g}", f"{value:.7g}", repr(value)} - {"0", "1", "1.0"}


def test_no_test_figure_reaches_a_hint_a_keep_or_a_prompt(tmp_path):
    """auto migrate on data: the rules' draft, then the LLM's implementation of the custom
    layer, prompted with the hints, keeps and the objective (Keras' metrics among them)."""
    reply = {"files": {"model.py": IMPLEMENTED}, "summary": "ScaledTanh as alpha * tanh(x)"}
    with ScriptedLLMServer([answer(json.dumps(reply))] * 3, api_key=KEY) as server, \
            pytest.MonkeyPatch.context() as mp:
        point_at(mp, server)
        store = Store(tmp_path / "home")
        try:
            result = api.migrate(scaled_tanh_model(), "sklearn:iris", fit={"epochs": 2},
                                 agent="auto", max_iters=3, store=store)
        finally:
            store.close()
        prompts = [c.prompt for c in server.chats]
    assert prompts and result.history[-1].scorecard.verdict("metric") is not None
    test = result.report["test"]
    assert test["scored"] and test["test_label_reads"] == 1
    keras = test["references"]["Keras"]
    said = "\n".join(
        prompts + [h.to_text() for it in result.history for h in it.scorecard.hints]
        + [k.what for it in result.history for k in it.scorecard.keeps]
        + [json.dumps(it.scorecard.to_dict()) for it in result.history])
    valid_figures = {float(v) for it in result.history
                     if (m := it.scorecard.verdict("metric")) is not None
                     for part in m.evidence.get("metrics", {}).values() for v in part.values()}
    secret = (set(keras.values()) | set(test["metrics"].values())) - valid_figures
    for value in secret:
        for text in _renderings(value):
            assert text not in said, f"test figure {text} leaked"
    assert not re.search(r"\btest (roc_auc|accuracy|balanced_accuracy|rmse|log_loss)", said)


def test_baseline_targets_decide_on_valid_and_read_on_test_at_the_end():
    from autopilot_lab.baseline import hgb_baseline, public
    from autopilot_lab.objectives.target import parse_target

    task = data.load_task("sklearn:breast_cancer")
    base = hgb_baseline(task)
    assert base["metrics"] != base["test_metrics"] and "test_value" in base
    assert not any(k.startswith("test") for k in public(base))
    target = parse_target("baseline-0.02", kind=task.kind, baseline=base)
    assert target.value == pytest.approx(base["value"] - 0.02)


def test_improve_from_a_migration_starts_from_its_chosen_candidate_unchanged(tmp_path):
    """Candidate 0 of `improve --from RUN` is the migration's best as it is (weights, recipe,
    dropout draws): its figures reproduce the migration's exactly, valid and test alike."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    keras_path = tmp_path / "mlp.keras"
    subprocess.run([sys.executable, str(root / "examples" / "make_keras_model.py"),
                    str(keras_path)], check=True, capture_output=True)
    store = Store(tmp_path / "home")
    try:
        migrated = api.migrate(str(keras_path), "sklearn:breast_cancer",
                               fit={"epochs": 3, "batch_size": 32}, max_iters=1, store=store)
        improved = api.improve_from(migrated.run_id, max_iters=1, store=store)
    finally:
        store.close()
    start = improved.history[0]
    assert start.candidate.digest() == migrated.best.candidate.digest()
    assert start.candidate.artifacts == migrated.best.candidate.artifacts  # the weights
    before = migrated.best.scorecard.verdict("metric").evidence
    after = start.scorecard.verdict("metric").evidence
    assert after["metrics"] == before["metrics"] and after["history"] == before["history"]
    assert after["shared_dropout"] == before["shared_dropout"] != []
    assert improved.report["test"]["metrics"] == migrated.report["test"]["metrics"]
    assert start.scorecard.all_gates_passed


def test_an_improve_run_exports_recipe_and_a_train_py_that_runs(home):
    """Like a migration's: best/ holds recipe.json and a train.py that trains the chosen
    candidate (its constructor's sizes filled in, the recipe's preprocessing applied)."""
    import subprocess
    import sys

    import numpy as np

    recipe = Recipe(lr=0.01, epochs=2, preprocessing="standardize")
    result = api.improve("examples/tabular_mlp.py:TabularMLP", "sklearn:iris", target=None,
                         recipe=recipe, max_iters=1, home=home)
    best = result.report_paths["md"].parent / "best"
    assert json.loads((best / "recipe.json").read_text()) == recipe.to_dict()
    task = data.load_task("sklearn:iris")
    np.savez(best / "data.npz", X_train=task.part("train")[0], y_train=task.part("train")[1],
             X_valid=task.part("valid")[0], y_valid=task.part("valid")[1])
    run = subprocess.run([sys.executable, "train.py", "data.npz"], cwd=best,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "epoch 2: valid loss" in run.stdout and (best / "trained_weights.pt").exists()
    assert "INIT = {\n    \"n_features\": 4,\n    \"n_outputs\": 3\n}" in \
        (best / "train.py").read_text()
