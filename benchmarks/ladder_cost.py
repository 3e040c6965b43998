"""The fail-fast claim, measured on the same machine in the same run.

Tiers: what a candidate that fails at each tier costs against the full ladder (a small
workload, so the fixed cost of a tier shows), each ladder run both with warm sandbox children
(started ahead, torch and the harness imported: the default) and with a child started for each
job (``Sandbox(warm=())``). Workloads: how long the trainability probe takes to catch a NaN loss
and dead gradients, as a share of the training run it spares, on a realistic workload (the
largest shared dataset, a training run of minutes)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from autopilot_lab.checks import default_ladder
from autopilot_lab.checks.metric import MetricCheck
from autopilot_lab.checks.trainability import TrainabilityCheck
from autopilot_lab.hints import HintKind
from autopilot_lab.objectives.improve import ImproveObjective
from autopilot_lab.sandbox import Limits, Sandbox
from benchmarks import results_io

MODEL = Path(__file__).resolve().parents[1] / "examples" / "tabular_mlp.py"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _variants(source: str) -> dict[str, tuple[str, dict]]:
    return {
        "fails tier 0 (syntax error)": (source.replace("def forward(self, x",
                                                      "def forward(self x"), {}),
        "fails tier 1 (wrong output width)": (
            source.replace("nn.Linear(hidden, n_outputs)", "nn.Linear(hidden, 7)"), {}),
        "fails tier 3 (NaN loss, SGD lr 10)": (source, {"optimizer": "sgd", "lr": 10.0,
                                                        "preprocessing": "none"}),
        "fails tier 4 (batch-dependent eval)": (
            source.replace("return self.net(x)", "return self.net(x - x.mean(0))"), {}),
        "full ladder (passes every gate)": (source, {}),
    }


def _tiers(source: str, data: str, epochs: int, repeats: int,
           gap: float) -> list[dict[str, Any]]:
    recipe = {"lr": 0.003, "epochs": epochs, "preprocessing": "standardize"}
    objective = ImproveObjective(source, data, entry="TabularMLP", target=None, recipe=recipe)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        contexts = {"warm": objective.setup(Path(tmp) / "warm", Sandbox()),
                    "cold": objective.setup(Path(tmp) / "cold", Sandbox(warm=()))}
        base = objective.initial_candidate()
        for label, (src, changes) in _variants(source).items():
            cand = base.replace(files={"model.py": src}, recipe=base.recipe.replace(**changes))
            row: dict[str, Any] = {"name": label}
            for mode, ctx in contexts.items():
                times, card = [], None
                for _ in range(repeats):
                    time.sleep(gap)  # the agent's turn between two candidates
                    t = time.perf_counter()
                    card = default_ladder().score(cand, ctx)
                    times.append(time.perf_counter() - t)
                row[f"{mode}_seconds"] = round(statistics.median(times), 3)
                row.update(checks_run=[v.check for v in card.verdicts],
                           failed_gate=card.failed_gate,
                           hints=sorted({h.kind.name for h in card.hints}))
            rows.append(row)
            print(f"{label:<40} warm {row['warm_seconds']:6.2f} s  cold "
                  f"{row['cold_seconds']:6.2f} s  failed: {row['failed_gate']}")
    full = rows[-1]
    for row in rows:
        for mode in ("warm", "cold"):
            row[f"{mode}_share"] = round(row[f"{mode}_seconds"] / full[f"{mode}_seconds"], 4)
    return rows


def _workloads(source: str, data: str, datasets_dir: str | None,
               epochs: int) -> list[dict[str, Any]]:
    recipe = {"lr": 0.003, "epochs": epochs, "preprocessing": "standardize",
              "early_stopping": 0}
    objective = ImproveObjective(source, data, entry="TabularMLP", target=None, recipe=recipe,
                                 datasets_dir=datasets_dir)
    detached = source.replace("return self.net(x)",
                              "return self.net[-1](self.net[:-1](x).detach())")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ctx = objective.setup(Path(tmp), Sandbox(Limits(wall_s=3600, memory_mb=8192)))
        base = objective.initial_candidate()
        # the full run the probe spares: the same model trained to its epoch budget
        t = time.perf_counter()
        full = MetricCheck().run(base, ctx)
        full_s = time.perf_counter() - t
        print(f"full training on {data}: {full_s:.1f} s "
              f"({full.evidence.get('epochs_run', epochs)} epochs)")
        for label, src, changes, kind in (
                ("diverging recipe (SGD lr 1e4, raw inputs)", source,
                 {"optimizer": "sgd", "lr": 1e4, "preprocessing": "none"},
                 {HintKind.NAN_LOSS, HintKind.EXPLODING_GRADIENT}),
                ("dead gradients (detached layers)", detached, {}, {HintKind.NO_GRADIENT})):
            cand = base.replace(files={"model.py": src}, recipe=base.recipe.replace(**changes))
            TrainabilityCheck().run(base, ctx)  # as in a ladder: the tier before warmed a child
            t = time.perf_counter()
            verdict = TrainabilityCheck().run(cand, ctx)
            probe_s = time.perf_counter() - t
            kinds = sorted({h.kind.name for h in verdict.hints})
            caught = any(k.name in kinds for k in kind)
            rows.append({"name": label, "data": data, "probe_seconds": round(probe_s, 3),
                         "caught": caught, "hints": kinds,
                         "full_training_seconds": round(full_s, 2),
                         "share": round(probe_s / full_s, 4)})
            print(f"{label:<40} probe {probe_s:6.2f} s (caught: {caught}, {kinds})  "
                  f"{probe_s / full_s:.1%} of the full run")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="sklearn:diabetes",
                   help="the tiers' workload: a regression task (SGD at lr 10 on raw targets "
                        "gives a NaN loss)")
    p.add_argument("--epochs", type=int, default=300, help="the tiers' full training epochs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gap", type=float, default=2.0,
                   help="seconds between two candidates, the agent's turn (an LLM answer "
                        "takes longer); warm children import in it")
    p.add_argument("--workload", default="local:connect_4",
                   help="the realistic workload: the largest shared dataset by default")
    p.add_argument("--workload-epochs", type=int, default=200,
                   help="the realistic run's epochs (minutes of training here)")
    p.add_argument("--datasets-dir", default=str(SHARED) if SHARED.is_dir() else None,
                   help="folder of the shared datasets (default: ../shared/datasets)")
    args = p.parse_args(argv)
    source = MODEL.read_text()
    tiers = _tiers(source, args.data, args.epochs, args.repeats, args.gap)
    workloads = _workloads(source, args.workload, args.datasets_dir, args.workload_epochs)
    tier1 = next(r for r in tiers if "tier 1" in r["name"])
    summary = {"tier1_rejection_warm_seconds": tier1["warm_seconds"],
               "tier1_rejection_cold_seconds": tier1["cold_seconds"],
               "tier1_under_1s": tier1["warm_seconds"] < 1.0,
               "largest_probe_share": max(w["share"] for w in workloads),
               "probes_within_5_percent": all(w["share"] <= 0.05 for w in workloads),
               "all_caught": all(w["caught"] for w in workloads)}
    md = ["# Ladder cost (fail fast, measured)", "",
          f"## Tiers: tabular MLP (`examples/tabular_mlp.py`) on `{args.data}`, "
          f"{args.epochs} epochs, median of {args.repeats} runs", "",
          "warm: sandbox children started ahead (the default); cold: a child started for "
          f"each job. {args.gap:g} s pass between two candidates (the agent's turn; an LLM's "
          "answer takes longer).", "",
          "| candidate | warm s | share | cold s | share | checks run | hints |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['name']} | {r['warm_seconds']:.2f} | {r['warm_share']:.0%} | "
           f"{r['cold_seconds']:.2f} | {r['cold_share']:.0%} | {', '.join(r['checks_run'])} | "
           f"{', '.join(r['hints']) or '-'} |" for r in tiers]
    md += ["", f"## Workloads: the trainability probe against the training run it spares "
               f"(`{args.workload}`, {args.workload_epochs} epochs)", "",
           "| failure | probe s | caught | full training s | share |",
           "| --- | --- | --- | --- | --- |"]
    md += [f"| {w['name']} | {w['probe_seconds']:.2f} | {w['caught']} | "
           f"{w['full_training_seconds']:.1f} | {w['share']:.1%} |" for w in workloads]
    md += ["", f"Tier-1 rejection: {tier1['warm_seconds']:.2f} s warm "
               f"({tier1['cold_seconds']:.2f} s cold); largest probe share "
               f"{summary['largest_probe_share']:.1%} of the realistic run."]
    jpath, mpath = results_io.write("ladder_cost", {
        "data": args.data, "epochs": args.epochs, "repeats": args.repeats, "gap": args.gap,
        "workload": args.workload, "workload_epochs": args.workload_epochs,
        "tiers": tiers, "workloads": workloads, "summary": summary}, "\n".join(md))
    print(f"wrote {jpath} and {mpath}")
    return 0 if summary["all_caught"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
