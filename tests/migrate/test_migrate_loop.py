"""migrate end to end: the loop repairs a hand migration until it matches Keras, the run
folder holds what a team ships, and `autopilot verify` gates a candidate folder in CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autopilot_lab import api
from autopilot_lab.hints import HintKind
from autopilot_lab.migrate import translate
from autopilot_lab.sandbox import Limits
from autopilot_lab.store import Store

ROOT = Path(__file__).resolve().parents[2]
AUTOPILOT = str(Path(sys.executable).parent / "autopilot")


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keras") / "bc.keras"
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_keras_model.py"), str(path)],
                   check=True, capture_output=True)
    return path


def _hand_migration(keras_file: Path, folder: Path, **recipe_changes) -> Path:
    """What a person might hand us: the right model and weights, a recipe with slips."""
    import keras

    from autopilot_lab.migrate import keras_fit_config
    from autopilot_lab.migrate.reference import recipe_from_keras

    model = keras.models.load_model(keras_file)
    t = translate(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(t.source)
    torch.save(t.torch_state_dict(), folder / "weights.pt")
    recipe = recipe_from_keras(keras_fit_config(model, {"epochs": 20, "batch_size": 32}), t,
                               "binary").replace(**recipe_changes)
    (folder / "recipe.json").write_text(json.dumps(recipe.to_dict()))
    return folder


def test_a_hand_migration_missing_metric_parity_is_repaired_within_budget(keras_file, tmp_path,
                                                                         home):
    start = _hand_migration(keras_file, tmp_path / "hand", eps=1e-8, epochs=1)
    result = api.migrate(str(keras_file), "sklearn:breast_cancer",
                         fit={"epochs": 20, "batch_size": 32}, start=start, max_iters=4,
                         limits=Limits(wall_s=120))
    first, *_ = result.history
    assert first.scorecard.failed_gate == "parity"
    assert [h.where for h in first.scorecard.hints] == ["recipe.eps"]
    gap = next(it for it in result.history
               if any(h.kind is HintKind.METRIC_GAP for h in it.scorecard.hints))
    hint = next(h for h in gap.scorecard.hints if h.kind is HintKind.METRIC_GAP)
    assert hint.where == "recipe.epochs" and hint.expected == 20
    assert "vs Keras" in str(hint.observed)
    chain = [(c["hint"], c["repair"], c["change"]) for c in result.report["chain"]]
    assert ("IO_MISMATCH", "keras_setting", "recipe eps 1e-08 -> 1e-07 (Keras' value)") in chain
    assert ("METRIC_GAP", "keras_setting", "recipe epochs 1 -> 20 (Keras' value)") in chain
    assert result.targets_met and result.status == "finished"
    best = result.report_paths["md"].parent / "best"
    assert {"model.py", "weights.pt", "train.py", "recipe.json"} <= {p.name for p in
                                                                     best.iterdir()}
    assert "## Parity with Keras" in result.report_paths["md"].read_text()


def test_migrate_and_verify_from_the_command_line(keras_file, tmp_path, home):
    env = {**os.environ, "AUTOPILOT_HOME": str(home)}
    run = subprocess.run([AUTOPILOT, "migrate", str(keras_file), "--data",
                          "sklearn:breast_cancer", "--epochs", "20", "--batch-size", "32",
                          "--max-iters", "2", "--quiet"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "forward outputs, max abs error" in run.stdout
    assert "model.py, weights.pt, train.py and recipe.json written to" in run.stdout
    (row,) = Store(home).list_runs()
    spec = row["spec"] if isinstance(row["spec"], dict) else json.loads(row["spec"])
    assert spec["model_name"] == "breast_cancer_mlp"  # the console's name for the run
    best = Path(row["folder"]) / "best"
    ok = subprocess.run([AUTOPILOT, "verify", str(keras_file), str(best), "--data",
                         "sklearn:breast_cancer", "--epochs", "20", "--batch-size", "32"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert ok.returncode == 0, ok.stdout + ok.stderr[-2000:]
    assert "parity        pass" in ok.stdout and "no hints" in ok.stdout
    # a person "fixes" BatchNorm to torch's defaults: verify fails and says where
    src = (best / "model.py").read_text().replace("eps=0.001, momentum=0.01", "")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("weights.pt", "recipe.json"):
        (broken / name).write_bytes((best / name).read_bytes())
    (broken / "model.py").write_text(src.replace("KerasBatchNorm1d(32, )", "KerasBatchNorm1d(32)"))
    bad = subprocess.run([AUTOPILOT, "verify", str(keras_file), str(broken), "--data",
                          "sklearn:breast_cancer"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert bad.returncode == 1
    assert "[P2 IO_MISMATCH] parity at model.py:bn: BatchNorm epsilon observed 1e-05" in \
        bad.stdout
