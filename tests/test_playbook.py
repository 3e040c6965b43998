"""The rules agent and its playbook, without running any candidate."""

import pytest

from autopilot_lab.agents.base import NoProposal
from autopilot_lab.agents.playbook import lower_lr, raise_capacity, repairs_for
from autopilot_lab.agents.rules import RulesAgent
from autopilot_lab.candidate import Candidate, Recipe
from autopilot_lab.hints import Hint, HintKind
from autopilot_lab.journal import Iteration, Journal
from autopilot_lab.scorecard import Scorecard, Verdict

SOURCE = """import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, n_features, n_outputs, hidden=16, dropout=0.0):
        super().__init__()
        self.fc = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        return self.fc(x)
"""


def _cand(**recipe):
    return Candidate(files={"model.py": SOURCE}, entry="Net", recipe=Recipe(**recipe))


def _nan(step=2):
    return Hint(HintKind.NAN_LOSS, "trainability", "training loss", f"nan at step {step}",
                "finite", "lower the lr", where="recipe.lr")


def _card(*hints, passed=False):
    return Scorecard((Verdict("static", 0, True, True, 1.0),
                      Verdict("trainability", 3, True, passed, 0.0, hints=tuple(hints))))


class _Objective:
    def initial_candidate(self):
        return _cand(lr=10.0)

    def draft_summary(self):
        return "the model as given"


def test_every_repair_answers_a_real_kind_and_nan_loss_starts_with_lowering_the_lr():
    assert [r.name for r in repairs_for(HintKind.NAN_LOSS)][:2] == ["lower_lr",
                                                                   "clip_gradients"]


def test_lower_lr_cuts_harder_when_the_loss_blows_up_at_once():
    c, what = lower_lr(_cand(lr=10.0), _nan(step=1))
    assert c.recipe.lr == pytest.approx(0.1) and what == "learning rate 10 -> 0.1"
    c, _ = lower_lr(_cand(lr=10.0), _nan(step=15))
    assert c.recipe.lr == pytest.approx(1.0)


def test_raise_capacity_uses_the_constructor_default_from_the_source():
    c, what = raise_capacity(_cand(), Hint(HintKind.METRIC_GAP, "metric", "m", 0.8, ">=0.9", ""))
    assert c.init_kwargs == {"hidden": 32} and what == "constructor argument hidden 16 -> 32"


def test_rules_agent_first_proposes_the_draft_then_answers_p1_and_records_the_chain():
    agent, journal = RulesAgent(), Journal()
    first = agent.propose(_Objective(), journal, [], [])
    assert first.recipe.lr == 10.0 and first.parent is None
    style = Hint(HintKind.STYLE, "static", "ruff F401", "unused", "none", "remove it")
    journal.add(Iteration(1, first, _card(_nan(), style), "rules"))
    second = agent.propose(_Objective(), journal, [_nan(), style], [])
    assert second.parent == 1
    assert second.recipe.lr == pytest.approx(0.1)
    assert second.notes["repairs"] == [{"repair": "lower_lr", "hint": "NAN_LOSS",
                                        "hint_key": _nan().key,
                                        "change": "learning rate 10 -> 0.1"}]


def test_rules_agent_does_not_repeat_a_repair_from_the_same_parent():
    agent, journal = RulesAgent(), Journal()
    first = agent.propose(_Objective(), journal, [], [])
    journal.add(Iteration(1, first, _card(_nan(), passed=False), "rules"))
    second = agent.propose(_Objective(), journal, [_nan()], [])
    # the second attempt scored worse: the agent goes back to 1 and tries the next repair
    journal.add(Iteration(2, second, Scorecard(()), "rules"))
    third = agent.propose(_Objective(), journal, [_nan()], [])
    assert third.parent == 1
    assert [r["repair"] for r in third.notes["repairs"]] == ["clip_gradients"]


def test_rules_agent_compounds_a_repair_that_did_not_hurt():
    agent, journal = RulesAgent(), Journal()
    first = agent.propose(_Objective(), journal, [], [])
    journal.add(Iteration(1, first, _card(_nan()), "rules"))
    second = agent.propose(_Objective(), journal, [_nan()], [])
    journal.add(Iteration(2, second, _card(_nan()), "rules"))  # same score: still NaN
    third = agent.propose(_Objective(), journal, [_nan()], [])
    assert third.parent == 2
    # builds on 2 (lr 0.1 kept) and, since lowering the lr did not end the NaN, clips instead
    assert third.recipe.lr == pytest.approx(0.1) and third.recipe.grad_clip == 1.0
    assert [r["repair"] for r in third.notes["repairs"]] == ["clip_gradients"]


def test_rules_agent_says_which_hints_it_cannot_answer():
    agent, journal = RulesAgent(), Journal()
    journal.add(Iteration(1, agent.propose(_Objective(), journal, [], []), _card(), "rules"))
    hint = Hint(HintKind.SHAPE_MISMATCH, "build", "output shape", [8, 3], "[8, 2]", "fix")
    with pytest.raises(NoProposal, match="no untried repair for SHAPE_MISMATCH"):
        agent.propose(_Objective(), journal, [hint], [])


def test_an_objective_that_narrows_the_playbook_gets_no_tuning_and_is_told_why():
    """migrate keeps Keras' recipe: a METRIC_GAP on a recipe equal to Keras' gets no longer
    schedule or cosine decay, and the reason names what the objective allows."""
    from autopilot_lab.objectives.migrate import MigrateObjective

    class _Migration(_Objective):
        name = "migrate"
        repairs = MigrateObjective.repairs
        repairs_reason = MigrateObjective.repairs_reason

    agent, journal = RulesAgent(), Journal()
    journal.add(Iteration(1, agent.propose(_Migration(), journal, [], []), _card(), "rules"))
    gap = Hint(HintKind.METRIC_GAP, "metric", "valid rmse", 0.41, "keras+2%",
               "train longer", where="recipe")
    with pytest.raises(NoProposal) as info:
        agent.propose(_Migration(), journal, [gap], [])
    assert "no untried repair for METRIC_GAP (migrate allows only keras_setting, " \
           "module_setting, reconvert_weights, remove_detach: the translation already trains " \
           "with Keras' recipe" in str(info.value)
    tuned = agent.propose(_Objective(), journal, [gap], [])  # improve: tunes as before
    assert [r["repair"] for r in tuned.notes["repairs"]] == ["longer_schedule"]
