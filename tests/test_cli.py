"""The `autopilot` command end to end, as a user runs it: real dataset, real sandbox, real
SQLite store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from autopilot_lab.data import PACKAGE_DATASETS
from autopilot_lab.store import Store

AUTOPILOT = str(Path(sys.executable).parent / "autopilot")
ROOT = Path(__file__).resolve().parents[1]


def _autopilot(*args: str, home: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUTOPILOT_HOME": str(home)}
    return subprocess.run([AUTOPILOT, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900, **kw)


def test_diverging_recipe_gets_nan_loss_then_a_repair_then_passes_every_gate(home):
    proc = _autopilot("improve", "examples/tabular_mlp.py:TabularMLP",
                      "--data", "local:529_pollen", "--datasets-dir", str(PACKAGE_DATASETS),
                      "--optimizer", "sgd", "--lr", "10", "--epochs", "40",
                      "--target", "baseline-0.1",
                      "--max-iters", "5", "--quiet", home=home)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    store = Store(home)
    (run,) = store.list_runs()
    its = store.iterations(run["id"])
    first = its[0]["scorecard"]
    assert first.failed_gate == "trainability"
    nan = [h for h in first.hints if h.kind.name == "NAN_LOSS"]
    assert nan and nan[0].priority.name == "P1"
    second = its[1]["candidate"]
    assert second.notes["repairs"][0]["repair"] == "lower_lr"
    assert second.notes["repairs"][0]["hint"] == "NAN_LOSS"
    assert its[-1]["scorecard"].all_gates_passed and its[-1]["scorecard"].targets_met
    report = (Path(run["folder"]) / "report.md").read_text()
    assert "| 2 | 1 | NAN_LOSS | lower_lr | learning rate 10 -> 0.1 |" in report
    assert "## Winning candidate" in report
    data = json.loads((Path(run["folder"]) / "report.json").read_text())
    assert data["chain"][0]["repair"] == "lower_lr"
    assert (Path(run["folder"]) / "best" / "trained_weights.pt").stat().st_size > 0
    # the terminal views of the same run
    runs = _autopilot("runs", home=home)
    assert run["id"] in runs.stdout and "finished" in runs.stdout
    show = _autopilot("show", run["id"], home=home)
    assert "score progression" in show.stdout
    assert "[P1 NAN_LOSS] trainability at recipe.lr" in show.stdout
    assert "winning candidate: iteration" in show.stdout


def test_a_run_killed_mid_iteration_keeps_its_finished_iterations_and_resumes(home):
    env = {**os.environ, "AUTOPILOT_HOME": str(home)}
    proc = subprocess.Popen(
        [AUTOPILOT, "improve", "examples/tabular_mlp.py:TabularMLP", "--data", "sklearn:digits",
         "--lr", "0.01", "--epochs", "2", "--target", "balanced_accuracy>=1.0",
         "--max-iters", "3", "--quiet"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    store = Store(home)
    deadline = time.time() + 300
    run_id = None
    while time.time() < deadline:
        runs = store.list_runs()
        if runs:
            run_id = runs[0]["id"]
            events = [e["type"] for e in store.events(run_id)]
            if events.count("iteration_finished") == 1 and events[-1] == "check_started":
                break
        time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("the run never reached iteration 2")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    db = home / "autopilot.db"
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = Store(home)
    assert [i["n"] for i in store.iterations(run_id)] == [1]
    listed = _autopilot("runs", home=home)
    assert "interrupted" in listed.stdout
    resumed = _autopilot("resume", run_id, "--quiet", home=home)
    assert resumed.returncode in (0, 3), resumed.stderr
    run = store.get_run(run_id)
    assert run["status"] == "finished"
    assert [i["n"] for i in store.iterations(run_id)] == [1, 2, 3]


def test_doctor_says_which_sandbox_layers_are_active(home):
    proc = _autopilot("doctor", home=home)
    assert proc.returncode == 0, proc.stderr
    assert "sandbox layers:" in proc.stdout and "torch" in proc.stdout


def test_bad_input_is_a_one_line_error_not_a_traceback(home):
    proc = _autopilot("improve", "examples/missing.py:Net", "--data", "sklearn:iris", home=home)
    assert proc.returncode == 2
    assert proc.stderr.startswith("autopilot: error: model file examples/missing.py not found")
    assert "Traceback" not in proc.stderr
    proc = _autopilot("improve", "examples/tabular_mlp.py:TabularMLP", "--data", "nope:x",
                      home=home)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = _autopilot("show", "r-does-not-exist", home=home)
    assert proc.returncode == 2 and "autopilot runs" in proc.stderr
