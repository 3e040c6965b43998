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
from autopilot_lab.baseline import hgb_baseline, public
from autopilot_lab.candidate import Candidate, Recipe
from autopilot_lab.checks import CheckContext, Ladder, default_ladder
from autopilot_lab.journal import rank
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
                 seed: int = 0, threads: int = 1, device: str = "cpu",
                 start: Candidate | None = None, shared_dropout: dict | None = None,
                 from_run: str | None = None):
        """``start``: a finished run's chosen candidate, taken as it is (weights and recipe
        included) as candidate 0 (see :meth:`from_run`); ``shared_dropout``: the dropout
        draws a migration trained with (``migrate.shared_masks``), so it trains the same."""
        if start is not None:
            model, entry = start.source, start.entry
            recipe, init_kwargs = start.recipe, start.init_kwargs
        self.source, self.entry = resolve_model(model, entry)
        if isinstance(recipe, dict):
            recipe = Recipe.from_dict(recipe)
        self.recipe = recipe or Recipe()
        self.init_kwargs = dict(init_kwargs or {})
        self.start, self.shared_dropout, self.from_run = start, shared_dropout, from_run
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
                "device": self.device, "start": self.start.to_dict() if self.start else None,
                "shared_dropout": self.shared_dropout, "from_run": self.from_run}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ImproveObjective:
        start = spec.get("start")
        return cls(spec["source"], spec["data"], entry=spec["entry"], target=spec["target"],
                   recipe=spec["recipe"], init_kwargs=spec["init_kwargs"],
                   datasets_dir=spec.get("datasets_dir"), seed=spec["seed"],
                   threads=spec.get("threads", 1), device=spec.get("device", "cpu"),
                   start=Candidate.from_dict(start) if start else None,
                   shared_dropout=spec.get("shared_dropout"), from_run=spec.get("from_run"))

    @classmethod
    def from_run(cls, store: Any, run_id: str, *, target: str | None = DEFAULT_TARGET
                 ) -> ImproveObjective:
        """Improve what a finished run chose (migrate or improve): candidate 0 is its best
        candidate as it is (model, recipe, init arguments and weights), on the same data,
        split, seed and dropout draws, so its figures reproduce the run's; best-of on valid
        then never hands back a model worse on valid than that start."""
        row = store.get_run(run_id)
        spec = row["spec"]
        scored = [it for it in store.iterations(run_id) if it["scorecard"] is not None]
        if not scored:
            raise ValueError(f"run {run_id} has no finished iteration to start from")
        if not spec.get("data"):
            raise ValueError(f"run {run_id} ran without data (the parity contract only); "
                             "improve needs a dataset: migrate with --data first")
        best = max(scored, key=lambda it: rank(it["score"], sum(  # the journal's one rule
            v.passed for v in it["scorecard"].verdicts), it["n"]))
        start = best["candidate"].replace(
            notes={"agent": "start", "summary": f"run {run_id}'s best candidate (iteration "
                                                f"{best['n']}), as it is"}, parent=None)
        missing = [p for p in start.artifacts.values() if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"run {run_id}'s best candidate needs {missing[0]}, which "
                                    "is gone; the run folder was moved or cleaned")
        return cls(None, spec["data"], target=target, datasets_dir=spec.get("datasets_dir"),
                   seed=spec.get("seed", 0), threads=spec.get("threads", 1),
                   device=spec.get("device", "cpu"), start=start,
                   shared_dropout=spec.get("shared_dropout"), from_run=run_id)

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
                            device=self.device, y_std=y_std,
                            reference={"shared_dropout": self.shared_dropout}
                            if self.shared_dropout else None)

    def initial_candidate(self) -> Candidate:
        if self.start is not None:
            return self.start
        return Candidate(files={"model.py": self.source}, entry=self.entry, recipe=self.recipe,
                         init_kwargs=self.init_kwargs)

    def export(self, candidate: Candidate) -> dict[str, bytes | str]:
        """recipe.json and train.py beside model.py, as a migration exports them (and the
        start's weights, when it came from a run that had them)."""
        import json

        from autopilot_lab.migrate.train_script import train_script

        task = {"n_features": self.task.n_features, "n_outputs": self.task.n_outputs}
        out: dict[str, bytes | str] = {
            "recipe.json": json.dumps(candidate.recipe.to_dict(), indent=2) + "\n",
            "train.py": train_script(candidate, self.task.kind, _constructor(candidate, task))}
        weights = candidate.artifacts.get("weights.pt")
        if weights and Path(weights).exists():
            out["weights.pt"] = Path(weights).read_bytes()
        return out

    def draft_summary(self) -> str:
        return (f"run {self.from_run}'s best candidate, as it is" if self.start is not None
                else "the model as given")

    def ladder(self) -> Ladder:
        # a start that already trained in its run: a slow start or a large gradient norm is its
        # known behaviour, reported but not a gate (a migration's recipe hit
        # EXPLODING_GRADIENT here in every iteration and came back with no value)
        return default_ladder(trainability_gate=self.start is None)

    def describe(self) -> dict[str, Any]:
        return {"objective": self.name, "task": self.task.summary(), "entry": self.entry,
                "target": self.target.to_dict() if self.target else self.target_text,
                "baseline": public(self.baseline), "starting_recipe": self.recipe.to_dict()}

    def test_references(self) -> dict[str, dict[str, float]]:
        return {self.baseline["model"]: self.baseline["test_metrics"]} if self.baseline else {}

    def test_target(self) -> Target | None:
        """A ``baseline+D`` target reads against the baseline's test figure on test."""
        if self.baseline is None:
            return self.target
        on_test = {**self.baseline, "value": self.baseline["test_value"]}
        return parse_target(self.target_text, kind=self.task.kind, baseline=on_test)


def _constructor(candidate: Candidate, task: dict[str, Any]) -> dict[str, Any]:
    """train.py's constructor arguments; a best candidate that does not even parse (every
    candidate failed the static gate) keeps its own."""
    from autopilot_lab.migrate.train_script import constructor_arguments

    try:
        return constructor_arguments(candidate, task)
    except SyntaxError:
        return dict(candidate.init_kwargs)
