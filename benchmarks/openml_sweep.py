"""The OpenML sweep: per task, a Keras model of the reference fleet trained in TensorFlow (the
TensorFlow baseline), Autopilot's ``migrate`` of it to PyTorch (metric parity), and
scikit-learn's HistGradientBoosting (the classical baseline).

    python -m benchmarks.openml_sweep --source local-suite:../shared/datasets --budget 300

Each task runs in its own child process through the microscheduler (``--workers`` at a time,
``--threads`` each, a wall budget of ``--budget`` seconds); a failure or a timeout is a row
with its error and hints, and the sweep goes on. Rows are appended to the results file as
tasks finish, so a re-run skips what is done. At the end the summary is written
(``openml_sweep.json`` / ``.md``) and the report notebook is executed to HTML. See
docs/sweep.md for the fleet, the budget, the metrics and how to read the report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import results_io

ROOT = Path(__file__).resolve().parents[1]
RESULTS_JSONL = results_io.RESULTS / "openml_sweep.jsonl"
SUMMARY_JSON = results_io.RESULTS / "openml_sweep.json"
REPORT_HTML = results_io.RESULTS / "openml_report.html"
NOTEBOOK = ROOT / "notebooks" / "openml_report.ipynb"
WORKDIR = Path(".autopilot") / "openml_sweep"
RESULTS_ENV = "AUTOPILOT_SWEEP_RESULTS"
MAX_ROWS = 3334  # rows kept per data set: a 60/20/20 split leaves ~2,000 train rows
PARITY_ABS, PARITY_REL = 0.01, 0.02  # ROC AUC / balanced accuracy; relative RMSE
ROUNDING_RUNS = 12  # trainings per miss: the first as the sweep trained it, then with noise
DEFAULT_BUDGET_S = 300.0
DEFAULT_MAX_ITERS = 3
CHAIN_KEYS = ("iteration", "from_iteration", "hint", "repair", "change", "resolved")
ROW_VERSION = 4  # 2: rows carry the TensorFlow re-seed run (the noise floor); 3: Keras' Adam step;
# 4: the split protocol (valid decides, test scored once for the chosen candidate)


# ---------------------------------------------------------------- one task (child process)


def run_task(spec: str, datasets_dir: str | None, home: str, max_iters: int = DEFAULT_MAX_ITERS,
             seed: int = 0, epochs: int | None = None, device: str = "cpu",
             improve: bool = False, source_rows: int | None = None) -> dict[str, Any]:
    """TensorFlow baseline, migrate to PyTorch, HistGradientBoosting on one task -> its row."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    threads = int(os.environ.get("AUTOPILOT_THREADS", "1"))
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from autopilot_lab import api, data
    from autopilot_lab.baseline import hgb_baseline
    from autopilot_lab.metrics import PRIMARY
    from benchmarks import fleet

    t0 = time.perf_counter()
    shutil.rmtree(home, ignore_errors=True)  # a re-run starts clean
    task = data.load_task(spec, datasets_dir=datasets_dir, seed=seed)
    assignment = fleet.assign(task, source_rows)
    fit = fleet.fit_args(task)
    if epochs is not None:
        fit["epochs"] = epochs
    model = fleet.build(task, assignment, seed)
    initial = model.get_weights()
    metric = PRIMARY[task.kind]
    classical = hgb_baseline(task, seed)
    t_hgb = time.perf_counter() - t0
    result = _migrate(api, model, spec, fit, max_iters, datasets_dir, seed, home, device)
    # the run's one test scoring: the candidate chosen on valid, and Keras' test figures
    test = result.report.get("test") or {}
    tf_test = (test.get("references") or {}).get("Keras") or {}
    torch_metrics = test.get("metrics") if test.get("scored") else None
    tf_value = tf_test.get(metric)
    torch_value = torch_metrics.get(metric) if torch_metrics else None
    row = {
        "name": task.name, "spec": spec, "openml_dataset_id": task.openml_dataset_id,
        "openml_task_id": task.openml_task_id, "kind": task.kind, "metric": metric,
        "rows": task.n_rows, "source_rows": source_rows or task.n_rows,
        "features": task.n_features, "arch": assignment.arch, "arch_reason": assignment.reason,
        "fit": fit, "tf": tf_value, "torch": torch_value,
        "classical": classical["test_value"],
        "metrics": {"tf": tf_test or None, "torch": torch_metrics,
                    "classical": classical["test_metrics"]},
        "test_note": test.get("note"),
        "iterations": len(result.history), "run_status": result.status,
        "run_reason": result.reason, "migrate_target_met": result.targets_met,
        "hints": _hints(result), "hint_kinds": _hint_kinds(result),
        "chain": [{k: c.get(k) for k in CHAIN_KEYS} for c in result.report.get("chain", [])],
        "seconds_parts": {"hgb": round(t_hgb, 2),
                          "migrate": round(time.perf_counter() - t0 - t_hgb, 2)},
    }
    row.update(judge(metric, tf_value, torch_value, classical["test_value"]))
    model.set_weights(initial)
    reseed = _keras_reseed(model, fit, task, seed + 1)
    row["metrics"]["tf_reseed"] = reseed
    row.update(noise_floor(metric, tf_value, reseed.get(metric), row["diff"]))
    row["version"] = ROW_VERSION
    if improve and torch_value is not None:
        row["improve"] = _improve(api, result, home, max_iters, metric, tf_value,
                                  classical["test_value"], row.get("noise"))
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def translated_fleet_model(spec: str, datasets_dir: str | None, seed: int,
                           source_rows: int | None):
    """(task, its fleet Keras model, our translation of it, the translated nn.Module class):
    the model a sweep task migrates, rebuilt as ``run_task`` builds it. The class comes from
    executing our translator's own ``model.py`` (not agent code), so it runs in this process."""
    from autopilot_lab import data
    from autopilot_lab.migrate import translate
    from benchmarks import fleet

    task = data.load_task(spec, datasets_dir=datasets_dir, seed=seed)
    model = fleet.build(task, fleet.assign(task, source_rows), seed)
    translation = translate(model)
    namespace: dict[str, Any] = {}
    exec(compile(translation.source, "model.py", "exec"), namespace)
    return task, model, translation, namespace[translation.class_name]


def probe_task(spec: str, datasets_dir: str | None, home: str, seed: int = 0,
               source_rows: int | None = None, **_: Any) -> dict[str, Any]:
    """The short run that sizes a GPU trial: the task's translated model, a few training steps
    on the GPU at the fleet's batch size (the scheduler's child reads the peak memory)."""
    import torch

    from benchmarks import fleet

    task, _, translation, net_class = translated_fleet_model(spec, datasets_dir, seed,
                                                             source_rows)
    net = net_class().to("cuda")
    net.load_state_dict(translation.torch_state_dict())
    opt = torch.optim.Adam(net.parameters())
    X = torch.as_tensor(task.part("train")[0][:fleet.BATCH_SIZE], device="cuda")
    for _ in range(3):
        opt.zero_grad()
        net(X).float().square().mean().backward()
        opt.step()
    return {"probe": spec}


def _migrate(api, model, spec, fit, max_iters, datasets_dir, seed, home, device):
    from autopilot_lab.sandbox import Limits

    limits = Limits(wall_s=240.0)
    if device == "cpu":
        return api.migrate(model, spec, fit=fit, max_iters=max_iters, datasets_dir=datasets_dir,
                           seed=seed, home=home, limits=limits)
    # a GPU run: the same objective as api.migrate, with the harness on the device
    from autopilot_lab.objectives.migrate import MigrateObjective

    path = Path(home) / "models" / f"{model.name}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    objective = MigrateObjective(str(path), spec, fit=fit, datasets_dir=datasets_dir, seed=seed,
                                 device=device)
    return api.run(objective, max_iters=max_iters, home=home, limits=limits)


def _hints(result) -> list[dict[str, Any]]:
    card = result.scorecard
    return [{"kind": h.kind.name, "priority": int(h.priority), "check": h.check,
             "where": h.where, "text": h.to_text()} for h in (card.hints if card else [])]


def _hint_kinds(result) -> list[str]:
    return sorted({h.kind.name for it in result.history for h in it.scorecard.hints})


def _keras_reseed(model, fit: dict, task, seed: int) -> dict[str, float]:
    """The TensorFlow baseline trained again from the same initial weights with another seed
    (shuffling order, dropout masks): migrate's own Keras training, so the same semantics."""
    from autopilot_lab.migrate import keras_fit_config, translate
    from autopilot_lab.migrate.reference import recipe_from_keras
    from autopilot_lab.migrate.shared_masks import shareable
    from autopilot_lab.objectives.migrate import _train_keras

    config = keras_fit_config(model, fit)
    translation = translate(model)
    recipe = recipe_from_keras(config, translation, task.kind)
    return _train_keras(model, config, recipe, task, seed,
                        shareable(model, translation))["test"]


def rounding_spread(spec: str, datasets_dir: str | None, seed: int = 0,
                    source_rows: int | None = None, runs: int = ROUNDING_RUNS,
                    epochs: int | None = None) -> dict[str, Any]:
    """How far the migrated PyTorch model's test metric moves when nothing but float rounding
    changes: the translation trained with the Keras recipe on the shared draws (as the metric
    tier trains it), ``runs`` times, each run but the first with its gradients rounded off
    differently (``harness.training.round_off_gradients``: the size of the difference parity
    measures between Keras' and torch's gradients of one batch). On ill-conditioned data that
    alone flips a ReLU and sends training elsewhere (on Hill_Valley_without_noise the weights
    differ from Keras' by 4e-6 of the largest after one step and by 2e-3 after 14). A wide
    spread cannot tell rounding from a small systematic gap (docs/sweep.md)."""
    import torch

    from autopilot_lab import metrics
    from autopilot_lab.harness import shared_dropout, training
    from autopilot_lab.migrate import keras_fit_config
    from autopilot_lab.migrate.reference import recipe_from_keras
    from autopilot_lab.migrate.shared_masks import shareable
    from benchmarks import fleet

    torch.set_num_threads(1)
    task, model, translation, net_class = translated_fleet_model(spec, datasets_dir, seed,
                                                                 source_rows)
    fit = {**fleet.fit_args(task), **({"epochs": epochs} if epochs else {})}
    recipe = recipe_from_keras(keras_fit_config(model, fit), translation, task.kind)
    shared = {v["module"]: v["salt"] for v in shareable(model, translation).values()}
    arrays = {f"{k}_{p}": v for p in ("train", "valid", "test")
              for k, v in zip("Xy", task.part(p))}
    metric = metrics.PRIMARY[task.kind]
    values = []
    for run in range(runs):
        net = training.tag_logits(net_class())
        net.load_state_dict(translation.torch_state_dict())
        if run:
            training.round_off_gradients(net, torch.Generator().manual_seed(run))
        shared_dropout.install(net, seed, shared)
        prep = training.prepare(arrays, recipe, task.kind)
        torch.manual_seed(seed)
        hist, loss_name = training.fit(net, prep, recipe, task.kind, task.n_outputs, seed=seed)
        pred = training.predict_scores(net, prep.parts["test"][0], loss_name, prep,
                                       from_logits=recipe.from_logits)
        values.append(float(metrics.all_metrics(task.kind, prep.parts["test"][1],
                                                pred)[metric]))
    spread = max(values) - min(values)
    if not metrics.HIGHER_IS_BETTER[metric]:
        spread /= statistics.median(values) or 1.0
    return {"values": [round(v, 6) for v in values], "spread": round(spread, 6)}


def explain_miss(row: dict[str, Any], spread: dict[str, Any]) -> dict[str, Any]:
    """The sweep's own hint on a miss: whether TensorFlow's metric is one PyTorch itself
    reaches, within the parity tolerance, when only float rounding changes
    (``rounding_spread``): then the miss says nothing about the translation."""
    lo, hi = min(spread["values"]), max(spread["values"])
    tf = row["tf"]
    tol = PARITY_REL * abs(tf) if row["metric"] == "rmse" else PARITY_ABS
    within = lo - tol <= tf <= hi + tol
    text = (f"[P4 ROUNDING_NOISE] sweep: TensorFlow's test {row['metric']} {tf:.4g} against "
            f"{lo:.4g}..{hi:.4g}, the range of {len(spread['values'])} PyTorch trainings that "
            f"differ only in the rounding of their gradients (tolerance {tol:.3g}): ")
    spread_text = f"{spread['spread']:.3g}{' relative' if row['metric'] == 'rmse' else ''}"
    text += ("a value PyTorch reaches by float rounding alone, so the difference says "
             "nothing about the translation; nothing to repair" if within else
             f"outside that range, though rounding alone moves PyTorch by {spread_text} "
             f"here; see the other hints and the repairs")
    hint = {"kind": "ROUNDING_NOISE", "priority": 4, "check": "sweep", "where": None,
            "text": text}
    return {"rounding": {**spread, "within": within},
            "hints": [*row.get("hints", []), hint],
            "hint_kinds": sorted({*row.get("hint_kinds", []), "ROUNDING_NOISE"})}


def noise_floor(metric: str, tf: float | None, tf_reseed: float | None,
                diff: float | None) -> dict[str, Any]:
    """How far TensorFlow moves from itself with another seed (relative for errors), and
    whether PyTorch's difference is within the tolerance or that noise, whichever is larger."""
    from autopilot_lab.metrics import HIGHER_IS_BETTER

    if tf is None or tf_reseed is None or not math.isfinite(tf_reseed):
        return {"tf_reseed": tf_reseed, "noise": None, "within_noise": False}
    noise = tf_reseed - tf
    noise = abs(noise / tf if not HIGHER_IS_BETTER[metric] and tf else noise)
    tol = PARITY_ABS if HIGHER_IS_BETTER[metric] else PARITY_REL
    within = diff is not None and abs(diff) <= max(tol, noise) + 1e-9
    return {"tf_reseed": tf_reseed, "noise": round(noise, 6), "within_noise": within}


def _improve(api, result, home, max_iters: int, metric: str, tf: float | None,
             classical: float | None, noise: float | None) -> dict[str, Any]:
    """``improve --from`` the migration, with the classical baseline as target: candidate 0 is
    the migrated candidate as it is (weights, recipe, dropout draws), so ``start`` (its valid
    figure in the improve run) equals ``migrated_valid`` and best-of on valid never goes
    below it. ``value`` is the chosen candidate's test figure, scored once; ``vs_tf`` counts a
    win or a loss only beyond TensorFlow's own re-seed noise."""
    run = api.improve_from(result.run_id, target="baseline+0", max_iters=max_iters,
                           home=home)
    valid = [(it.scorecard.verdict("metric").evidence.get("value")
              if it.scorecard.verdict("metric") else None) for it in run.history]
    migrated = result.best.scorecard.verdict("metric").evidence.get("value")
    test = run.report.get("test") or {}
    value = test.get("value") if test.get("scored") else None
    best = run.best
    return {"start_valid": valid[0], "migrated_valid": migrated,
            "start_reproduced": valid[0] == migrated,
            "valid": best.scorecard.verdict("metric").evidence.get("value")
            if best and best.scorecard.verdict("metric") else None,
            "start": result.report["test"].get("value"), "value": value,
            "chosen_iteration": best.n if best else None, "target_met": run.targets_met,
            "iterations": len(run.history), "hint_kinds": _hint_kinds(run),
            "repairs": [r.get("repair") for it in run.history
                        for r in it.candidate.notes.get("repairs", [])],
            "vs_tf": outcome(metric, value, tf, noise),
            "vs_migrated": outcome(metric, value, result.report["test"].get("value"), 0.0),
            "vs_classical": outcome(metric, value, classical, 0.0)}


def outcome(metric: str, value: float | None, other: float | None,
            noise: float | None) -> str | None:
    """win / tie / loss of ``value`` against ``other``: a tie within the parity tolerance or
    ``noise`` (relative for errors), whichever is larger."""
    from autopilot_lab.metrics import HIGHER_IS_BETTER

    if value is None or other is None or not (math.isfinite(value) and math.isfinite(other)):
        return None
    relative = not HIGHER_IS_BETTER[metric]
    gap = (other - value) / other if relative and other else (
        other - value if relative else value - other)
    band = max(PARITY_REL if relative else PARITY_ABS, noise or 0.0)
    return "tie" if abs(gap) <= band + 1e-9 else "win" if gap > 0 else "loss"


def judge(metric: str, tf: float | None, torch: float | None,
          classical: float | None) -> dict[str, Any]:
    """Parity (|PyTorch - TensorFlow| within 0.01, or 2% relative for errors) and the outcome
    against the classical baseline (win/tie/loss, tie within the same tolerance)."""
    from autopilot_lab.metrics import HIGHER_IS_BETTER

    out: dict[str, Any] = {"diff": None, "parity": False, "vs_classical": None}
    if tf is None or torch is None or not (math.isfinite(tf) and math.isfinite(torch)):
        return out
    relative = not HIGHER_IS_BETTER[metric]
    diff = torch - tf
    out["diff"] = round(diff / tf, 6) if relative and tf else round(diff, 6)
    out["tolerance"] = PARITY_REL if relative else PARITY_ABS
    out["parity"] = abs(out["diff"]) <= out["tolerance"] + 1e-9
    if classical is not None and math.isfinite(classical):
        gap = (classical - torch) / classical if relative and classical else torch - classical
        out["vs_classical"] = ("tie" if abs(gap) <= out["tolerance"] + 1e-9
                               else "win" if gap > 0 else "loss")
    return out


# ---------------------------------------------------------------- the sweep (parent)


def expand(source: str, datasets_dir: str | None = None) -> list[dict[str, Any]]:
    """Task entries of a source: ``{"spec", "name", "datasets_dir", "source_rows",
    "openml_dataset_id"}``; suites through ``data.load_suite``."""
    from autopilot_lab import data

    prefix = source.partition(":")[0].lower()
    if prefix == "local-suite" or prefix == "local":
        folder = source.partition(":")[2] if prefix == "local-suite" else None
        folder = folder if folder not in (None, "", ".") else datasets_dir
        rows = {r["name"]: r for r in data.list_local(folder)}
        specs = data.load_suite(f"local-suite:{folder or ''}", datasets_dir=folder) \
            if prefix == "local-suite" else [source]
        resolved = str(data.datasets_dir(folder))
        out = []
        for spec in specs:
            name = spec.partition(":")[2]
            row = rows.get(name)
            if row is None:
                raise data.DataError(f"no dataset {name!r} in {resolved}")
            out.append({"spec": spec, "name": name, "datasets_dir": resolved,
                        "source_rows": row["n_rows"], "openml_dataset_id":
                            row["openml_dataset_id"]})
        return out
    specs = data.load_suite(source) if prefix == "openml-suite" else [source]
    return [{"spec": s, "name": s, "datasets_dir": None, "source_rows": None,
             "openml_dataset_id": None} for s in specs]


def prepare_local(entries: list[dict[str, Any]], folder: Path, max_rows: int,
                  seed: int) -> str:
    """Copy ``local:`` data sets into the sweep's manifest folder, each subsampled to
    ``max_rows`` rows (stratified by class for classification, at least 3 rows of each class)
    so that every task fits the budget, a regression target standardized (its mean and
    standard deviation over the copy's rows) so that RMSE is in target standard deviations and
    no task's loss scale is in the millions; a copy made before is kept. Returns the folder."""
    import pandas as pd
    import pyarrow.parquet as pq

    from autopilot_lab import data

    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.csv"
    rows = {r["name"]: r for r in data.list_local(folder)} if manifest.exists() else {}
    sources: dict[str, dict[str, dict[str, Any]]] = {}
    for e in entries:
        src = sources.setdefault(e["datasets_dir"], {
            r["name"]: r for r in data.list_local(e["datasets_dir"])})
        row = src[e["name"]]
        target = folder / row["file"]
        if not target.exists():
            df = pd.read_parquet(Path(e["datasets_dir"]) / row["file"])
            if len(df) > max_rows:
                keep = _subsample(df["target"].to_numpy(), row.get("task_type"), max_rows, seed)
                df = df.iloc[keep].reset_index(drop=True)
            if row.get("task_type") == "regression":
                t = df["target"].astype("float64")
                df["target"] = (t - t.mean()) / (t.std() or 1.0)
            df.to_parquet(target.with_suffix(".tmp"))
            target.with_suffix(".tmp").replace(target)
        rows[e["name"]] = {**row, "n_rows": pq.read_metadata(target).num_rows}
    if rows:
        fields = list(next(iter(rows.values())))
        pd.DataFrame([{k: r.get(k) for k in fields} for r in rows.values()]).to_csv(
            manifest.with_suffix(".tmp"), index=False)
        manifest.with_suffix(".tmp").replace(manifest)
    return str(folder)


def _subsample(y: np.ndarray, task_type: str | None, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if task_type != "classification":
        return np.sort(rng.choice(len(y), n, replace=False))
    keep = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        take = min(len(idx), max(3, round(n * len(idx) / len(y))))
        keep.append(rng.choice(idx, take, replace=False))
    return np.sort(np.concatenate(keep))


def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The results file's rows by spec (the last row of a spec wins; a torn line is skipped)."""
    rows: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row["spec"]] = row
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def failure_row(entry: dict[str, Any], status: str, error: str | None,
                seconds: float) -> dict[str, Any]:
    """The row of a task whose child failed or ran out of time."""
    first = (error or "").strip().splitlines()[0][:300] if error else status
    kind = "TIMEOUT" if status == "timeout" else "SWEEP_ERROR"
    return {"name": entry["name"].split(":")[-1], "spec": entry["spec"],
            "openml_dataset_id": entry.get("openml_dataset_id"), "openml_task_id": None,
            "status": status, "error": error, "tf": None, "torch": None, "classical": None,
            "parity": False, "diff": None, "vs_classical": None, "iterations": 0,
            "seconds": round(seconds, 2), "hint_kinds": [kind],
            "hints": [{"kind": kind, "priority": 1, "check": "sweep", "where": None,
                       "text": f"[P1 {kind}] {first}"}]}


def summarize(rows: list[dict[str, Any]], wall_s: float | None = None) -> dict[str, Any]:
    """Parity rate, win/tie/loss against the classical baseline, iterations and time."""
    done = [r for r in rows if r.get("status", "ok") == "ok"]
    parity = [r for r in rows if r.get("parity")]
    wtl = Counter(r.get("vs_classical") for r in done if r.get("vs_classical"))
    iters = [r["iterations"] for r in done if r.get("iterations")]
    secs = [r["seconds"] for r in rows if r.get("seconds") is not None]
    misses = [{"name": r["name"], "metric": r.get("metric"), "diff": r.get("diff"),
               "noise": r.get("noise"), "hint_kinds": r.get("hint_kinds", []),
               "rounding_spread": (r.get("rounding") or {}).get("spread"),
               "within_rounding": (r.get("rounding") or {}).get("within"),
               "status": r.get("status", "ok")}
              for r in rows if not r.get("parity")]
    rounding = [r for r in rows if r.get("rounding")]
    measured = [r for r in done if r.get("noise") is not None]
    noise = {"measured": len(measured),
             "parity_or_within_noise": sum(bool(r.get("parity") or r.get("within_noise"))
                                           for r in measured),
             "median_noise": {m: statistics.median(v) for m, v in _by_metric(measured).items()}}
    by_arch: dict[str, dict[str, int]] = {}
    for r in done:
        a = by_arch.setdefault(r.get("arch", "?"), {"tasks": 0, "parity": 0})
        a["tasks"] += 1
        a["parity"] += bool(r.get("parity"))
    return {
        "tasks": len(rows), "completed": len(done), "failed": len(rows) - len(done),
        "parity": len(parity), "parity_rate": round(len(parity) / len(rows), 4) if rows else None,
        "parity_rate_completed": round(sum(bool(r.get("parity")) for r in done) / len(done), 4)
        if done else None,
        "vs_classical": {k: wtl.get(k, 0) for k in ("win", "tie", "loss")},
        "median_iterations": statistics.median(iters) if iters else None,
        "iterations": dict(sorted(Counter(iters).items())),
        "median_seconds": round(statistics.median(secs), 1) if secs else None,
        "task_seconds_total": round(sum(secs), 1), "wall_seconds": wall_s,
        "hint_kinds": dict(Counter(k for r in rows for k in r.get("hint_kinds", []))
                           .most_common()),
        "by_arch": by_arch, "misses": misses, "noise_floor": noise,
        "rounding": {"misses_measured": len(rounding),
                     "within_rounding": sum(bool(r["rounding"]["within"]) for r in rounding)},
        "parity_rule": f"|torch - tf| <= {PARITY_ABS} (roc_auc, balanced_accuracy), "
                       f"<= {PARITY_REL:.0%} relative (rmse)",
        "improve": summarize_improve(done),
    }


def summarize_improve(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The improve stage: counts of the improved model (test, scored once) against the
    TensorFlow original (beyond its re-seed noise), the migrated model and HGB; whether any
    improved model ended worse on valid than its start, and whether every start reproduced
    the migration."""
    done = [r["improve"] for r in rows if r.get("improve")]
    if not done:
        return None

    def counts(key: str) -> dict[str, int]:
        c = Counter(i.get(key) for i in done if i.get(key))
        return {k: c.get(k, 0) for k in ("win", "tie", "loss")}

    worse = [r["name"] for r in rows if r.get("improve") and _worse_on_valid(r)]
    return {"tasks": len(done), "vs_tf": counts("vs_tf"), "vs_migrated": counts("vs_migrated"),
            "vs_classical": counts("vs_classical"), "worse_on_valid_than_start": worse,
            "start_reproduced": sum(bool(i.get("start_reproduced")) for i in done),
            "rule": "test figures of the candidate chosen on valid; a win or a loss against "
                    "TensorFlow only beyond max(parity tolerance, TensorFlow's re-seed noise)"}


def _worse_on_valid(row: dict[str, Any]) -> bool:
    from autopilot_lab.metrics import HIGHER_IS_BETTER

    imp = row["improve"]
    start, valid = imp.get("start_valid"), imp.get("valid")
    if start is None or valid is None:
        return False
    return valid < start if HIGHER_IS_BETTER[row["metric"]] else valid > start


def _by_metric(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["metric"], []).append(r["noise"])
    return out


def write_summary(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path,
                  settings: dict[str, Any]) -> tuple[Path, Path]:
    """``{"tasks": rows, "summary": ...}`` as JSON, and a markdown table beside it."""
    payload = {"tasks": rows, "summary": summary, "settings": settings,
               "machine": results_io.machine(), "command": " ".join(
                   ["python -m benchmarks.openml_sweep", *sys.argv[1:]]),
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    md = path.with_suffix(".md")
    md.write_text(_markdown(payload))
    return path, md


def _markdown(p: dict[str, Any]) -> str:
    s = p["summary"]
    w = s["vs_classical"]
    lines = ["# OpenML sweep: PyTorch (migrated) vs TensorFlow vs HistGradientBoosting", "",
             f"- tasks: {s['tasks']} ({s['completed']} completed, {s['failed']} failed)",
             f"- parity: {s['parity']} / {s['tasks']} = {s['parity_rate']:.1%} "
             f"({s['parity_rule']})" if s["parity_rate"] is not None else "- parity: -",
             f"- PyTorch vs HistGradientBoosting: {w['win']} win / {w['tie']} tie / "
             f"{w['loss']} loss",
             f"- noise floor (TensorFlow re-trained with another seed): measured on "
             f"{s['noise_floor']['measured']} tasks; parity or within that noise on "
             f"{s['noise_floor']['parity_or_within_noise']}; median noise by metric "
             f"{ {k: round(v, 4) for k, v in s['noise_floor']['median_noise'].items()} }",
             f"- misses where TensorFlow's value is one PyTorch reaches by float rounding "
             f"alone ({ROUNDING_RUNS} trainings differing only in the rounding of their gradients, "
             f"within "
             f"the tolerance): "
             f"{s['rounding']['within_rounding']} of {s['rounding']['misses_measured']}",
             *_improve_lines(s.get("improve")),
             f"- median iterations: {s['median_iterations']}; median seconds per task: "
             f"{s['median_seconds']}; task seconds in all: {s['task_seconds_total']}; wall "
             f"seconds: {s['wall_seconds']}", "",
             "| task | arch | metric | TensorFlow | PyTorch | HGB | diff | TF noise | parity | "
             "iters | seconds | hints |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in p["tasks"]:
        lines.append(f"| {r['name']} | {r.get('arch', '-')} | {r.get('metric', '-')} | "
                     f"{_f(r.get('tf'))} | {_f(r.get('torch'))} | {_f(r.get('classical'))} | "
                     f"{_f(r.get('diff'))} | {_f(r.get('noise'))} | "
                     f"{'yes' if r.get('parity') else 'NO'} | "
                     f"{r.get('iterations')} | {r.get('seconds')} | "
                     f"{', '.join(r.get('hint_kinds', [])) or '-'} |")
    m = p["machine"]
    lines += ["", f"Machine: {m['platform']}, {m['cpus']} CPUs, torch {m.get('torch')}, device "
              f"{m.get('cuda') or 'cpu'}.  ", f"Command: `{p['command']}`  ",
              f"Finished: {p['finished_at']}", ""]
    return "\n".join(lines)


def _improve_lines(imp: dict[str, Any] | None) -> list[str]:
    if not imp:
        return []
    t, m, c = imp["vs_tf"], imp["vs_migrated"], imp["vs_classical"]
    worse = imp["worse_on_valid_than_start"]
    return [f"- improved PyTorch (test, chosen on valid) on {imp['tasks']} tasks: vs the "
            f"TensorFlow original {t['win']} win / {t['tie']} tie / {t['loss']} loss (beyond "
            f"its re-seed noise); vs the migrated model {m['win']} / {m['tie']} / {m['loss']}; "
            f"vs HGB {c['win']} / {c['tie']} / {c['loss']}; worse on valid than its start: "
            f"{', '.join(worse) if worse else 'none'}; start reproduced the migration on "
            f"{imp['start_reproduced']} of {imp['tasks']}"]


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def execute_report(results: Path, html: Path, notebook: Path = NOTEBOOK,
                   timeout_s: int = 600) -> Path:
    """Run the report notebook on a results file (nbclient) and export it as HTML."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    saved = os.environ.get(RESULTS_ENV)
    os.environ[RESULTS_ENV] = str(Path(results).resolve())
    try:
        NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        if saved is None:
            os.environ.pop(RESULTS_ENV, None)
        else:
            os.environ[RESULTS_ENV] = saved
    body, _ = HTMLExporter(exclude_input=True).from_notebook_node(nb)
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(body)
    return html


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="local-suite:../shared/datasets",
                   help="openml:<task>, openml-suite:<id|alias>, local:<name>, "
                        "local-suite:<folder>")
    p.add_argument("--tasks", help="comma-separated names (or specs) to run, of the source's")
    p.add_argument("--limit", type=int, help="at most this many tasks (after --tasks)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                   help="wall seconds per task (the child is killed past it)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--workers", type=int, help="tasks at a time (default: cores / threads)")
    p.add_argument("--threads", type=int, default=1, help="threads per task")
    p.add_argument("--max-iters", type=int, default=DEFAULT_MAX_ITERS)
    p.add_argument("--max-rows", type=int, default=MAX_ROWS)
    p.add_argument("--epochs", type=int, help="override the fleet's epochs (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--improve", action="store_true",
                   help="also improve the migrated model toward the classical baseline")
    p.add_argument("--results", type=Path, default=RESULTS_JSONL, help="rows, one per line")
    p.add_argument("--summary", type=Path, default=SUMMARY_JSON,
                   help="where the summary goes: a .json or .md path or a stem; both files "
                        "are written beside each other")
    p.add_argument("--report", type=Path, default=REPORT_HTML)
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--workdir", type=Path, default=WORKDIR)
    p.add_argument("--retry-failed", action="store_true", help="re-run failed/timed-out tasks")
    p.add_argument("--rerun", action="store_true",
                   help="re-run the --tasks even where a row exists (the new row wins)")
    p.add_argument("--rerun-older", action="store_true",
                   help=f"re-run tasks whose row an older sweep wrote (row version < "
                        f"{ROW_VERSION})")
    p.add_argument("--datasets-dir", help="manifest folder for local: specs")
    args = p.parse_args(argv)
    args.summary = summary_json(args.summary)

    from tqdm import tqdm

    from autopilot_lab.schedule import Inventory, Trial, detect, make_backend

    entries = expand(args.source, args.datasets_dir)
    if args.tasks:
        wanted = {t.strip() for t in args.tasks.split(",") if t.strip()}
        entries = [e for e in entries if e["name"] in wanted or e["spec"] in wanted]
        missing = wanted - {e["name"] for e in entries} - {e["spec"] for e in entries}
        if missing:
            p.error(f"--tasks names not in {args.source}: {', '.join(sorted(missing))}")
    if args.limit is not None:
        entries = entries[:args.limit]
    args.workdir = args.workdir.resolve()
    # the children import benchmarks.* from the repository, whatever their working folder
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT),
                                                             os.environ.get("PYTHONPATH"))))
    done = read_rows(args.results)
    if args.rerun and not args.tasks:
        p.error("--rerun re-runs the tasks named by --tasks; name them")
    todo = [e for e in entries if e["spec"] not in done or args.rerun or (
        args.retry_failed and done[e["spec"]].get("status", "ok") != "ok") or (
        args.rerun_older and done[e["spec"]].get("status", "ok") == "ok"
        and done[e["spec"]].get("version", 1) < ROW_VERSION)]
    found = detect(use_gpus=args.device == "cuda")
    if args.device == "cuda" and not found.gpus:
        p.error("--device cuda: torch sees no CUDA GPU here")
    workers = args.workers or max(1, found.cpu_cores // args.threads)
    inventory = Inventory(min(found.cpu_cores, workers * args.threads), found.gpus)
    # every local task's prepared copy (made once, kept): the runs read it, and so does the
    # rounding spread of a miss found by an earlier invocation
    local = [e for e in entries if e["datasets_dir"]]
    data_dir = prepare_local(local, args.workdir / "data", args.max_rows, args.seed) \
        if local else None
    trials, by_key = [], {}
    for e in todo:
        kwargs = {"spec": e["spec"], "datasets_dir": data_dir if e["datasets_dir"] else None,
                  "home": str(args.workdir / "runs" / e["name"].replace(":", "_")),
                  "max_iters": args.max_iters, "seed": args.seed, "epochs": args.epochs,
                  "device": args.device, "improve": args.improve,
                  "source_rows": e["source_rows"]}
        trials.append(Trial(e["spec"], "benchmarks.openml_sweep:run_task", kwargs,
                            threads=args.threads, gpu=args.device == "cuda",
                            timeout_s=args.budget,
                            probe_target="benchmarks.openml_sweep:probe_task"))
        by_key[e["spec"]] = e
    print(f"{len(entries)} tasks from {args.source}: {len(entries) - len(todo)} done before, "
          f"{len(todo)} to run on {inventory.describe()} ({workers} at a time, "
          f"{args.threads} thread(s) each, budget {args.budget:g} s per task)", flush=True)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="task", dynamic_ncols=True)

    def on_result(res) -> None:
        if res.status == "ok":
            row = {**res.value, "status": "ok"}
        else:
            row = failure_row(by_key[res.key], res.status, res.error, res.seconds)
        append_row(args.results, row)
        bar.set_postfix_str(f"{row['name'][:24]} {'parity' if row.get('parity') else 'MISS'}")
        bar.update(1)

    if trials:
        make_backend(args.backend, inventory).run(trials, on_result=on_result)
    bar.close()
    explain_misses(args, entries, data_dir)
    wall = round(time.perf_counter() - start, 1)
    rows_by_spec = read_rows(args.results)
    rows = [rows_by_spec[e["spec"]] for e in entries if e["spec"] in rows_by_spec]
    summary = summarize(rows, wall)
    summary["wall_seconds_runs"] = _wall_history(args.summary, wall, len(todo))
    if not todo and summary["wall_seconds_runs"]:  # a resume that ran nothing: the figures
        summary["wall_seconds"] = summary["wall_seconds_runs"][-1]["wall_seconds"]  # are theirs
    settings = {"source": args.source, "budget_s": args.budget, "max_iters": args.max_iters,
                "max_rows": args.max_rows, "workers": workers, "threads": args.threads,
                "device": args.device, "backend": args.backend, "epochs": args.epochs,
                "seed": args.seed}
    jpath, mpath = write_summary(rows, summary, args.summary, settings)
    print(f"parity {summary['parity']}/{summary['tasks']}, vs HGB {summary['vs_classical']}, "
          f"median iterations {summary['median_iterations']}, wall {wall} s; wrote {jpath} "
          f"and {mpath}", flush=True)
    if not args.no_report:
        try:
            html = execute_report(args.summary, args.report)
        except Exception as exc:  # the rows and the summary are written: keep them
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
            print(f"report: failed ({type(exc).__name__}: {line}); the summary and the rows "
                  f"are intact in {jpath} and {args.results}", file=sys.stderr)
            return 1
        print(f"report: {html}")
    return 0


def summary_json(path: Path) -> Path:
    """The summary's JSON path for ``--summary`` given as ``x.json``, ``x.md`` or a stem ``x``:
    the JSON and the markdown (``x.md``) never land in one file."""
    return path.with_suffix(".json") if path.suffix in (".md", ".json", "") else \
        path.with_name(path.name + ".json")


def explain_misses(args, entries: list[dict[str, Any]], data_dir: str | None) -> None:
    """Each finished miss without it gets its rounding spread and the sweep's hint (the row
    is appended again, updated: the last row of a task wins)."""
    from tqdm import tqdm

    rows = read_rows(args.results)
    todo = [e for e in entries if (r := rows.get(e["spec"])) and r.get("status", "ok") == "ok"
            and not r.get("parity") and r.get("diff") is not None and "rounding" not in r]
    for e in tqdm(todo, desc="rounding spread of the misses", unit="task"):
        row = rows[e["spec"]]
        spread = rounding_spread(e["spec"], data_dir if e["datasets_dir"] else None,
                                 args.seed, e["source_rows"], epochs=args.epochs)
        append_row(args.results, {**row, **explain_miss(row, spread)})


def _wall_history(summary_path: Path, wall: float, ran: int) -> list[dict[str, Any]]:
    """Wall time of each invocation that ran tasks (a resumed sweep adds one entry)."""
    runs = []
    if summary_path.exists():
        try:
            runs = json.loads(summary_path.read_text())["summary"].get("wall_seconds_runs", [])
        except (json.JSONDecodeError, KeyError):
            runs = []
    return runs + ([{"tasks_run": ran, "wall_seconds": wall}] if ran else [])


if __name__ == "__main__":
    raise SystemExit(main())
