"""The check interface, the context checks share, and sandbox outcomes as hints."""

from __future__ import annotations

import abc
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autopilot_lab.candidate import Candidate
from autopilot_lab.harness.wire import Malformed
from autopilot_lab.hints import Hint, HintKind
from autopilot_lab.objectives.target import Target
from autopilot_lab.sandbox import Limits, Outcome, Sandbox
from autopilot_lab.scorecard import Verdict
from autopilot_lab.text import clean


@dataclass
class CheckContext:
    """What every check of one run needs: the task, the data file, the target, the sandbox.

    ``task`` is the JSON-able summary the harness needs (kind, n_features, n_outputs,
    n_classes); ``data_path`` is the ``.npz`` of the deterministic split, with every label:
    it stays with the parent. The sandbox gets :meth:`sandbox_data`: the train rows with
    their labels and the held-out rows (valid and test) without theirs, mixed in an order
    drawn per verification, so nothing a check compares against is inside.
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
    extra_inputs: dict[str, Path] = field(default_factory=dict)  # files the sandbox may read
    oracle: Any = None  # migrate: the Keras reference, for fresh challenge inputs
    _split: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _drawn: tuple[int, Path, np.ndarray] | None = field(default=None, repr=False)
    _reference: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _test_outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    label_reads: dict[str, int] = field(default_factory=dict)  # test: once per run

    def __post_init__(self) -> None:
        self.sandbox.prewarm(limits=self.limits.get("build"))  # ready for the first tier

    def keep_test_outputs(self, candidate: Candidate, outputs: np.ndarray | None) -> None:
        """The metric tier's outputs on the test rows, kept unscored (valid decides)."""
        if outputs is not None:
            self._test_outputs[candidate.digest()] = outputs

    def kept_test_outputs(self, candidate: Candidate) -> np.ndarray | None:
        return self._test_outputs.get(candidate.digest())

    def _arrays(self) -> dict[str, np.ndarray]:
        if self._split is None:
            with np.load(self.data_path) as npz:
                self._split = {k: npz[k] for k in npz.files}
        return self._split

    def inputs(self, name: str) -> np.ndarray:
        """X of a split part ("train", "valid", "test")."""
        return self._arrays()[f"X_{name}"]

    def labels(self, name: str) -> np.ndarray:
        """y of a split part, as the parent holds it; reads of the test labels are counted
        (``label_reads``): once per run, for the final scoring."""
        self.label_reads[name] = self.label_reads.get(name, 0) + 1
        return self._arrays()[f"y_{name}"]

    def reference_arrays(self) -> dict[str, np.ndarray]:
        """migrate: Keras' side of parity (``reference.npz``), read by the parent only."""
        if self._reference is None:
            if not self.reference or "arrays" not in self.reference:
                raise RuntimeError("this run has no Keras reference to compare with")
            with np.load(self.reference["arrays"]) as npz:
                self._reference = {k: npz[k] for k in npz.files}
        return self._reference

    def challenge_seed(self, candidate: Candidate) -> int:
        """The seed of one verification's fresh draws: from the run's seed and the
        candidate's content, so the same candidate gets byte-identical verdicts and no
        candidate can have been fitted to the draws before it was written."""
        text = f"{self.seed}:{candidate.digest()}"
        return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)

    def sandbox_data(self, seed: int) -> tuple[Path, np.ndarray]:
        """The sandbox's data file for challenge ``seed`` and its held-out order: row ``i``
        of ``X_eval`` is row ``order[i]`` of valid followed by test. One file is kept."""
        if self._drawn is not None and self._drawn[0] == seed:
            return self._drawn[1], self._drawn[2]
        X_train, y_train = self.inputs("train"), self.labels("train")
        held = np.concatenate([self.inputs("valid"), self.inputs("test")])
        order = np.random.default_rng(seed).permutation(len(held))
        path = self.data_path.with_name(f"sandbox-{seed:08x}.npz")
        with path.open("wb") as fh:
            np.savez(fh, X_train=X_train, y_train=y_train, X_eval=held[order],
                     kind=np.array(self.task["kind"]))
        if self._drawn is not None:
            self._drawn[1].unlink(missing_ok=True)
        self._drawn = (seed, path, order)
        return path, order

    def held_out(self, candidate: Candidate) -> dict[str, np.ndarray]:
        """Positions in ``X_eval`` of the valid rows and of the test rows, in split order."""
        _, order = self.sandbox_data(self.challenge_seed(candidate))
        where = np.argsort(order)
        n_valid = len(self.inputs("valid"))
        return {"valid": where[:n_valid], "test": where[n_valid:]}

    def run_job(self, check: str, job: str, candidate: Candidate, module: str = "probes",
                on_ask: Callable[[dict], dict] | None = None,
                inputs: dict[str, Path] | None = None, **extra: Any) -> Outcome:
        """Run a harness job (``autopilot_lab.harness.<module>:<job>``) on ``candidate`` in
        the sandbox, with the sandbox's data, the candidate's artifacts and ``inputs``.
        A run whose result pipe carried anything out of protocol raises :class:`Malformed`."""
        data, _ = self.sandbox_data(self.challenge_seed(candidate))
        files_in = {"data.npz": data, **self.extra_inputs, **(inputs or {}),
                    **{name: Path(path) for name, path in candidate.artifacts.items()}}
        payload = {"entry": candidate.entry, "main": candidate.main,
                   "init_kwargs": candidate.init_kwargs, "recipe": candidate.recipe.to_dict(),
                   "task": self.task, "seed": self.seed, "threads": self.threads,
                   "device": self.device, "data": "data.npz",
                   "weights": "weights.pt" if "weights.pt" in candidate.artifacts else None,
                   **extra}
        outcome = self.sandbox.run(f"autopilot_lab.harness.{module}:{job}", payload,
                                   files=candidate.files, inputs=files_in,
                                   limits=self.limits.get(check), on_ask=on_ask)
        if getattr(outcome, "protocol", ()):
            raise Malformed("; ".join(outcome.protocol))
        if outcome.status == "ok" and not isinstance(outcome.result, dict):
            raise Malformed(f"the {job} job returned {type(outcome.result).__name__}, "
                            "not an object")
        return outcome


class Check(abc.ABC):
    """One scoring dimension. Deterministic: same candidate + same data -> same verdict."""

    name: str
    tier: int
    hard: bool

    def run(self, candidate: Candidate, ctx: CheckContext) -> Verdict:
        start = time.perf_counter()
        try:
            verdict = self.evaluate(candidate, ctx)
        except Malformed as exc:
            verdict = self.tampered(str(exc), candidate)
        verdict.timing["seconds"] = round(time.perf_counter() - start, 3)
        return verdict

    def tampered(self, what: str, candidate: Candidate) -> Verdict:
        """The verdict for measurements out of protocol: rejected, with a P1 hint."""
        return self.verdict(False, 0.0, [Hint(
            HintKind.TAMPERING, self.name, "measurement protocol", _short(what),
            "one well-formed report from the harness",
            "return outputs from forward() only: do not write to the harness's pipes, "
            "patch its functions or exit the interpreter", where=candidate.main)],
            evidence={"tampering": _short(what)})

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
            "disk": "write less to disk: no large or many files, checkpoints or caches from "
                    "model code",
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
    """Candidate text as data: one line, no control sequences, bounded."""
    text = " ".join(clean(text, limit * 4).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _candidate_frame(tb: str, main: str) -> str:
    """The last traceback line inside the candidate's file, as ``model.py:LINE``."""
    hits = re.findall(rf'File "[^"]*{re.escape(main)}", line (\d+)', tb or "")
    return f"{main}:{hits[-1]}" if hits else ""
