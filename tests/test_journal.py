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


# ---- the scorecard: the one score formula and what follows from it -----------------------


def test_a_scorecard_finds_a_check_by_its_name_and_reads_targets_from_scored_checks():
    gate = Verdict("build", 1, True, True, 1.0, evidence={"target_met": False})  # ignored
    soft = Verdict("metric", 5, False, True, 0.9, evidence={"target_met": False})
    other = Verdict("stability", 4, False, True, 0.8)
    card = Scorecard((gate, other, soft))
    assert card.verdict("metric") is soft and card.verdict("build") is gate
    assert card.verdict("parity") is None
    assert not card.targets_met  # the scored metric check says its target is not met
    met = Scorecard((gate, other))
    assert met.targets_met  # a gate's own evidence does not decide targets
    failed = Scorecard((Verdict("build", 1, True, False, 0.0), other))
    assert not failed.targets_met  # no target is met behind a failed gate


def test_labels_say_pass_fail_or_not_applicable():
    assert Verdict("a", 1, True, True, 1.0).label == "pass"
    assert Verdict("a", 1, True, False, 0.0).label == "FAIL"
    na = Verdict("train_script", 2, True, True, 1.0, evidence={"not_applicable": "no file"})
    assert na.label == "n/a"


def test_score_rounding_floor_and_canonical_json():
    import dataclasses
    import json

    import numpy as np
    import pytest

    third = Scorecard((Verdict("g", 1, True, True, 1.0), Verdict("s", 5, False, True, 1 / 3)))
    assert third.score == 1.333333 and third.to_dict()["verdicts"][1]["score"] == 0.333333
    assert Scorecard((Verdict("g", 1, True, True, 1.0),
                      Verdict("s", 5, False, False, -0.5))).quality == 0.0  # never below 0
    v = Verdict("s", 5, False, True, 0.5, evidence={"zeta": np.float32(1.5),
                                                     "alpha": np.array([1, 2])},
                timing={"seconds": 3.0})
    text = v.to_json()
    assert json.loads(text)["evidence"] == {"alpha": [1, 2], "zeta": 1.5}
    assert text == json.dumps(json.loads(text), sort_keys=True)  # keys sorted: canonical
    assert "timing" not in v.to_dict() and v.to_dict(True)["timing"] == {"seconds": 3.0}
    assert v == dataclasses.replace(v, timing={"seconds": 9.0})  # timing is not identity
    card = Scorecard((v,))
    assert card.to_json() == json.dumps(json.loads(card.to_json()), sort_keys=True)
    assert "timing" not in card.to_dict()["verdicts"][0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.score = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.skipped = ()  # type: ignore[misc]
    again = Scorecard.from_dict(card.to_dict(True))
    assert again == card and Verdict.from_dict(v.to_dict()) == v
    assert again.hints == [] and again.keeps == []


def test_lookups_compare_values_not_identities():
    """An iteration number past Python's small-int cache and a check name built at run time
    are found all the same (``is`` would miss them)."""
    late = _it(300, 0.01, [True])
    assert Journal([late]).get(int("300")) is late
    card = Scorecard((Verdict("metric", 5, False, True, 0.5),))
    assert card.verdict("".join(["met", "ric"])) is card.verdicts[0]
