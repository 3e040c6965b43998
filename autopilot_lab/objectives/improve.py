"""`improve`: push a PyTorch model to a metric target on a dataset.

Inputs: the model (see ``model_source``), a dataset spec, a target (``roc_auc>=0.9``,
``rmse<=3.1``, ``baseline+0.01``...) and a starting recipe. The baseline is scikit-learn's
HistGradientBoosting on the same deterministic split. Default target: ``baseline-0.02`` (match
the classical baseline within 0.02 of the primary metric).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from autopilot_lab import data as data_mod
from autopilot_lab.baseline import hgb_baseline
from autopilot_lab.candidate import Candidate, Recipe
from autopilot_lab.checks import CheckContext, Ladder, default_ladder
from autopilot_lab.objectives.base import Objective
from autopilot_lab.objectives.model_source import resolve_model
from autopilot_lab.objectives.target import Target, parse_target
from autopilot_lab.sandbox import Sandbox

DEFAULT_TARGET = "baseline-0.02"


class ImproveObjective(Objective):
    name = "improve"

    def __init__(self, model: Any, data: str | data_mod.Task, *, entry: str | None = None,
                 target: str | None = DEFAULT_TARGET, recipe: Recipe | dict | None = None,
                 init_kwargs: dict | None = None, datasets_dir: str | None = None,
                 seed: int = 0, threads: int = 1, device: str = "cpu"):
        self.source, self.entry = resolve_model(model, entry)
        if isinstance(recipe, dict):
            recipe = Recipe.from_dict(recipe)
        self.recipe = recipe or Recipe()
        self.init_kwargs = dict(init_kwargs or {})
        self.data_spec = data if isinstance(data, str) else None
        self.datasets_dir = datasets_dir
        self.target_text = target
        self.seed, self.threads, self.device = seed, threads, device
        self.task = data if isinstance(data, data_mod.Task) else data_mod.load_task(
            data, datasets_dir=datasets_dir, seed=seed)
        self.target: Target | None = None
        self.baseline: dict | None = None

    def spec(self) -> dict[str, Any]:
        if self.data_spec is None:
            raise ValueError("a run on in-memory arrays cannot be rebuilt from its spec")
        return {"objective": self.name, "source": self.source, "entry": self.entry,
                "data": self.data_spec, "target": self.target_text,
                "recipe": self.recipe.to_dict(), "init_kwargs": self.init_kwargs,
                "datasets_dir": self.datasets_dir, "seed": self.seed, "threads": self.threads,
                "device": self.device}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ImproveObjective:
        return cls(spec["source"], spec["data"], entry=spec["entry"], target=spec["target"],
                   recipe=spec["recipe"], init_kwargs=spec["init_kwargs"],
                   datasets_dir=spec.get("datasets_dir"), seed=spec["seed"],
                   threads=spec.get("threads", 1), device=spec.get("device", "cpu"))

    def setup(self, workdir: Path, sandbox: Sandbox) -> CheckContext:
        task = self.task
        self.baseline = hgb_baseline(task, seed=self.seed)
        self.target = parse_target(self.target_text, kind=task.kind, baseline=self.baseline)
        data_path = task.save_npz(Path(workdir) / "data.npz")
        y_train = task.part("train")[1]
        y_std = float(np.std(y_train)) if task.kind == "regression" else None
        info = {"kind": task.kind, "n_features": task.n_features, "n_outputs": task.n_outputs,
                "n_classes": task.n_classes}
        return CheckContext(task=info, data_path=data_path, sandbox=sandbox,
                            target=self.target, seed=self.seed, threads=self.threads,
                            device=self.device, y_std=y_std)

    def initial_candidate(self) -> Candidate:
        return Candidate(files={"model.py": self.source}, entry=self.entry, recipe=self.recipe,
                         init_kwargs=self.init_kwargs)

    def ladder(self) -> Ladder:
        return default_ladder()

    def describe(self) -> dict[str, Any]:
        return {"objective": self.name, "task": self.task.summary(), "entry": self.entry,
                "target": self.target.to_dict() if self.target else self.target_text,
                "baseline": self.baseline, "starting_recipe": self.recipe.to_dict()}
