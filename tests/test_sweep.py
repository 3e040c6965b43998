"""The OpenML sweep: the fleet's assignment rule and models, parity and win/tie/loss, and a
3-task mini sweep end to end (results file, resume skipping done tasks, the report notebook)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from autopilot_lab.data import task_from_arrays
from benchmarks import fleet, openml_sweep

ROOT = Path(__file__).resolve().parents[1]


def _task(kind: str, n: int = 240, cats: int = 0, floats: int = 4):
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=(n, floats))] +
                        [rng.integers(1, 6, size=(n, 1)) for _ in range(cats)])
    y = {"binary": (X[:, 0] > 0).astype(int), "multiclass": rng.integers(0, 3, n),
         "regression": X[:, 0] * 10 + 50}[kind]
    return task_from_arrays(X, y, name=f"{kind}-{cats}", kind=kind)


def test_the_assignment_rule_follows_categorical_share_then_rows():
    wide = fleet.assign(_task("binary", cats=2, floats=4))
    assert wide.arch == "wide_deep" and wide.categorical == (4, 5)
    assert fleet.assign(_task("binary", cats=1, floats=4)).arch == "mlp"  # 1 of 5 < 25%
    assert fleet.assign(_task("binary"), source_rows=50_000).arch == "resmlp"
    assert fleet.fit_args(_task("binary", n=4000)) == {"epochs": 11, "batch_size": 64}
    assert fleet.fit_args(_task("binary", n=100))["epochs"] == 200


@pytest.mark.parametrize("arch,kind", [("mlp", "multiclass"), ("wide_deep", "binary"),
                                       ("resmlp", "regression")])
def test_every_fleet_model_translates_without_stubs(arch, kind):
    from autopilot_lab.migrate import translate

    task = _task(kind, cats=2)
    a = fleet.Assignment(arch, "test", tuple(fleet.categorical_columns(task.X)))
    model = fleet.build(task, a)
    t = translate(model)
    assert not t.unsupported, t.unsupported
    assert model.output_shape[-1] == (3 if kind == "multiclass" else 1)


def test_parity_is_two_sided_and_relative_for_rmse():
    j = openml_sweep.judge
    assert j("roc_auc", 0.90, 0.895, 0.80) == {
        "diff": -0.005, "parity": True, "vs_classical": "win", "tolerance": 0.01}
    assert not j("roc_auc", 0.90, 0.92, 0.92)["parity"]  # better by more than 0.01: a miss
    assert j("roc_auc", 0.90, 0.92, 0.925)["vs_classical"] == "tie"
    rmse = j("rmse", 10.0, 10.15, 9.0)
    assert rmse["parity"] and rmse["diff"] == pytest.approx(0.015)
    assert rmse["vs_classical"] == "loss"
    assert j("rmse", 10.0, None, 9.0) == {"diff": None, "parity": False, "vs_classical": None}


def test_the_noise_floor_is_tensorflow_against_itself():
    nf = openml_sweep.noise_floor
    assert nf("rmse", 0.20, 0.23, -0.12) == {"tf_reseed": 0.23, "noise": 0.15,
                                              "within_noise": True}
    assert nf("roc_auc", 0.90, 0.905, 0.02)["within_noise"] is False  # 0.02 > 0.01, 0.005
    assert nf("roc_auc", 0.90, None, 0.0)["noise"] is None


def test_summary_counts_failures_as_misses_with_their_hints():
    entry = {"spec": "local:x", "name": "x", "openml_dataset_id": 7}
    rows = [{"name": "a", "spec": "local:a", "metric": "roc_auc", "parity": True,
             "vs_classical": "win", "iterations": 1, "seconds": 10.0, "hint_kinds": [],
             "arch": "mlp"},
            openml_sweep.failure_row(entry, "timeout", "no result within 5 s", 5.0)]
    s = openml_sweep.summarize(rows)
    assert (s["tasks"], s["completed"], s["failed"], s["parity"]) == (2, 1, 1, 1)
    assert s["parity_rate"] == 0.5 and s["vs_classical"] == {"win": 1, "tie": 0, "loss": 0}
    assert s["misses"] == [{"name": "x", "metric": None, "diff": None, "noise": None,
                            "hint_kinds": ["TIMEOUT"], "rounding_spread": None,
                            "within_rounding": None, "status": "timeout"}]
    assert rows[1]["openml_dataset_id"] == 7


def test_a_miss_is_explained_by_the_rounding_spread_or_said_not_to_be():
    row = {"name": "t", "metric": "rmse", "tf": 0.20, "torch": 0.19, "diff": -0.05,
           "hints": [], "hint_kinds": ["OVERFITTING"]}
    inside = openml_sweep.explain_miss(row, {"values": [0.19, 0.1962, 0.1931], "spread": 0.032})
    assert inside["rounding"]["within"] is True  # 0.20 <= 0.1962 + 2% of 0.20
    assert inside["hint_kinds"] == ["OVERFITTING", "ROUNDING_NOISE"]
    text = inside["hints"][-1]["text"]
    assert text.startswith("[P4 ROUNDING_NOISE] sweep: TensorFlow's test rmse 0.2 against "
                           "0.19..0.1962, the range of 3 PyTorch trainings")
    assert "nothing to repair" in text
    outside = openml_sweep.explain_miss({**row, "tf": 0.25},
                                        {"values": [0.19, 0.1962], "spread": 0.032})
    assert outside["rounding"]["within"] is False
    assert "outside that range, though rounding alone moves PyTorch by 0.032 relative" in \
        outside["hints"][-1]["text"]
    auc = openml_sweep.explain_miss({**row, "metric": "roc_auc", "tf": 0.80},
                                    {"values": [0.82, 0.83], "spread": 0.01})
    assert auc["rounding"]["within"] is False  # 0.80 < 0.82 - 0.01


def test_the_results_file_keeps_the_last_row_and_skips_a_torn_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    openml_sweep.append_row(path, {"spec": "local:a", "v": 1})
    openml_sweep.append_row(path, {"spec": "local:a", "v": 2})
    with path.open("a") as fh:
        fh.write('{"spec": "local:b", "v"')  # a sweep killed mid-write
    assert openml_sweep.read_rows(path) == {"local:a": {"spec": "local:a", "v": 2}}


def test_a_mini_sweep_end_to_end_resumes_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    rows, summary = tmp_path / "rows.jsonl", tmp_path / "sweep.json"
    report = tmp_path / "report.html"
    args = ["--source", "local-suite:autopilot_lab/datasets", "--tasks",
            "iris,breast_cancer,1027_ESL", "--epochs", "2", "--max-iters", "1", "--budget",
            "170", "--results", str(rows), "--summary", str(summary), "--report", str(report),
            "--workdir", str(tmp_path / "work")]
    assert openml_sweep.main(args) == 0
    lines = rows.read_text().splitlines()
    assert len(openml_sweep.read_rows(rows)) == 3
    payload = json.loads(summary.read_text())
    names = {r["name"] for r in payload["tasks"]}
    assert names == {"iris", "breast_cancer", "1027_ESL"}
    for r in payload["tasks"]:
        assert r["status"] == "ok", r.get("error")
        assert {"tf", "torch", "classical", "parity", "iterations", "seconds", "hints",
                "metric", "openml_dataset_id", "noise", "tf_reseed"} <= set(r)
    assert {r["metric"] for r in payload["tasks"]} == {"roc_auc", "balanced_accuracy", "rmse"}
    for r in payload["tasks"]:  # every miss carries the sweep's own rounding hint
        assert r["parity"] or ("ROUNDING_NOISE" in r["hint_kinds"] and
                               len(r["rounding"]["values"]) == openml_sweep.ROUNDING_RUNS)
    assert len(lines) == 3 + sum(not r["parity"] for r in payload["tasks"])
    s = payload["summary"]
    assert s["tasks"] == 3 and sum(s["vs_classical"].values()) == 3
    assert s["noise_floor"]["measured"] == 3
    assert payload["command"].startswith("python -m benchmarks.openml_sweep")
    html = report.read_text()
    assert "Every miss, explained by its hints" in html and "plotly" in html
    assert summary.with_suffix(".md").exists()

    capsys.readouterr()
    assert openml_sweep.main(args[:-6] + ["--summary", str(summary), "--workdir",
                                          str(tmp_path / "work"), "--no-report"]) == 0
    assert "3 done before, 0 to run" in capsys.readouterr().out
    assert rows.read_text().splitlines() == lines
    resumed = json.loads(summary.read_text())["summary"]
    assert len(resumed["wall_seconds_runs"]) == 1
    # nothing ran: the wall time stays the one of the run that produced the rows
    assert resumed["wall_seconds"] == resumed["wall_seconds_runs"][0]["wall_seconds"] > 0
