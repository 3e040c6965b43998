"""Placement: which waiting trials start now, on which cores and GPU, with how much memory.

Pure logic (no processes, no CUDA), so that it can be tested on declared inventories.

- CPU: each trial asks for ``threads``; trials start while the threads of running trials stay
  within the inventory's cores (no oversubscription). A trial asking for more threads than
  there are cores gets all the cores.
- GPU: a trial's reservation is its measured peak memory x ``margin`` + ``overhead_mb`` (the
  CUDA context). It goes to the GPU where it fits most tightly (best fit: big GPUs stay open
  for big trials), at most ``max_per_gpu`` trials per GPU. A trial whose peak is unknown is a
  *probe*: it runs alone on a GPU so its peak can be measured safely.
- OOM: a trial that ran out of memory with a share of a GPU is retried *alone* (the largest
  idle GPU, memory fraction 1); while it waits, no new trial is placed on the GPU it waits
  for, so it cannot starve. A trial that runs out of memory alone has failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from autopilot_lab.schedule.devices import Gpu, Inventory

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "TF_NUM_INTRAOP_THREADS",
               "TF_NUM_INTEROP_THREADS", "AUTOPILOT_THREADS")
MEM_FRACTION_VAR = "AUTOPILOT_GPU_MEM_FRACTION"


@dataclass(frozen=True)
class Demand:
    """What one trial needs: threads, and for a GPU trial its measured peak memory."""

    key: str
    threads: int = 1
    gpu: bool = False
    peak_mb: float | None = None  # measured by a probe run; None: not measured yet
    alone: bool = False  # after an OOM with a shared GPU: a GPU to itself


@dataclass(frozen=True)
class Placement:
    """Where a trial runs: its threads, its GPU (or none) and the memory reserved there."""

    key: str
    threads: int
    gpu: int | None = None
    reserved_mb: float = 0.0
    mem_fraction: float | None = None
    alone: bool = False
    probe: bool = False

    def env(self) -> dict[str, str]:
        """Environment variables that pin the trial: thread counts, visible GPU, memory
        fraction (read by the trial process: ``torch.cuda.set_per_process_memory_fraction``)."""
        env = dict.fromkeys(THREAD_VARS, str(self.threads))
        env["CUDA_VISIBLE_DEVICES"] = "" if self.gpu is None else str(self.gpu)
        if self.mem_fraction is not None:
            env[MEM_FRACTION_VAR] = f"{self.mem_fraction:.4f}"
        return env


class Packer:
    """Places demands on an inventory (see the module docstring for the rules)."""

    def __init__(self, inventory: Inventory, *, margin: float = 1.2, overhead_mb: float = 600.0,
                 max_per_gpu: int = 8):
        if margin < 1 or overhead_mb < 0 or max_per_gpu < 1:
            raise ValueError("margin must be >= 1, overhead_mb >= 0 and max_per_gpu >= 1")
        self.inventory = inventory
        self.margin, self.overhead_mb, self.max_per_gpu = margin, overhead_mb, max_per_gpu

    def reservation_mb(self, demand: Demand) -> float:
        """GPU memory set aside for a measured trial: peak x margin + context overhead."""
        if demand.peak_mb is None:
            raise ValueError(f"trial {demand.key} has no measured peak; it runs as a probe")
        return demand.peak_mb * self.margin + self.overhead_mb

    def plan(self, queue: Sequence[Demand], running: Iterable[Placement]) -> list[Placement]:
        """Placements for the waiting demands that can start now, in queue order; a demand
        that does not fit is passed over (later, smaller ones may still start)."""
        running = list(running)
        drained: set[int] = set()  # GPUs held free for a waiting alone/probe trial
        out: list[Placement] = []
        for demand in queue:
            placed = self._place(demand, running + out, drained)
            if placed is not None:
                out.append(placed)
            elif demand.gpu and (demand.alone or demand.peak_mb is None):
                target = self._gpu_to_drain(running + out, drained)
                if target is not None:
                    drained.add(target)
        return out

    def after_oom(self, demand: Demand) -> Demand | None:
        """The retry of a trial that ran out of GPU memory: alone; None if it already was."""
        if not demand.gpu or demand.alone:
            return None
        return replace(demand, alone=True)

    # -- internals ----------------------------------------------------------------------------
    def _place(self, demand: Demand, running: list[Placement],
               drained: set[int]) -> Placement | None:
        threads = min(max(1, demand.threads), self.inventory.cpu_cores)
        if sum(p.threads for p in running) + threads > self.inventory.cpu_cores:
            return None
        if not demand.gpu:
            return Placement(demand.key, threads)
        if not self.inventory.gpus:
            raise ValueError(f"trial {demand.key} needs a GPU but the inventory has none "
                             f"({self.inventory.describe()})")
        probe = demand.peak_mb is None
        if probe or demand.alone or self.reservation_mb(demand) > self._largest().memory_mb:
            idle = [g for g in self.inventory.gpus if not self._on(g, running)]
            if not idle:
                return None
            gpu = max(idle, key=lambda g: (g.memory_mb, -g.index))
            return Placement(demand.key, threads, gpu.index, gpu.memory_mb, 1.0, alone=True,
                             probe=probe)
        need = self.reservation_mb(demand)
        fits = [(self._free(g, running) - need, g.index, g) for g in self.inventory.gpus
                if g.index not in drained and self._free(g, running) >= need
                and not any(p.alone for p in self._on(g, running))
                and len(self._on(g, running)) < self.max_per_gpu]
        if not fits:
            return None
        _, _, gpu = min(fits)
        return Placement(demand.key, threads, gpu.index, need,
                         round(min(1.0, need / gpu.memory_mb), 4))

    def _gpu_to_drain(self, running: list[Placement], drained: set[int]) -> int | None:
        """The largest GPU not yet held: what a waiting alone trial will get."""
        free = [g for g in self.inventory.gpus if g.index not in drained]
        return max(free, key=lambda g: (g.memory_mb, -g.index)).index if free else None

    def _largest(self) -> Gpu:
        return max(self.inventory.gpus, key=lambda g: g.memory_mb)

    @staticmethod
    def _on(gpu: Gpu, running: list[Placement]) -> list[Placement]:
        return [p for p in running if p.gpu == gpu.index]

    def _free(self, gpu: Gpu, running: list[Placement]) -> float:
        return gpu.memory_mb - sum(p.reserved_mb for p in self._on(gpu, running))
