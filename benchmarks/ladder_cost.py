"""The fail-fast claim, measured: what a candidate that fails at each tier costs against the
full ladder, and how long the trainability probe takes to catch NaN loss and dead gradients
against the full training run that would otherwise reveal them."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from autopilot_lab.checks import default_ladder
from autopilot_lab.checks.metric import MetricCheck
from autopilot_lab.checks.trainability import TrainabilityCheck
from autopilot_lab.hints import HintKind
from autopilot_lab.objectives.improve import ImproveObjective
from autopilot_lab.sandbox import Sandbox
from benchmarks import results_io

MODEL = Path(__file__).resolve().parents[1] / "examples" / "tabular_mlp.py"


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="sklearn:diabetes",
                   help="a regression task: SGD at lr 10 on raw targets gives a NaN loss")
    p.add_argument("--epochs", type=int, default=300,
                   help="the full training run's epochs (what the probe saves)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    source = MODEL.read_text()
    recipe = {"lr": 0.003, "epochs": args.epochs, "preprocessing": "standardize"}
    objective = ImproveObjective(source, args.data, entry="TabularMLP", target=None,
                                 recipe=recipe)
    rows, probes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        ctx = objective.setup(Path(tmp), Sandbox())
        base = objective.initial_candidate()
        for label, (src, changes) in _variants(source).items():
            cand = base.replace(files={"model.py": src},
                                recipe=base.recipe.replace(**changes))
            times, card = [], None
            for _ in range(args.repeats):
                t = time.perf_counter()
                card = default_ladder().score(cand, ctx)
                times.append(time.perf_counter() - t)
            rows.append({"candidate": label, "seconds": statistics.median(times),
                         "checks_run": [v.check for v in card.verdicts],
                         "failed_gate": card.failed_gate,
                         "hints": sorted({h.kind.name for h in card.hints})})
            print(f"{label:<40} {statistics.median(times):7.2f} s  checks run: "
                  f"{len(card.verdicts)}  failed: {card.failed_gate}")
        # probe vs full training run, for the two failure modes the probe exists to catch
        detached = source.replace("return self.net(x)",
                                  "return self.net[-1](self.net[:-1](x).detach())")
        for label, src, changes, kind in (
                ("NaN loss (SGD lr 10)", source, {"optimizer": "sgd", "lr": 10.0,
                                                  "preprocessing": "none"}, HintKind.NAN_LOSS),
                ("dead gradients (detached layers)", detached, {}, HintKind.NO_GRADIENT)):
            cand = base.replace(files={"model.py": src}, recipe=base.recipe.replace(**changes))
            t = time.perf_counter()
            verdict = TrainabilityCheck().run(cand, ctx)
            probe_s = time.perf_counter() - t
            caught = any(h.kind is kind for h in verdict.hints)
            # the full run a user would otherwise start: same model, the full epoch budget
            # (for NaN: the stable recipe, since our harness stops at the first NaN, a plain
            # training loop does not)
            full_cand = cand if kind is HintKind.NO_GRADIENT else base
            t = time.perf_counter()
            MetricCheck().run(full_cand, ctx)
            full_s = time.perf_counter() - t
            probes.append({"failure": label, "probe_seconds": probe_s, "caught": caught,
                           "hints": sorted({h.kind.name for h in verdict.hints}),
                           "full_training_seconds": full_s, "speedup": full_s / probe_s})
            print(f"{label:<40} probe {probe_s:6.2f} s (caught: {caught})  full training "
                  f"{full_s:6.2f} s  -> {full_s / probe_s:4.1f}x")
    full = rows[-1]["seconds"]
    md = ["# Ladder cost (fail fast, measured)", "",
          f"Tabular MLP (`examples/tabular_mlp.py`) on `{args.data}`, {args.epochs} epochs, "
          f"median of {args.repeats} runs.", "",
          "| candidate | seconds | share of full ladder | checks run | hints |",
          "| --- | --- | --- | --- | --- |"]
    md += [f"| {r['candidate']} | {r['seconds']:.2f} | {r['seconds'] / full:.0%} | "
           f"{', '.join(r['checks_run'])} | {', '.join(r['hints']) or '-'} |" for r in rows]
    md += ["", "| failure | probe seconds | caught | full training seconds | ratio |",
           "| --- | --- | --- | --- | --- |"]
    md += [f"| {p['failure']} | {p['probe_seconds']:.2f} | {p['caught']} | "
           f"{p['full_training_seconds']:.2f} | {p['speedup']:.1f}x |" for p in probes]
    jpath, mpath = results_io.write("ladder_cost", {"data": args.data, "epochs": args.epochs,
                                                    "repeats": args.repeats, "tiers": rows,
                                                    "probes": probes}, "\n".join(md))
    print(f"wrote {jpath} and {mpath}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
