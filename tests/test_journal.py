"""One tie-break rule (issue 15): the journal's best, the frontier the agent builds on, the
panel, `show` and Insert all pick the same iteration."""

from __future__ import annotations

from autopilot_lab.candidate import Candidate, Recipe
from autopilot_lab.journal import Iteration, Journal, rank
from autopilot_lab.scorecard import Scorecard, Verdict


def _it(n: int, lr: float, passed: list[bool]) -> Iteration:
    verdicts = tuple(Verdict(f"c{i}", i, i == 0, p, 1.0 if p and i == 0 else 0.0)
                     for i, p in enumerate(passed))
    cand = Candidate(files={"model.py": "x = 1\n"}, entry="Net", recipe=Recipe(lr=lr))
    return Iteration(n, cand, Scorecard(verdicts), "rules")


def test_a_tie_goes_to_the_candidate_that_passed_more_checks_then_to_the_later():
    diverged = _it(1, 10.0, [True, False, False])   # the NaN recipe: a soft check failed
    repaired = _it(2, 0.01, [True, True, False])
    again = _it(3, 0.005, [True, True, False])
    assert diverged.score == repaired.score == again.score  # only the gate counts
    journal = Journal([diverged, repaired])
    assert journal.best is repaired and journal.frontier is repaired
    journal.add(again)
    assert journal.best is again and journal.frontier is again  # a repair that did not hurt
    assert rank(1.5, 2, 1) > rank(1.5, 1, 9) and rank(1.6, 0, 1) > rank(1.5, 9, 9)
