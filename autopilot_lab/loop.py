"""The loop: generate -> score -> hint -> regenerate, bounded, best-of, never killed by a
candidate.

The loop publishes events and knows none of its subscribers. It takes two small protocols
from outside: an artifact sink (where the best weights and the report go) and a source of the
user's rejected hints (rejected hints never reach the agent again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from autopilot_lab import evaluation
from autopilot_lab import report as report_mod
from autopilot_lab.agents.base import Agent, NoProposal
from autopilot_lab.candidate import Candidate
from autopilot_lab.events import Event, EventBus
from autopilot_lab.hints import sort_hints
from autopilot_lab.journal import Iteration, Journal
from autopilot_lab.objectives.base import Objective
from autopilot_lab.sandbox import Sandbox
from autopilot_lab.scorecard import Scorecard

DEFAULT_MAX_ITERS = 5


class ArtifactSink(Protocol):
    def write_artifact(self, run_id: str, name: str, data: bytes | str,
                       iteration: int | None = None, kind: str = "file") -> Path: ...


@dataclass
class RunResult:
    """What a run gives back: the best candidate, its scorecard, the history, the report."""

    run_id: str
    status: str
    reason: str
    journal: Journal
    report: dict[str, Any]
    report_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def best(self) -> Iteration | None:
        return self.journal.best

    @property
    def best_candidate(self):
        return self.best.candidate if self.best else None

    @property
    def scorecard(self) -> Scorecard | None:
        return self.best.scorecard if self.best else None

    @property
    def history(self) -> list[Iteration]:
        return self.journal.iterations

    @property
    def targets_met(self) -> bool:
        return bool(self.best and self.best.scorecard.targets_met)

    def __repr__(self) -> str:
        best = f"iteration {self.best.n}, score {self.best.score}" if self.best else "none"
        return (f"RunResult(run_id={self.run_id!r}, status={self.status!r}, "
                f"iterations={len(self.journal)}, best={best}, targets_met={self.targets_met})")


class Loop:
    def __init__(self, objective: Objective, agent: Agent, *, run_id: str, bus: EventBus,
                 workdir: Path, sandbox: Sandbox | None = None,
                 max_iters: int = DEFAULT_MAX_ITERS, artifacts: ArtifactSink | None = None,
                 rejected: Callable[[], set[str]] | None = None,
                 between_iterations: Callable[[Iteration], None] | None = None,
                 chosen: Callable[[int], str | None] | None = None):
        """``rejected``: the hint keys a person rejected; ``chosen``: the playbook repair a
        person chose for an iteration's candidate (applied instead of asking the agent)."""
        if max_iters < 1:
            raise ValueError(f"max_iters must be >= 1, got {max_iters}")
        self.objective, self.agent, self.run_id, self.bus = objective, agent, run_id, bus
        self.workdir = Path(workdir)
        self.sandbox = sandbox or Sandbox()
        self.max_iters = max_iters
        self.artifacts = artifacts
        self.rejected = rejected or (lambda: set())
        self.chosen = chosen or (lambda n: None)
        self._used_choices: set[tuple[int, str]] = set()
        self.between_iterations = between_iterations
        self._stop = threading.Event()

    def _chosen_candidate(self, base: Iteration | None) -> Candidate | None:
        """The frontier's candidate with the repair a person chose for it, once; None when
        there is no choice (or it changes nothing), and the agent proposes instead."""
        name = self.chosen(base.n) if base is not None else None
        if base is None or not name or (base.n, name) in self._used_choices:
            return None
        self._used_choices.add((base.n, name))
        from autopilot_lab.agents.playbook import apply_user_repair

        change = apply_user_repair(name, base.candidate, self.objective)
        if change is None:
            return None
        candidate, what = change
        return candidate.replace(parent=base.n, notes={
            "agent": "user", "summary": f"your choice: {name} ({what})",
            "repairs": [{"repair": name, "hint": "chosen by the user", "hint_key": "",
                         "change": what}]})

    def stop(self) -> None:
        """Ask the loop to stop after the current check; the best so far is kept."""
        self._stop.set()

    def _emit(self, type_: str, **data: Any) -> None:
        self.bus.publish(Event(type_, self.run_id, data))

    def run(self, journal: Journal | None = None) -> RunResult:
        """Run (or continue, given the finished iterations of a journal) to the end."""
        journal = journal or Journal()
        self.workdir.mkdir(parents=True, exist_ok=True)
        ctx = self.objective.setup(self.workdir, self.sandbox)
        ladder = self.objective.ladder()
        status, reason = "finished", f"iteration budget of {self.max_iters} spent"
        if journal.best and journal.best.scorecard.targets_met:
            reason = "targets met"
        else:
            while len(journal) < self.max_iters:
                if self._stop.is_set():
                    status, reason = "stopped", "stopped by the user"
                    break
                n = len(journal) + 1
                self._emit("iteration_started", iteration=n)
                base = journal.frontier
                rejected = self.rejected()
                hints = sort_hints([h for h in base.scorecard.hints
                                    if h.key not in rejected]) if base else []
                keeps = base.scorecard.keeps if base else []
                candidate = self._chosen_candidate(base)
                try:
                    if candidate is None:
                        candidate = self.agent.propose(self.objective, journal, hints, keeps)
                except NoProposal as e:
                    reason = f"the agent has no further proposal: {e}"
                    break
                self._emit("candidate_proposed", iteration=n, candidate=candidate.to_dict(),
                           agent=self.agent.name)
                ctx.outputs.clear()
                card = ladder.score(
                    candidate, ctx,
                    on_start=lambda c, n=n: self._emit("check_started", iteration=n,
                                                       check=c.name, tier=c.tier),
                    on_finish=lambda v, n=n: self._emit("check_finished", iteration=n,
                                                        verdict=v.to_dict(with_timing=True)))
                it = Iteration(n, candidate, card, candidate.notes.get("agent", self.agent.name))
                journal.add(it)
                if journal.best is it and "weights" in ctx.outputs and self.artifacts:
                    self.artifacts.write_artifact(self.run_id, "best/trained_weights.pt",
                                                  ctx.outputs["weights"], iteration=n,
                                                  kind="weights")
                self._emit("iteration_finished", iteration=n, scorecard=card.to_dict(True),
                           score=card.score, best_iteration=journal.best.n,
                           best_score=journal.best.score)
                if card.targets_met:
                    reason = "targets met"
                    break
                if self.between_iterations and len(journal) < self.max_iters:
                    self.between_iterations(it)
        # the run's one look at the test labels, for the candidate valid chose
        test = evaluation.final_test(self.objective, ctx, journal.best)
        totals = getattr(self.artifacts, "llm_totals", None)
        report = report_mod.build_report(self.run_id, self.objective, journal, status, reason,
                                         llm_totals=totals(self.run_id) if totals else None,
                                         test=test)
        paths = {}
        if self.artifacts:
            best = journal.best
            if best:
                exported = {**best.candidate.files, **self.objective.export(best.candidate)}
                for fname, content in exported.items():
                    self.artifacts.write_artifact(self.run_id, f"best/{fname}", content,
                                                  iteration=best.n, kind="code")
            paths["json"] = self.artifacts.write_artifact(
                self.run_id, "report.json", report_mod.to_json(report), kind="report")
            paths["md"] = self.artifacts.write_artifact(
                self.run_id, "report.md", report_mod.to_markdown(report), kind="report")
        best = journal.best
        self._emit("run_finished", status=status, reason=reason,
                   best_iteration=best.n if best else None,
                   best_score=best.score if best else None)
        return RunResult(self.run_id, status, reason, journal, report, paths)
