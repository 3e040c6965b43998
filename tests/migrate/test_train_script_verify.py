"""What ships is verified (issue 14): the exported ``train.py`` runs in the sandbox through its
entry points and is compared with Keras; mistakes a hand edit makes in it are named."""

from __future__ import annotations

import pytest

from autopilot_lab.checks.train_script import TrainScriptCheck
from autopilot_lab.hints import HintKind
from autopilot_lab.migrate.train_script import train_script
from autopilot_lab.objectives.migrate import MigrateObjective
from autopilot_lab.sandbox import Sandbox
from tests.migrate.test_correct_migrations import _case

MISTAKES = {
    "correct": (None, None, None),
    "loss summed": ("    loss = per.mean()", "    loss = per.sum()", "train.py:loss_fn"),
    "no model.eval() in predict": ("    model.eval()\n    with torch.no_grad():\n        return",
                                   "    with torch.no_grad():\n        return",
                                   "train.py:predict"),
    "no gradient clipping": ("    keras_clip(model.parameters(), r.get(\"clipnorm\", 0.0), "
                             "r.get(\"grad_clip\", 0.0),\n               r.get(\"clipvalue\", "
                             "0.0))\n", "", "train.py:step"),
    "learning rate halved": ("r[\"optimizer\"], r[\"lr\"],", "r[\"optimizer\"], r[\"lr\"] * 0.5,",
                             "train.py:step"),
    # a script that reports losses but never steps: its weights are judged against Keras'
    # own, computed outside the sandbox, so nothing it runs beside the model can vouch for it
    "steps skipped": ("    opt.step()\n", "", "train.py:step"),
}


@pytest.fixture(scope="module")
def clipped(tmp_path_factory):
    model, spec, fit = _case("clipped")  # Adam 1e-2 with clipnorm 0.05: clipping is active
    objective = MigrateObjective(model, spec, fit=fit)
    ctx = objective.setup(tmp_path_factory.mktemp("clipped"), Sandbox())
    return objective, ctx


@pytest.mark.parametrize("label", list(MISTAKES))
def test_train_py_is_run_and_its_mistakes_are_named(clipped, label):
    objective, ctx = clipped
    base = objective.initial_candidate()
    script = train_script(base, objective.kind)
    old, new, where = MISTAKES[label]
    if old is not None:
        assert old in script, old
        script = script.replace(old, new, 1)
    candidate = base.replace(files={**base.files, "train.py": script})
    verdict = TrainScriptCheck().run(candidate, ctx)
    if where is None:
        assert verdict.passed and not verdict.hints, [h.to_text() for h in verdict.hints]
        assert verdict.evidence["predict"]["max_abs"] <= 1e-6
    else:
        assert not verdict.passed
        assert [(h.kind, h.where) for h in verdict.hints] == [(HintKind.IO_MISMATCH, where)], \
            [h.to_text() for h in verdict.hints]


def test_without_train_py_there_is_nothing_to_verify(clipped):
    objective, ctx = clipped
    verdict = TrainScriptCheck().run(objective.initial_candidate(), ctx)
    assert verdict.passed and not verdict.hints and verdict.label == "n/a"
    assert verdict.evidence == {"script": None,
                                "not_applicable": "the candidate carries no train.py"}
