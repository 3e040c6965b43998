"""The check ladder: checks in cost order, hard gates first, stop at the first failed gate.

A broken candidate costs milliseconds (tier 0 runs no code) or one short sandbox run, never a
training run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from autopilot_lab.candidate import Candidate
from autopilot_lab.checks.base import Check, CheckContext
from autopilot_lab.checks.build import BuildCheck
from autopilot_lab.checks.metric import MetricCheck
from autopilot_lab.checks.stability import StabilityCheck
from autopilot_lab.checks.static import StaticCheck
from autopilot_lab.checks.trainability import TrainabilityCheck
from autopilot_lab.scorecard import Scorecard, Verdict

__all__ = ["Check", "CheckContext", "Ladder", "default_ladder"]


class Ladder:
    """Runs checks in order; after a failed hard gate the rest are skipped."""

    def __init__(self, checks: Sequence[Check]):
        self.checks = sorted(checks, key=lambda c: c.tier)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checks]

    def score(self, candidate: Candidate, ctx: CheckContext,
              on_start: Callable[[Check], None] | None = None,
              on_finish: Callable[[Verdict], None] | None = None) -> Scorecard:
        verdicts: list[Verdict] = []
        for i, check in enumerate(self.checks):
            if on_start:
                on_start(check)
            verdict = check.run(candidate, ctx)
            verdicts.append(verdict)
            if on_finish:
                on_finish(verdict)
            if check.hard and not verdict.passed:
                return Scorecard(tuple(verdicts), tuple(c.name for c in self.checks[i + 1:]))
        return Scorecard(tuple(verdicts))


def default_ladder(trainability_gate: bool = True) -> Ladder:
    """Tiers 0, 1, 3, 4, 5 of the design (parity, tier 2, belongs to `migrate`)."""
    return Ladder([StaticCheck(), BuildCheck(), TrainabilityCheck(hard=trainability_gate),
                   StabilityCheck(), MetricCheck()])
