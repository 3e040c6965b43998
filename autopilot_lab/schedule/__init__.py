"""The microscheduler: run trials concurrently on this machine (or a Ray cluster) without
oversubscribing cores or GPU memory.

    >>> from autopilot_lab.schedule import Trial, make_backend
    >>> backend = make_backend("local")                                   # doctest: +SKIP
    >>> backend.run([Trial("a", "mypkg.jobs:train", {"lr": 0.1})])        # doctest: +SKIP

``devices`` says what there is (detected or declared), ``packer`` decides what starts where
(pure logic), ``local`` runs each trial in a pinned child process, ``ray_backend`` hands the
same trials to Ray with fractional GPUs.
"""

from __future__ import annotations

from autopilot_lab.schedule.devices import Gpu, Inventory, InventoryError, declared, detect
from autopilot_lab.schedule.local import LocalBackend, Trial, TrialResult
from autopilot_lab.schedule.packer import Demand, Packer, Placement

BACKENDS = ("local", "ray")

__all__ = ["BACKENDS", "Demand", "Gpu", "Inventory", "InventoryError", "LocalBackend", "Packer",
           "Placement", "Trial", "TrialResult", "declared", "detect", "make_backend"]


def make_backend(name: str = "local", inventory: Inventory | None = None, **kwargs):
    """A backend by name: ``local`` (child processes here) or ``ray`` (needs ``ray``)."""
    if name == "local":
        return LocalBackend(inventory, **kwargs)
    if name == "ray":
        from autopilot_lab.schedule.ray_backend import RayBackend

        return RayBackend(inventory, **kwargs)
    raise ValueError(f"unknown scheduler backend {name!r}; use one of {', '.join(BACKENDS)}")
