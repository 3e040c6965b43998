"""The device inventory a scheduler packs trials onto: CPU cores and GPUs with their memory,
detected (``os.sched_getaffinity``, ``torch.cuda``) or declared (``"cpu=16,gpu=80GB,gpu=24GB"``),
so that placement can be planned and tested for machines this one is not."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field


class InventoryError(ValueError):
    """A declared inventory that cannot be parsed; the message shows the expected form."""


@dataclass(frozen=True)
class Gpu:
    """One GPU: its index (what ``CUDA_VISIBLE_DEVICES`` names) and total memory."""

    index: int
    memory_mb: float
    name: str = "gpu"


@dataclass(frozen=True)
class Inventory:
    """CPU cores the trials may use, and the GPUs."""

    cpu_cores: int
    gpus: tuple[Gpu, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.cpu_cores < 1:
            raise InventoryError(f"an inventory needs at least one CPU core, got {self.cpu_cores}")

    def describe(self) -> str:
        gpus = ", ".join(f"{g.name} #{g.index} {g.memory_mb / 1024:.0f} GiB" for g in self.gpus)
        return f"{self.cpu_cores} CPU cores" + (f"; {gpus}" if gpus else "; no GPU")


_GPU_WORD = re.compile(r"^(?P<n>\d+)\s*(?P<unit>gb|gib|mb|mib)?$", re.IGNORECASE)


def declared(text: str) -> Inventory:
    """Parse ``cpu=N[,gpu=SIZE]...``; SIZE like ``80GB``, ``24GiB`` or ``16000MB`` (GB and GiB
    both mean 1024 MiB). GPUs get indices 0, 1, ... in the order given."""
    cores, gpus = None, []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "cpu" and value.isdigit():
            cores = int(value)
            continue
        m = _GPU_WORD.match(value) if key == "gpu" else None
        if m is None:
            raise InventoryError(f"cannot read {part!r} in inventory {text!r}; expected "
                                 "cpu=N and gpu=SIZE entries, e.g. 'cpu=16,gpu=80GB,gpu=24GB'")
        unit = (m["unit"] or "gb").lower()
        mb = float(m["n"]) * (1024 if unit in ("gb", "gib") else 1)
        gpus.append(Gpu(len(gpus), mb, "declared"))
    if cores is None:
        raise InventoryError(f"inventory {text!r} declares no cpu=N entry")
    return Inventory(cores, tuple(gpus))


def detect(use_gpus: bool = True) -> Inventory:
    """This machine: the cores this process may run on, and the CUDA GPUs torch sees."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        os.cpu_count() or 1
    gpus: list[Gpu] = []
    if use_gpus:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None and torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                gpus.append(Gpu(i, props.total_memory / 2**20, props.name))
    return Inventory(cores, tuple(gpus))
