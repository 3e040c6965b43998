"""The microscheduler, measured: trials per hour when trials are packed onto the machine (one
thread each, as many at once as there are cores) against one at a time (each trial given
every core), on the same tasks.

    python -m benchmarks.schedule_bench --tasks 8
    python -m benchmarks.schedule_bench --device cuda     # GPU trials packed by measured memory

A trial is the sweep's training work on one task: the fleet's Keras model trained with its
recipe (the TensorFlow baseline) and the HistGradientBoosting baseline, on CPU; on a GPU, the
PyTorch translation of the fleet model trained on the device. Writes
``benchmarks/results/schedule_bench.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from benchmarks import results_io
from benchmarks.openml_sweep import ROOT, WORKDIR, expand, prepare_local


def train_trial(spec: str, datasets_dir: str, epochs: int | None = None,
                device: str = "cpu") -> dict[str, Any]:
    """One trial: fleet model + recipe on the task (TensorFlow on CPU, PyTorch on a GPU)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    threads = int(os.environ.get("AUTOPILOT_THREADS", "1"))
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from autopilot_lab import data
    from autopilot_lab.baseline import hgb_baseline
    from benchmarks import fleet

    t0 = time.perf_counter()
    task = data.load_task(spec, datasets_dir=datasets_dir)
    model = fleet.build(task, fleet.assign(task))
    fit = fleet.fit_args(task)
    if epochs is not None:
        fit["epochs"] = epochs
    X, y = task.part("train")
    if device == "cpu":
        model.fit(X, y, verbose=0, **fit)
        hgb_baseline(task)
    else:
        _train_torch(model, X, y, fit, device)
    return {"spec": spec, "seconds": round(time.perf_counter() - t0, 3), "threads": threads}


def probe_trial(spec: str, datasets_dir: str, epochs: int | None = None,
                device: str = "cpu") -> dict[str, Any]:
    """The short run that sizes a GPU trial: one epoch of the same training."""
    return train_trial(spec, datasets_dir, 1, device)


def _train_torch(model, X, y, fit: dict[str, int], device: str) -> None:
    """The translated model trained on the GPU with the fleet's batch size and epochs."""
    import torch

    from autopilot_lab.migrate import translate

    t = translate(model)
    namespace: dict[str, Any] = {}
    exec(compile(t.source, "model.py", "exec"), namespace)  # our translator's code
    net = namespace[t.class_name]().to(device)
    net.load_state_dict(t.torch_state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    Xt = torch.as_tensor(X, device=device)
    yt = torch.as_tensor(y, device=device, dtype=torch.float32).reshape(len(y), -1)
    for _ in range(fit["epochs"]):
        for i in range(0, len(Xt), fit["batch_size"]):
            opt.zero_grad()
            out = net(Xt[i:i + fit["batch_size"]]).float()
            (out - yt[i:i + fit["batch_size"]].mean()).square().mean().backward()
            opt.step()


def run_mode(label: str, specs: list[str], data_dir: str, inventory, workers: int, threads: int,
             device: str, epochs: int | None) -> dict[str, Any]:
    from autopilot_lab.schedule import Inventory, LocalBackend, Trial

    inv = Inventory(min(inventory.cpu_cores, workers * threads), inventory.gpus)
    trials = [Trial(f"{label}:{s}", "benchmarks.schedule_bench:train_trial",
                    {"spec": s, "datasets_dir": data_dir, "epochs": epochs, "device": device},
                    threads=threads, gpu=device != "cpu",
                    probe_target="benchmarks.schedule_bench:probe_trial")
              for s in specs]
    start = time.perf_counter()
    results = LocalBackend(inv).run(trials)
    wall = time.perf_counter() - start
    failed = [r.key for r in results if r.status != "ok"]
    return {"mode": label, "workers": workers, "threads": threads, "trials": len(trials),
            "failed": failed, "wall_seconds": round(wall, 2),
            "trials_per_hour": round(len(trials) / wall * 3600, 1),
            "median_trial_seconds": sorted(r.seconds for r in results)[len(results) // 2],
            "peak_mb": [r.peak_mb for r in results if r.peak_mb is not None]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="local-suite:../shared/datasets")
    p.add_argument("--tasks", type=int, default=8, help="how many tasks (the smallest first)")
    p.add_argument("--epochs", type=int, help="override the fleet's epochs")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--workdir", type=Path, default=WORKDIR)
    args = p.parse_args(argv)

    from autopilot_lab.schedule import detect

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT),
                                                             os.environ.get("PYTHONPATH"))))
    inventory = detect(use_gpus=args.device == "cuda")
    if args.device == "cuda" and not inventory.gpus:
        p.error("--device cuda: torch sees no CUDA GPU here")
    entries = sorted(expand(args.source), key=lambda e: (e["source_rows"] or 0, e["name"]))
    entries = entries[len(entries) // 3:][:args.tasks]  # past the tiniest: real training work
    data_dir = prepare_local(entries, args.workdir.resolve() / "data", 3334, 0)
    specs = [e["spec"] for e in entries]
    cores = inventory.cpu_cores
    if args.device == "cpu":
        modes = [("one at a time", 1, cores), ("packed", cores, 1)]
    else:
        modes = [("one at a time", 1, 1), ("packed", cores, 1)]
    rows = []
    for label, workers, threads in modes:
        print(f"{label}: {len(specs)} trials, {workers} at a time x {threads} thread(s)",
              flush=True)
        rows.append(run_mode(label, specs, data_dir, inventory, workers, threads, args.device,
                             args.epochs))
        print(f"  {rows[-1]['trials_per_hour']} trials/hour (wall {rows[-1]['wall_seconds']} s)",
              flush=True)
    speedup = rows[1]["trials_per_hour"] / rows[0]["trials_per_hour"]
    md = ["# Microscheduler: packed trials against one at a time", "",
          f"{len(specs)} tasks of `{args.source}` ({', '.join(e['name'] for e in entries)}); a "
          f"trial trains the fleet's model with its recipe "
          f"({'TensorFlow + HistGradientBoosting' if args.device == 'cpu' else 'PyTorch'}) on "
          f"{args.device}; inventory: {inventory.describe()}.", "",
          "| mode | at a time | threads each | trials | wall s | trials / hour | median trial s "
          "|", "| --- | --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['mode']} | {r['workers']} | {r['threads']} | {r['trials']} | "
           f"{r['wall_seconds']} | {r['trials_per_hour']} | {r['median_trial_seconds']} |"
           for r in rows]
    md += ["", f"Packing: {speedup:.2f}x the trials per hour."]
    jpath, mpath = results_io.write("schedule_bench", {
        "device": args.device, "inventory": inventory.describe(), "tasks": specs,
        "modes": rows, "speedup": round(speedup, 3)}, "\n".join(md))
    print(f"packed / one at a time: {speedup:.2f}x; wrote {jpath} and {mpath}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
