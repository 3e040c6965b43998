"""The local backend: every trial in its own child process, placed by the packer.

A child is ``python -m autopilot_lab.schedule.local SPEC RESULT`` in its own session (so a
timeout kills its whole process tree), with the placement's environment: OMP/MKL/TF/torch
thread counts, ``CUDA_VISIBLE_DEVICES`` and a GPU memory fraction that the child applies with
``torch.cuda.set_per_process_memory_fraction``. The child calls the trial's target and writes
``{"status", "value", "error", "peak_mb"}``; an out-of-memory error is status "oom", which the
packer answers with a retry alone on a GPU.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from autopilot_lab.schedule.devices import Inventory, detect
from autopilot_lab.schedule.packer import MEM_FRACTION_VAR, Demand, Packer, Placement

STATUSES = ("ok", "error", "timeout", "oom")
OOM_WORDS = ("out of memory", "outofmemory", "resource_exhausted", "oom when allocating")
STDERR_TAIL = 2000  # characters of a crashed child's stderr kept in its result


@dataclass(frozen=True)
class Trial:
    """``target`` (``"package.module:function"``) is called as ``function(**kwargs)`` in a child
    process and returns JSON. ``probe_target``, for a GPU trial whose ``peak_mb`` is unknown, is
    a short run with the same kwargs whose peak GPU memory sizes the trial's reservation."""

    key: str
    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    threads: int = 1
    gpu: bool = False
    peak_mb: float | None = None
    timeout_s: float | None = None
    probe_target: str | None = None

    def demand(self) -> Demand:
        return Demand(self.key, self.threads, self.gpu, self.peak_mb)


@dataclass
class TrialResult:
    """How a trial ended: ``status`` is one of STATUSES; ``value`` is the target's return value;
    ``attempts`` counts runs (an OOM retry is a second one), ``peak_mb`` the GPU peak seen."""

    key: str
    status: str
    value: Any = None
    error: str | None = None
    seconds: float = 0.0
    placement: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1
    peak_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ResultCallback = Callable[[TrialResult], None]


@dataclass
class _Running:
    trial: Trial
    demand: Demand
    placement: Placement
    proc: subprocess.Popen
    result_path: Path
    stderr_path: Path
    started: float
    attempts: int


class LocalBackend:
    """Runs trials concurrently on this machine (see the module docstring)."""

    name = "local"

    def __init__(self, inventory: Inventory | None = None, packer: Packer | None = None, *,
                 poll_s: float = 0.2, python: str = sys.executable):
        self.inventory = inventory or detect()
        self.packer = packer or Packer(self.inventory)
        self.poll_s, self.python = poll_s, python
        self._count = 0

    def run(self, trials: Iterable[Trial], on_result: ResultCallback | None = None,
            on_start: Callable[[Trial, Placement], None] | None = None) -> list[TrialResult]:
        """Run every trial to an end; ``on_result`` is called as each one finishes."""
        trials = list(trials)
        if len({t.key for t in trials}) != len(trials):
            raise ValueError("trial keys must be unique")
        queue: list[tuple[Trial, Demand, int]] = [(t, t.demand(), 0) for t in trials]
        running: list[_Running] = []
        results: list[TrialResult] = []
        with tempfile.TemporaryDirectory(prefix="autopilot-sched-") as tmp:
            try:
                while queue or running:
                    self._start(queue, running, Path(tmp), on_start)
                    if not running:
                        stuck = ", ".join(t.key for t, _, _ in queue)
                        raise RuntimeError(f"trials {stuck} cannot be placed on "
                                           f"{self.inventory.describe()}")
                    time.sleep(self.poll_s)
                    for r in [r for r in running if self._done(r)]:
                        running.remove(r)
                        final = self._finish(r, queue)
                        if final is not None:
                            results.append(final)
                            if on_result:
                                on_result(final)
            finally:
                for r in running:
                    _kill(r.proc)
        return results

    # -- internals ----------------------------------------------------------------------------
    def _start(self, queue, running, tmp: Path, on_start) -> None:
        order = sorted(range(len(queue)), key=lambda i: -(queue[i][1].peak_mb or 0.0)
                       if queue[i][1].gpu else 0.0)  # GPU: first fit decreasing; CPU: as given
        demands = [queue[i][1] for i in order]
        placements = self.packer.plan(demands, [r.placement for r in running])
        by_key = {p.key: p for p in placements}
        for i in sorted(order, reverse=True):
            trial, demand, attempts = queue[i]
            placement = by_key.get(demand.key)
            if placement is None:
                continue
            del queue[i]
            running.append(self._spawn(trial, demand, placement, tmp, attempts + 1))
            if on_start:
                on_start(trial, placement)

    def _spawn(self, trial: Trial, demand: Demand, placement: Placement, tmp: Path,
               attempts: int) -> _Running:
        self._count += 1
        target = trial.probe_target if placement.probe and trial.probe_target else trial.target
        proc, result, stderr = spawn(self.python, target, trial.kwargs, placement.env(), tmp,
                                     f"trial{self._count}")
        return _Running(trial, demand, placement, proc, result, stderr, time.monotonic(),
                        attempts)

    def _done(self, r: _Running) -> bool:
        if r.proc.poll() is not None:
            return True
        limit = r.trial.timeout_s
        if limit is not None and time.monotonic() - r.started > limit:
            _kill(r.proc)
            return True
        return False

    def _finish(self, r: _Running, queue: list) -> TrialResult | None:
        """The final result, or None when the trial went back into the queue (probe, OOM)."""
        seconds = round(time.monotonic() - r.started, 3)
        timed_out = r.trial.timeout_s is not None and seconds > r.trial.timeout_s
        out = outcome(r.proc, r.result_path, r.stderr_path, r.trial.timeout_s if timed_out
                      else None)
        if out["status"] == "oom" and not r.placement.probe:
            retry = self.packer.after_oom(r.demand)
            if retry is not None:
                queue.insert(0, (r.trial, retry, r.attempts))
                return None
        if r.placement.probe and out["status"] == "ok":
            peak = out.get("peak_mb") or 0.0
            queue.insert(0, (r.trial, replace(r.demand, peak_mb=peak), r.attempts))
            return None
        return TrialResult(r.trial.key, out["status"], out.get("value"), out.get("error"),
                           seconds, asdict(r.placement), r.attempts, out.get("peak_mb"))


def spawn(python: str, target: str, kwargs: dict[str, Any], env: dict[str, str], folder: Path,
          tag: str) -> tuple[subprocess.Popen, Path, Path]:
    """Start a child running ``target(**kwargs)`` with ``env`` added to ours; (process, result
    file, stderr file)."""
    spec = folder / f"{tag}.json"
    spec.write_text(json.dumps({"target": target, "kwargs": kwargs}))
    result, stderr = folder / f"{tag}.result.json", folder / f"{tag}.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen([python, "-m", "autopilot_lab.schedule.local", str(spec),
                                 str(result)], env={**os.environ, **env},
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    return proc, result, stderr


def outcome(proc: subprocess.Popen, result: Path, stderr: Path,
            timed_out_after: float | None = None) -> dict[str, Any]:
    """What an ended child left: its result file, else a timeout or a crash with stderr."""
    if result.exists():
        return json.loads(result.read_text())
    if timed_out_after is not None:
        return {"status": "timeout",
                "error": f"no result within the trial's {timed_out_after:g} s; killed"}
    tail = stderr.read_text(errors="replace")[-STDERR_TAIL:]
    code = proc.returncode
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return {"status": "oom" if any(w in tail.lower() for w in OOM_WORDS) else "error",
            "error": f"the trial process ended without a result ({how}); stderr tail:\n{tail}"}


def run_blocking(python: str, target: str, kwargs: dict[str, Any], env: dict[str, str],
                 timeout_s: float | None) -> dict[str, Any]:
    """One trial in a child process, waited for (the Ray backend's worker side)."""
    with tempfile.TemporaryDirectory(prefix="autopilot-trial-") as tmp:
        proc, result, stderr = spawn(python, target, kwargs, env, Path(tmp), "trial")
        try:
            proc.wait(timeout=timeout_s)
            timed_out = None
        except subprocess.TimeoutExpired:
            _kill(proc)
            timed_out = timeout_s
        return outcome(proc, result, stderr, timed_out)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole session (a trial may have started processes of its own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# -- the child process ---------------------------------------------------------------------------
def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"trial target {target!r} must be 'package.module:function'")
    return getattr(importlib.import_module(module), name)


def _apply_placement(threads: int, fraction: float | None) -> None:
    import torch

    torch.set_num_threads(threads)
    if fraction is not None and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(min(1.0, fraction), 0)
        torch.cuda.reset_peak_memory_stats(0)


def _peak_mb() -> float | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated(0) / 2**20, 1)


def child_main(spec_path: str, result_path: str) -> int:
    """Run one trial (in the child process) and write its result file."""
    spec = json.loads(Path(spec_path).read_text())
    fraction = os.environ.get(MEM_FRACTION_VAR)
    out: dict[str, Any] = {"status": "ok", "value": None, "error": None, "peak_mb": None}
    try:
        fn = _resolve(spec["target"])
        if "torch" in sys.modules or fraction is not None:
            _apply_placement(int(os.environ.get("AUTOPILOT_THREADS", "1")),
                             float(fraction) if fraction else None)
        out["value"] = fn(**spec["kwargs"])
    except Exception as exc:  # the trial's failure is its result, never the scheduler's
        text = f"{type(exc).__name__}: {exc}"
        out["status"] = "oom" if any(w in text.lower() for w in OOM_WORDS) else "error"
        out["error"] = text + "\n" + traceback.format_exc(limit=-4)
    out["peak_mb"] = _peak_mb()
    tmp = Path(result_path + ".tmp")
    tmp.write_text(json.dumps(out, default=str))
    tmp.replace(result_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1], sys.argv[2]))
