"""The Ray backend: the same trials and results as the local backend, for users with a cluster.

Each trial becomes a Ray task asking for ``num_cpus=threads`` and, for a GPU trial, a fraction
of a GPU: its packer reservation over the largest GPU's memory (a whole GPU for a probe or an
OOM retry). The task runs the trial in a child process exactly as the local backend does, with
the thread variables, the GPU Ray assigned and that memory fraction. Ray is imported only here,
only when this backend is made.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from autopilot_lab.schedule.devices import Inventory, detect
from autopilot_lab.schedule.local import ResultCallback, Trial, TrialResult, run_blocking
from autopilot_lab.schedule.packer import Demand, Packer, Placement


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("the ray scheduler backend needs Ray: pip install 'ray[default]' "
                          "(or use --backend local)") from None
    return ray


def _worker(python: str, target: str, kwargs: dict[str, Any], threads: int,
            fraction: float | None, timeout_s: float | None) -> dict[str, Any]:
    """Runs on a Ray worker: pin the trial to the GPU Ray gave this task, then run it."""
    ray = _ray()
    gpus = [str(int(g)) for g in ray.get_gpu_ids()]
    placement = Placement("ray", threads, gpu=None, mem_fraction=fraction)
    env = placement.env()
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    start = time.monotonic()
    out = run_blocking(python, target, kwargs, env, timeout_s)
    return {**out, "seconds": round(time.monotonic() - start, 3)}


class RayBackend:
    """Runs trials as Ray tasks (see the module docstring); ``address`` as for ``ray.init``."""

    name = "ray"

    def __init__(self, inventory: Inventory | None = None, packer: Packer | None = None, *,
                 address: str | None = None, python: str = sys.executable):
        self.ray = _ray()
        self.inventory = inventory or detect()
        self.packer = packer or Packer(self.inventory)
        self.address, self.python = address, python

    def gpu_fraction(self, demand: Demand) -> float:
        """The share of a GPU a trial asks Ray for: 1 for a probe or a retry alone."""
        if demand.peak_mb is None or demand.alone or not self.inventory.gpus:
            return 1.0
        largest = max(g.memory_mb for g in self.inventory.gpus)
        return round(min(1.0, self.packer.reservation_mb(demand) / largest), 4)

    def run(self, trials: Iterable[Trial], on_result: ResultCallback | None = None,
            on_start: Callable[[Trial, Placement], None] | None = None) -> list[TrialResult]:
        """Submit every trial, collect results as they finish (probes and OOM retries
        resubmitted)."""
        ray = self.ray
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address)
            else:
                ray.init(num_cpus=self.inventory.cpu_cores, num_gpus=len(self.inventory.gpus),
                         include_dashboard=False, log_to_driver=False)
        remote = ray.remote(_worker)
        pending: dict[Any, tuple[Trial, Demand, int, bool]] = {}

        def submit(trial: Trial, demand: Demand, attempts: int) -> None:
            gpu = demand.gpu and bool(self.inventory.gpus)
            frac = self.gpu_fraction(demand) if gpu else None
            probe = gpu and demand.peak_mb is None
            target = trial.probe_target if probe and trial.probe_target else trial.target
            ref = remote.options(num_cpus=demand.threads, num_gpus=frac or 0).remote(
                self.python, target, trial.kwargs, demand.threads, frac, trial.timeout_s)
            pending[ref] = (trial, demand, attempts + 1, probe)
            if on_start:
                on_start(trial, Placement(trial.key, demand.threads, None, 0.0, frac,
                                          demand.alone, probe))

        for t in trials:
            submit(t, t.demand(), 0)
        results: list[TrialResult] = []
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            trial, demand, attempts, probe = pending.pop(ref)
            out = ray.get(ref)
            if probe and out["status"] == "ok":
                submit(trial, replace(demand, peak_mb=out.get("peak_mb") or 0.0), attempts)
                continue
            retry = self.packer.after_oom(demand) if out["status"] == "oom" else None
            if retry is not None and not probe:
                submit(trial, retry, attempts)
                continue
            frac = self.gpu_fraction(demand) if demand.gpu else None
            res = TrialResult(trial.key, out["status"], out.get("value"), out.get("error"),
                              out.get("seconds", 0.0), {"backend": "ray", "gpu_fraction": frac},
                              attempts, out.get("peak_mb"))
            results.append(res)
            if on_result:
                on_result(res)
        return results
