"""Tier 2 (migrate), after parity: the exported ``train.py``, the script a user takes away.

Parity verifies the model and the recipe as our harness trains them; the script is another
program. When the candidate carries a ``train.py`` (a folder `autopilot migrate` wrote, given
to `autopilot verify`), its documented entry points run in the sandbox on parity's inputs
(``harness.train_script_probe``): ``predict`` must give Keras' inference outputs (a forgotten
``model.eval()`` leaves dropout on), and ``train_steps`` must take Keras' K steps: per-step losses
and final weights as Keras' (a loss summed instead of averaged, a missing gradient clip, another
optimizer), judged here by parity's drift rule against Keras' own weights, never against
anything the sandbox computed. Without a ``train.py`` there is nothing to verify.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autopilot_lab.candidate import Candidate
from autopilot_lab.checks.base import Check, CheckContext
from autopilot_lab.checks.measured import Malformed, Measurements
from autopilot_lab.checks.parity import DYN_LOSS_RTOL, FORWARD_TOL, _drifted
from autopilot_lab.checks.parity_compare import _diff, _num, parity_inputs
from autopilot_lab.harness.probes import r
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.scorecard import Verdict

SCRIPT = "train.py"


class TrainScriptCheck(Check):
    name = "train_script"
    tier = 2
    hard = True

    def evaluate(self, candidate: Candidate, ctx: CheckContext) -> Verdict:
        if SCRIPT not in candidate.files:
            return self.verdict(True, 1.0, evidence={
                "script": None, "not_applicable": "the candidate carries no train.py"})
        meta = ctx.reference
        ref = ctx.reference_arrays()
        inputs = ctx.data_path.with_name("parity-inputs.npz")
        parity_inputs(ref, meta, None, ctx.challenge_seed(candidate), inputs)
        outcome = ctx.run_job(self.name, "steps", candidate, module="train_script_probe",
                              inputs={"parity.npz": inputs})
        if outcome.status != "ok":
            return self.failed_run(outcome, candidate)
        m = Measurements(outcome.result)
        keras_initial = ctx.oracle.translation.state_dict if ctx.oracle is not None else {}
        res = _compare(m, ref, keras_initial, int(meta.get("batch", 32)))
        hints = _hints(self.name, res)
        evidence = {"predict": res["predict"], "losses": res["losses"],
                    "keras_losses": res["keras_losses"], "worst_weight": res["worst"]}
        if hints:
            return self.verdict(False, 0.0, hints, evidence=evidence)
        keeps = [Keep(self.name, f"train.py predicts as Keras and its {len(res['losses'])} "
                                 "steps train as the verified recipe")]
        return self.verdict(True, 1.0, (), keeps, evidence)


def _compare(m: Measurements, ref: dict[str, np.ndarray],
             keras_initial: dict[str, Any], batch: int) -> dict[str, Any]:
    """The script's predictions, losses and final weights against Keras' own, computed here:
    nothing the script returns is trusted beyond being a measurement of itself."""
    predicted = m.array("predicted")
    predict = _diff(predicted, ref["out_0"])
    losses = [_num(v) if isinstance(v, str) else float(v) for v in _list(m, "losses")]
    keras = [float(v) for v in ref["dyn_losses"]]
    final = m.sub("final")
    weights: dict[str, dict[str, Any]] = {}
    for k in sorted(ref):
        if not k.startswith("final__"):
            continue
        key = k[len("final__"):]
        if key not in final.data:
            weights[key] = {"max_abs": "inf", "state": "missing"}
            continue
        weights[key] = _diff(final.array(key), ref[k])
        start = keras_initial.get(key)
        if start is not None and np.issubdtype(np.asarray(start).dtype, np.floating) \
                and ref[k].size:
            weights[key]["moved"] = r(float(np.abs(ref[k] - np.asarray(start)).max()))
    drifted = {k: d for k, d in weights.items() if _drifted(k, d, batch)}
    worst = max(drifted.items(), key=lambda kv: _num(kv[1]["max_abs"]), default=(None, {}))
    return {"predict": predict, "losses": losses, "keras_losses": keras,
            "weights": weights, "worst": {"weight": worst[0], **worst[1]}}


def _list(m: Measurements, key: str) -> list:
    values = m.data.get(key)
    if not isinstance(values, list) or not all(
            isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in values):
        raise Malformed(f"result.{key}: expected a list of numbers")
    return values


def _hints(check: str, res: dict[str, Any]) -> list[Hint]:
    p = res["predict"]
    if _num(p["max_abs"]) > FORWARD_TOL * max(1.0, _num(p.get("scale", 0.0))):
        return [Hint(HintKind.IO_MISMATCH, check, "train.py predict() vs Keras' outputs",
                     p["max_abs"], f"<= {FORWARD_TOL:g}",
                     "predict() must run the model in inference mode: call model.eval() "
                     "(dropout off, BatchNorm's running statistics) before evaluating",
                     where="train.py:predict")]
    losses, keras = res["losses"], res["keras_losses"]
    steps = [i for i, (t, k) in enumerate(zip(losses, keras))
             if not abs(t - k) <= DYN_LOSS_RTOL * max(1.0, abs(k))]
    if len(losses) != len(keras):
        return [Hint(HintKind.IO_MISMATCH, check, "train.py train_steps()",
                     f"{len(losses)} losses", f"{len(keras)}, one per batch",
                     "train_steps(model, batches) must take one step per batch and return "
                     "the loss before each", where="train.py:train_steps")]
    if steps and steps[0] == 0:  # before any update: the loss function itself
        return [Hint(HintKind.IO_MISMATCH, check, "train.py loss on the first batch",
                     losses[0], keras[0],
                     "train.py's loss differs from Keras': check its reduction (Keras averages "
                     "over the batch), class weights and penalties", where="train.py:loss_fn")]
    w = res["worst"]
    if steps or w.get("weight"):
        observed = (f"loss {losses[steps[0]]} at step {steps[0] + 1} (Keras {keras[steps[0]]})"
                    if steps else f"{w['weight']} ends {w['max_abs']} from Keras'")
        return [Hint(HintKind.IO_MISMATCH, check, f"train.py's {len(losses)} steps", observed,
                     "Keras' steps",
                     "train.py steps differently from Keras although its loss on the first "
                     "batch matches: check its gradient clipping, its optimizer and its "
                     "settings", where="train.py:step")]
    return []
