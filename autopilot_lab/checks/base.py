"""The check interface, the context checks share, and sandbox outcomes as hints."""

from __future__ import annotations

import abc
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopilot_lab.candidate import Candidate
from autopilot_lab.hints import Hint, HintKind
from autopilot_lab.objectives.target import Target
from autopilot_lab.sandbox import Limits, Outcome, Sandbox
from autopilot_lab.scorecard import Verdict


@dataclass
class CheckContext:
    """What every check of one run needs: the task, the data file, the target, the sandbox.

    ``task`` is the JSON-able summary the harness needs (kind, n_features, n_outputs,
    n_classes); ``data_path`` is the ``.npz`` of the deterministic split.
    """

    task: dict[str, Any]
    data_path: Path
    sandbox: Sandbox
    target: Target | None = None
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    y_std: float | None = None
    limits: dict[str, Limits] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)  # side channel: e.g. trained weights
    reference: dict[str, Any] | None = None  # migrate: the Keras reference's meta
    extra_inputs: dict[str, Path] = field(default_factory=dict)  # e.g. reference.npz

    def run_job(self, check: str, job: str, candidate: Candidate, module: str = "probes",
                **extra: Any) -> Outcome:
        """Run a harness job (``autopilot_lab.harness.<module>:<job>``) on ``candidate`` in
        the sandbox, with the data, the candidate's artifacts and any reference files."""
        inputs = {"data.npz": self.data_path, **self.extra_inputs,
                  **{name: Path(path) for name, path in candidate.artifacts.items()}}
        payload = {"entry": candidate.entry, "main": candidate.main,
                   "init_kwargs": candidate.init_kwargs, "recipe": candidate.recipe.to_dict(),
                   "task": self.task, "seed": self.seed, "threads": self.threads,
                   "device": self.device, "data": "data.npz",
                   "weights": "weights.pt" if "weights.pt" in candidate.artifacts else None,
                   **extra}
        return self.sandbox.run(f"autopilot_lab.harness.{module}:{job}", payload,
                                files=candidate.files, inputs=inputs,
                                limits=self.limits.get(check))


class Check(abc.ABC):
    """One scoring dimension. Deterministic: same candidate + same data -> same verdict."""

    name: str
    tier: int
    hard: bool

    def run(self, candidate: Candidate, ctx: CheckContext) -> Verdict:
        start = time.perf_counter()
        verdict = self.evaluate(candidate, ctx)
        verdict.timing["seconds"] = round(time.perf_counter() - start, 3)
        return verdict

    @abc.abstractmethod
    def evaluate(self, candidate: Candidate, ctx: CheckContext) -> Verdict:
        """Measure and judge; never raise for a candidate's failure (return hints)."""

    def verdict(self, passed: bool, score: float, hints=(), keeps=(), evidence=None,
                timing=None) -> Verdict:
        return Verdict(check=self.name, tier=self.tier, hard=self.hard, passed=passed,
                       score=score, hints=tuple(hints), keeps=tuple(keeps),
                       evidence=evidence or {}, timing=dict(timing or {}))

    def failed_run(self, outcome: Outcome, candidate: Candidate) -> Verdict:
        """The verdict for a sandbox run that did not return a result."""
        return self.verdict(False, 0.0, outcome_hints(outcome, self.name, candidate.main),
                            evidence={"sandbox": outcome_evidence(outcome)},
                            timing={"sandbox_wall_s": round(outcome.wall_s, 3)})


def outcome_evidence(outcome: Outcome) -> dict[str, Any]:
    """The deterministic part of a sandbox outcome (no wall time, no memory figures)."""
    ev: dict[str, Any] = {"status": outcome.status, "limit": outcome.limit,
                          "exit_code": outcome.exit_code, "signal": outcome.signal}
    if outcome.error:
        ev["error"] = {"type": outcome.error.get("type"),
                       "message": _short(outcome.error.get("message", ""))}
    return ev


def outcome_hints(outcome: Outcome, check: str, main: str = "model.py") -> list[Hint]:
    """Turn a sandbox outcome that is not ``ok`` into typed hints."""
    if outcome.status == "ok":
        return []
    if outcome.status in ("timeout", "oom") or outcome.limit:
        limit = outcome.limit or ("wall" if outcome.status == "timeout" else "memory")
        advice = {
            "wall": "make the model cheaper, lower epochs, or remove the endless loop",
            "memory": "shrink the model or the batch size; avoid huge allocations",
            "processes": "do not spawn processes or threads in model code",
            "file_size": "do not write files from model code",
            "output": "do not print in forward() or in loops",
            "open_files": "do not open files from model code",
        }.get(limit, "stay within the sandbox limits")
        return [Hint(HintKind.RESOURCE_LIMIT, check, f"sandbox {limit} limit",
                     outcome.describe(), f"within the {limit} limit", advice, where=main)]
    if outcome.status == "error" and outcome.error:
        etype = outcome.error.get("type", "Exception")
        message = _short(outcome.error.get("message", ""))
        where = _candidate_frame(outcome.error.get("traceback", ""), main)
        kind = (HintKind.IMPORT_ERROR if etype in ("ImportError", "ModuleNotFoundError")
                else HintKind.RUNTIME_ERROR)
        return [Hint(kind, check, "exception", f"{etype}: {message}", "no exception",
                     f"fix the {etype} raised {'at ' + where if where else 'in the candidate'}",
                     where=where)]
    return [Hint(HintKind.RUNTIME_ERROR, check, "process", outcome.describe(),
                 "the candidate's code returns normally",
                 "remove the code that crashes the interpreter (ctypes, os._exit, signals)",
                 where=main)]


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _candidate_frame(tb: str, main: str) -> str:
    """The last traceback line inside the candidate's file, as ``model.py:LINE``."""
    hits = re.findall(rf'File "[^"]*{re.escape(main)}", line (\d+)', tb or "")
    return f"{main}:{hits[-1]}" if hits else ""
