"""Objectives say what "done" means: `improve` and `migrate` (`tune` later)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the checks import objectives.target; keep this package import-light
    from autopilot_lab.objectives.base import Objective


def objective_classes() -> dict[str, type[Objective]]:
    from autopilot_lab.objectives.improve import ImproveObjective
    from autopilot_lab.objectives.migrate import MigrateObjective

    return {"improve": ImproveObjective, "migrate": MigrateObjective}


def objective_from_spec(spec: dict[str, Any]) -> Objective:
    """Rebuild an objective from the spec stored with its run (for resume)."""
    classes = objective_classes()
    name = spec.get("objective")
    if name not in classes:
        raise ValueError(f"unknown objective {name!r}; known: {sorted(classes)}")
    return classes[name].from_spec(spec)
