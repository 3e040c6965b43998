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


def _card(gates: list[bool], soft: list[float], hints=(), keeps=()) -> Scorecard:
    """Hard gates in order, then scored checks; hints and keeps on the first check."""
    verdicts = [Verdict(f"gate{i}", i, True, p, 1.0 if p else 0.0,
                        tuple(hints) if i == 0 else (), tuple(keeps) if i == 0 else ())
                for i, p in enumerate(gates)]
    verdicts += [Verdict(f"soft{i}", 9, False, s > 0.5, s) for i, s in enumerate(soft)]
    return Scorecard(tuple(verdicts))


def test_the_score_counts_gates_in_order_then_the_mean_quality():
    assert _card([True, True], [0.5, 0.7]).score == 2.6
    assert _card([True, False, True], [0.9]).score == 1.0  # a failed gate stops the count
    assert _card([True, False], [0.9]).quality == 0.0  # no quality behind a failed gate
    assert _card([True], [1.0, 1.0]).score == 1.999  # quality never reaches the next gate
    assert _card([True], []).score == 1.0
    card = _card([True, False], [0.2])
    assert card.failed_gate == "gate1" and card.gates_passed == 1 and not card.all_gates_passed
    assert _card([True], [0.3]).targets_met  # no check said its target is not met


def test_the_best_is_the_highest_score_whatever_the_order():
    low = Iteration(1, Candidate(files={"model.py": "a = 1\n"}, entry="Net"),
                    _card([True, False], []), "rules")
    high = Iteration(2, Candidate(files={"model.py": "b = 1\n"}, entry="Net", parent=1),
                     _card([True, True], [0.4]), "rules")
    lower = Iteration(3, Candidate(files={"model.py": "c = 1\n"}, entry="Net", parent=2),
                      _card([True, True], [0.3]), "llm")
    journal = Journal()
    assert journal.best is None and journal.frontier is None and journal.last is None
    for it in (low, high, lower):
        journal.add(it)
    assert len(journal) == 3 and journal.last is lower
    assert journal.best is high and journal.frontier is high and high.score == 2.4
    assert journal.get(2) is high
    assert [it.n for it in journal.lineage(3)] == [1, 2, 3]
    assert [it.n for it in journal.lineage(1)] == [1]


def test_hints_and_keeps_are_the_iteration_s_own_and_serialised_whole():
    from autopilot_lab.hints import Hint, HintKind, Keep

    hint = Hint(HintKind.NAN_LOSS, "gate0", "loss", "nan", "finite", "lower lr", where="lr")
    keep = Keep("gate0", "outputs match")
    it = Iteration(4, Candidate(files={"model.py": "x = 2\n"}, entry="Net"),
                   _card([True], [0.6], [hint], [keep]), "rules")
    journal = Journal([it])
    assert journal.hints_of(4) == [hint] and journal.keeps_of(4) == [keep]
    d = it.to_dict()
    assert (d["n"], d["agent"], d["score"]) == (4, "rules", 1.6)
    assert d["candidate"]["files"] == {"model.py": "x = 2\n"}
    assert d["scorecard"]["verdicts"][0]["hints"][0]["kind"] == "NAN_LOSS"


def test_an_iteration_is_a_record_and_the_journal_finds_it_by_number_only():
    import dataclasses

    import pytest

    first, third = _it(1, 0.01, [True]), _it(3, 0.02, [True])
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.n = 2  # type: ignore[misc]
    journal = Journal([first, third])  # iteration 2 never got a candidate: not recorded
    assert journal.get(3) is third
    with pytest.raises(StopIteration):
        journal.get(2)  # never "the next one"


def test_an_iteration_s_dict_keeps_the_checks_timing():
    it = _it(1, 0.01, [True])
    timed = Iteration(1, it.candidate, Scorecard((Verdict("c0", 0, True, True, 1.0,
                                                          timing={"seconds": 1.5}),)), "rules")
    assert timed.to_dict()["scorecard"]["verdicts"][0]["timing"] == {"seconds": 1.5}
