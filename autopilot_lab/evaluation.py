"""The split protocol, in code: train fits, valid decides, test is scored once, at the end.

During a run every decision reads the valid part: early stopping, whether a target is met,
every hint, the score that ranks candidates and so the best-of choice, and all that an agent
or a live view sees. The metric tier keeps the test rows' outputs of each candidate unscored
(``CheckContext.keep_test_outputs``). When the run ends, :func:`final_test` scores the test
part once, for the candidate already chosen, beside the references' test figures (the Keras
original, the classical baseline), and says plainly when valid and test disagree about the
target. docs/evaluation.md gives the reasons.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autopilot_lab import metrics
from autopilot_lab.checks.base import CheckContext
from autopilot_lab.checks.measured import scores
from autopilot_lab.checks.metric import MetricCheck
from autopilot_lab.harness.probes import r
from autopilot_lab.harness.training import target_scaling
from autopilot_lab.journal import Iteration


def final_test(objective: Any, ctx: CheckContext, best: Iteration | None) -> dict[str, Any]:
    """The run's one test scoring: the chosen candidate's test metrics against the test
    target, the references' test figures, and whether the test part confirms the choice."""
    references = objective.test_references()
    if best is None:
        return {"scored": False, "references": references,
                "note": "no candidate was scored: the test part was not used"}
    verdict = best.scorecard.verdict("metric")
    if verdict is None or "metrics" not in verdict.evidence:
        return {"scored": False, "iteration": best.n, "references": references,
                "note": f"the chosen candidate (iteration {best.n}) has no validation metric "
                        "(it did not reach the metric tier): the test part was not used"}
    outputs = ctx.kept_test_outputs(best.candidate)
    if outputs is None:  # resumed: chosen in an earlier session; training is deterministic
        MetricCheck().run(best.candidate, ctx)
        outputs = ctx.kept_test_outputs(best.candidate)
    if outputs is None:
        return {"scored": False, "iteration": best.n, "references": references,
                "note": "training the chosen candidate again gave no test outputs"}
    kind, recipe = ctx.task["kind"], best.candidate.recipe
    y_train, y_test = ctx.labels("train"), ctx.labels("test")
    scaling = (target_scaling(y_train) if kind == "regression"
               and recipe.preprocessing == "standardize" else (0.0, 1.0))
    pred = scores(outputs, recipe, kind, *scaling)
    if not np.all(np.isfinite(pred)):
        return {"scored": False, "iteration": best.n, "references": references,
                "note": "the chosen candidate's test predictions are not finite"}
    found = {k: r(v) for k, v in metrics.all_metrics(kind, y_test, pred).items()}
    target = objective.test_target()
    primary = target.metric if target else metrics.PRIMARY[kind]
    value = found[primary]
    on_valid = verdict.evidence.get("target_met")
    on_test = target.met(value) if target else None
    out = {"scored": True, "iteration": best.n, "metric": primary, "value": value,
           "metrics": found, "valid_value": verdict.evidence.get("value"),
           "target": target.to_dict() if target else None,
           "target_met_on_valid": on_valid, "target_met_on_test": on_test,
           "references": references, "test_label_reads": ctx.label_reads.get("test", 0)}
    out["note"] = _agreement(primary, verdict.evidence.get("value"), value, on_valid, on_test,
                             target)
    return out


def _agreement(metric: str, valid: Any, test: float, on_valid: Any, on_test: bool | None,
               target: Any) -> str:
    """One sentence on whether the test part confirms what valid decided."""
    if target is None or on_test is None or on_valid is None:
        return f"test {metric} {test:.4g} (no target to confirm)"
    bound = f"{target.op} {target.value:.4g}"
    if on_valid and on_test:
        return f"confirmed on test: {metric} {test:.4g} {bound}"
    if on_valid and not on_test:
        return (f"the target was met on valid ({metric} {valid:.4g}) but not on test "
                f"({test:.4g}, needs {bound}): the choice was made on valid, as it must be; "
                "the test figure is the one to report")
    if on_test:
        return (f"the target was not met on valid ({metric} {valid:.4g}) though test gives "
                f"{test:.4g} {bound}: it does not count as met")
    return f"not met on test either: {metric} {test:.4g}, needs {bound}"
