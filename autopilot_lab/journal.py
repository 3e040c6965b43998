"""The history of one run: plain records with derived properties, no stored flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopilot_lab.candidate import Candidate
from autopilot_lab.hints import Hint, Keep
from autopilot_lab.scorecard import Scorecard


@dataclass(frozen=True)
class Iteration:
    n: int
    candidate: Candidate
    scorecard: Scorecard
    agent: str

    @property
    def score(self) -> float:
        return self.scorecard.score

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "agent": self.agent, "score": self.score,
                "candidate": self.candidate.to_dict(), "scorecard": self.scorecard.to_dict(True)}


def rank(score: float, checks_passed: int, n: int) -> tuple[float, int, int]:
    """The one order of candidates, for the journal, the panel, the report, `show` and
    Insert: the higher score; on a tie, more checks passed (soft ones too: a candidate that
    failed a check the other passed never wins a tie); then the later iteration (a repair that
    did not hurt is kept, so repairs compound)."""
    return (score, checks_passed, n)


def iteration_rank(it: Iteration) -> tuple[float, int, int]:
    return rank(it.score, sum(v.passed for v in it.scorecard.verdicts), it.n)


@dataclass
class Journal:
    iterations: list[Iteration] = field(default_factory=list)

    def add(self, it: Iteration) -> None:
        self.iterations.append(it)

    def __len__(self) -> int:
        return len(self.iterations)

    @property
    def last(self) -> Iteration | None:
        return self.iterations[-1] if self.iterations else None

    @property
    def best(self) -> Iteration | None:
        """The first in :func:`rank`'s order: what the run hands back."""
        return max(self.iterations, key=iteration_rank, default=None)

    @property
    def frontier(self) -> Iteration | None:
        """What the agent builds on: the best, by the same rule (the hints shown and the
        candidate handed back must be the same iteration's)."""
        return self.best

    def get(self, n: int) -> Iteration:
        return next(it for it in self.iterations if it.n == n)

    def lineage(self, n: int) -> list[Iteration]:
        """Iteration n and its ancestors, oldest first."""
        chain, cur = [], self.get(n)
        while cur is not None:
            chain.append(cur)
            cur = self.get(cur.candidate.parent) if cur.candidate.parent else None
        return chain[::-1]

    def hints_of(self, n: int) -> list[Hint]:
        return self.get(n).scorecard.hints

    def keeps_of(self, n: int) -> list[Keep]:
        return self.get(n).scorecard.keeps
