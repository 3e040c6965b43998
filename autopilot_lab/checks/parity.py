"""Tier 2 (migrate): the candidate against the Keras reference, forward and in training.

Forward outputs alone are a shallow contract, so this also compares the loss and every
weight's gradient on one batch and the loss trajectory and final weights after K optimizer
steps. When something differs, the verdict names the cause it can see: the first diverging
layer, a BatchNorm or dropout setting, the optimizer's epsilon, a missing regularization
penalty, ``from_logits``, a parameter cut off from the loss.
"""

from __future__ import annotations

from typing import Any

from autopilot_lab.candidate import Candidate
from autopilot_lab.checks.base import Check, CheckContext
from autopilot_lab.checks.measured import Measurements
from autopilot_lab.checks.parity_compare import LAYER_ROWS, compare, parity_inputs
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.scorecard import Verdict

FORWARD_TOL = 1e-4    # max abs error, relative to max(1, output scale)
LOSS_RTOL = 1e-4
GRAD_RTOL = 1e-3      # max abs error over the gradient's own scale
DYN_LOSS_RTOL = 1e-3
DYN_WEIGHT_TOL = 1e-5  # max abs error after K steps, relative to max(1, weight scale) ...
NOISE_FACTOR = 10      # ... or to 10x the candidate's own float32-vs-float64 drift
MOVED_FRACTION = 0.05  # ... or to 5% of how far Keras moved the weight (see _drifted)
RECIPE_SETTINGS = ("optimizer", "lr", "eps", "betas", "momentum", "rho", "nesterov",
                   "centered", "keras_epsilon", "grad_clip", "clipnorm", "clipvalue",
                   "batch_size", "class_weight")


def _num(x) -> float:
    return float("inf") if isinstance(x, str) else float(x)


def _bad(d: dict[str, Any], tol: float) -> bool:
    if "max_abs" not in d:
        return True
    return _num(d["max_abs"]) > tol * max(1.0, _num(d.get("scale", 0.0)))


class ParityCheck(Check):
    name = "parity"
    tier = 2
    hard = True

    def evaluate(self, candidate: Candidate, ctx: CheckContext) -> Verdict:
        meta = ctx.reference
        ref = ctx.reference_arrays()
        seed = ctx.challenge_seed(candidate)
        inputs = ctx.data_path.with_name("parity-inputs.npz")
        challenge_out, _ = parity_inputs(ref, meta, ctx.oracle, seed, inputs)
        outcome = ctx.run_job(self.name, "parity", candidate, module="parity",
                              inputs={"parity.npz": inputs}, n_inputs=meta["n_inputs"],
                              layers=list(meta["layers"]), layer_rows=LAYER_ROWS,
                              batch=meta.get("batch", 32))
        if outcome.status != "ok":
            return self.failed_run(outcome, candidate)
        keras_initial = ctx.oracle.translation.state_dict if ctx.oracle is not None else {}
        res = compare(Measurements(outcome.result), ref, meta, challenge_out,
                      candidate.recipe, ctx.task["kind"], keras_initial)
        expect = meta["expect"]
        hints: list[Hint] = []
        # the earliest symptom names the cause; later ones follow from it and would only
        # repeat it (a wrong layer also changes the loss, the gradients and the training)
        hints += _settings_hints(self.name, res["settings"], expect, candidate)
        hints += _forward_hints(self.name, res, candidate)
        cut_off = _cut_off_hints(self.name, res["gradients"])
        hints += cut_off
        if not hints:
            hints += _loss_hints(self.name, res["loss"], candidate, expect)
        if not hints:
            hints += _gradient_hints(self.name, res["gradients"])
        if not hints:
            hints += _dynamics_hints(self.name, res["dynamics"], candidate, expect,
                                     ctx.reference.get("batch", 32))
        worst = max((_num(f["max_abs"]) for f in res["forward"] if "max_abs" in f),
                    default=float("inf"))
        evidence = {"forward": res["forward"], "first_diverging_layer": _first_bad_layer(res),
                    "loss": res["loss"], "dynamics_losses": {
                        "torch": res["dynamics"]["torch_losses"],
                        "keras": res["dynamics"]["keras_losses"]},
                    "max_abs_error": worst, "challenge_seed": seed,
                    "challenge_rows": len(challenge_out[0]) if challenge_out else 0}
        if hints:
            return self.verdict(False, 0.0, hints, evidence=evidence)
        steps = len(res["dynamics"]["torch_losses"])
        keeps = [Keep(self.name, f"outputs match Keras (max abs error {worst:.2g}); loss, "
                                 f"every gradient and {steps} optimizer steps match too")]
        return self.verdict(True, 1.0, (), keeps, evidence)


def _first_bad_layer(res: dict[str, Any]) -> str | None:
    return next((lay["layer"] for lay in res["layers"] if _bad(lay, FORWARD_TOL)), None)


def _settings_hints(check: str, settings: dict, expect: dict, c: Candidate) -> list[Hint]:
    hints = []
    for attr, want in sorted(expect["batchnorm"].items()):
        have = settings["batchnorm"].get(attr)
        if have is None:
            continue
        for key, label in (("eps", "epsilon"), ("momentum", "momentum")):
            if abs(_num(have[key]) - want[key]) > 1e-9:
                keras_side = ("Keras epsilon" if key == "eps"
                              else "1 - Keras momentum")
                hints.append(Hint(
                    HintKind.IO_MISMATCH, check, f"BatchNorm {label}", have[key], want[key],
                    f"set {key}={want[key]:g} on {attr} ({keras_side}); torch's default "
                    "differs from Keras'", where=f"{c.main}:{attr}"))
    for attr, rate in sorted(expect["dropout"].items()):
        have = settings["dropout"].get(attr)
        if have is None:
            hints.append(Hint(HintKind.IO_MISMATCH, check, "dropout placement", "missing",
                              rate, f"add nn.Dropout({rate:g}) as {attr} where Keras has it",
                              where=f"{c.main}:{attr}"))
        elif abs(_num(have) - rate) > 1e-9:
            hints.append(Hint(HintKind.IO_MISMATCH, check, "Dropout rate", have, rate,
                              f"use nn.Dropout({rate:g}) for {attr}", where=f"{c.main}:{attr}"))
    return hints + _order_hints(check, settings.get("order", []), expect.get("order", []), c)


def _order_hints(check: str, have: list, want: list, c: Candidate) -> list[Hint]:
    """Dropout on the other side of a normalization than in Keras: invisible in inference
    and in parity's K steps (dropout off), it changes what the normalization sees in
    training. Compared when both call the same number of each; the first swap is named."""
    kinds = [k for _, k in have]
    if not want or sorted(kinds) != sorted(k for _, k in want):
        return []
    for i, ((name, kind), (attr, expected)) in enumerate(zip(have, want)):
        if kind == expected:
            continue
        keras = " -> ".join(a for a, _ in want[max(0, i - 1):i + 2])
        ours = " -> ".join(n for n, _ in have[max(0, i - 1):i + 2])
        drop = attr if expected == "dropout" else name
        return [Hint(HintKind.IO_MISMATCH, check, "dropout order", ours, keras,
                     f"call {drop} where Keras applies its dropout ({keras}): on the other "
                     "side of a normalization it changes the statistics that layer learns in "
                     "training", where=f"{c.main}:{drop}")]
    return []


def _forward_hints(check: str, res: dict, c: Candidate) -> list[Hint]:
    bad = [(j, f) for j, f in enumerate(res["forward"]) if _bad(f, FORWARD_TOL)]
    if not bad:
        return []
    j, f = bad[0]
    layer = _first_bad_layer(res)
    lay = next((x for x in res["layers"] if x["layer"] == layer), None)
    if layer:
        suggestion = (f"{layer} is the first layer whose output differs from Keras "
                      f"(max abs error {lay['max_abs']}): check its weight conversion "
                      "(kernel transpose, gate order, bias) and its settings")
    else:
        suggestion = "the outputs differ but no single layer does: check forward()'s wiring"
    observed = f["max_abs"] if "max_abs" in f else f"shape {f.get('shape')}"
    expected = f"<= {FORWARD_TOL:g}" if "max_abs" in f else f"shape {f.get('expected_shape')}"
    return [Hint(HintKind.IO_MISMATCH, check, f"output {j} max abs error", observed, expected,
                 suggestion, where=layer or f"{c.entry}.forward")]


def _loss_hints(check: str, loss: dict, c: Candidate, expect: dict) -> list[Hint]:
    torch_l, keras_l = _num(loss["torch"]), _num(loss["keras"])
    if abs(torch_l - keras_l) <= LOSS_RTOL * max(1.0, abs(keras_l)):
        return []
    cf = loss["counterfactual"]
    close = lambda v: abs(_num(v) - keras_l) <= LOSS_RTOL * max(1.0, abs(keras_l))  # noqa: E731
    if close(cf["from_logits_flipped"]):
        want = not c.recipe.from_logits
        return [Hint(HintKind.IO_MISMATCH, check, "loss on one batch",
                     f"{torch_l:.6g} with from_logits={c.recipe.from_logits}",
                     want, f"set from_logits={want}: the model "
                     f"{'outputs probabilities' if not want else 'outputs logits'}, as Keras' "
                     "loss assumes", where="recipe.from_logits")]
    want_cw = expect["recipe"].get("class_weight")
    if want_cw != c.recipe.to_dict()["class_weight"] and close(
            cf.get("keras_class_weight", "inf")):
        return [Hint(HintKind.IO_MISMATCH, check, "loss on one batch",
                     f"{torch_l:.6g} with class_weight={c.recipe.to_dict()['class_weight']}",
                     want_cw, f"set the recipe's class_weight to {want_cw} (Keras' fit "
                     "class_weight): each sample's loss is scaled by its class's weight",
                     where="recipe.class_weight")]
    reg = _num(loss["keras_regularization"])
    want = expect["recipe"]["penalties"]
    if reg > 0 and abs(torch_l - (keras_l - reg)) <= LOSS_RTOL * max(1.0, abs(keras_l)):
        names = ", ".join(f"{p['param']} (l2={p['l2']:g}, l1={p['l1']:g})" for p in want)
        return [Hint(HintKind.IO_MISMATCH, check, "regularization penalties",
                     [dict(p) for p in c.recipe.penalties], want,
                     f"the loss is {torch_l:.6g}, Keras' {keras_l:.6g}: {reg:.4g} of "
                     f"regularization is missing; add the penalties {names}",
                     where="recipe.penalties")]
    return [Hint(HintKind.IO_MISMATCH, check, "loss on one batch", torch_l, keras_l,
                 "the loss differs from Keras': check the loss function, its reduction "
                 "(Keras averages over the batch) and class weights", where="recipe.loss")]


def _cut_off_hints(check: str, grads: dict) -> list[Hint]:
    """Weights the data loss does not reach while Keras' loss does."""
    hints = []
    for key, g in grads.items():
        if _num(g.get("keras_norm", 0.0)) == 0:
            continue
        # cut off: no gradient at all, or the data loss gives none while Keras' gradient is
        # far from ours (only a penalty's gradient left), not a round-off difference
        far = g["state"] == "ok" and _grad_bad(g) and _num(g.get("rel", "inf")) > 0.5
        if g["state"] in ("none", "missing") or (far and g.get("data_grad") != "ok"):
            observed = ("None" if g["state"] != "ok" else
                        "only the regularization penalty's gradient")
            hints.append(Hint(HintKind.NO_GRADIENT, check, "gradient", observed,
                              "the Keras gradient (non-zero)",
                              f"{key} gets no gradient from the loss while its Keras weight "
                              "does: remove .detach() / no_grad on its path and keep it a "
                              "trainable nn.Parameter", where=key))
    return hints


def _grad_bad(g: dict) -> bool:
    return _bad(g, GRAD_RTOL) and _num(g["max_abs"]) > GRAD_RTOL * _num(g.get("scale", 0.0))


def _gradient_hints(check: str, grads: dict) -> list[Hint]:
    hints = []
    for key, g in grads.items():
        if g["state"] == "ok" and _grad_bad(g):
            hints.append(Hint(HintKind.IO_MISMATCH, check, "gradient max abs error",
                              g["max_abs"], f"<= {GRAD_RTOL:g} x {g.get('scale')}",
                              f"the gradient of {key} differs from Keras': check the loss, "
                              "penalties and the layers between it and the output",
                              where=key))
    return hints


def _dynamics_hints(check: str, dyn: dict, c: Candidate, expect: dict,
                    batch: int) -> list[Hint]:
    k_steps = len(dyn["torch_losses"])
    steps = [i for i, (t, k) in enumerate(zip(dyn["torch_losses"], dyn["keras_losses"]))
             if abs(_num(t) - _num(k)) > DYN_LOSS_RTOL * max(1.0, abs(_num(k)))]
    weights = [k for k, d in dyn["final"].items() if _drifted(k, d, batch)]
    drift = (f"training drifts from Keras at step {steps[0] + 1}" if steps else
             f"{weights[0]} ends {dyn['final'][weights[0]].get('max_abs')} from Keras'"
             if weights else "")
    want, have = expect["recipe"], c.recipe.to_dict()
    for key in RECIPE_SETTINGS:  # a setting that differs is the cause, drift seen or not
        w, h = want[key], have.get(key)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (w, h))
        same = abs(float(w) - float(h)) <= 1e-12 + 1e-9 * abs(float(w)) if numbers else w == h
        if not same:
            return [Hint(HintKind.IO_MISMATCH, check, f"{k_steps}-step training",
                         f"{key}={h}", w,
                         f"set the recipe's {key} to {w} (Keras' value)"
                         + (f": {drift}" if drift else ""), where=f"recipe.{key}")]
    if not steps and not weights:
        return []
    first = weights[0] if weights else None
    return [Hint(HintKind.IO_MISMATCH, check, f"{k_steps}-step training",
                 f"loss differs from step {steps[0] + 1}" if steps else
                 f"{first} differs by {dyn['final'][first].get('max_abs')}",
                 "the same trajectory as Keras",
                 "training drifts from Keras with matching settings: check running-statistics "
                 "updates, the optimizer and the penalties", where=first or "recipe")]


def _drifted(key: str, d: dict, batch: int) -> bool:
    """A weight that ends the K steps further from Keras' than round-off explains: beyond the
    absolute floor, beyond 10x its own float32-vs-float64 drift, and beyond 5% of how far
    Keras moved it. The last: a ReLU that rounding puts on the other side of zero sends the
    run elsewhere (seen: a 1e-7 nudge of the start moved a BatchNorm bias 4e-4 in 20 steps,
    2.6% of its movement, exactly as far as Keras ended from torch). A wrong setting is named
    above whatever the drift; an update-rule difference smaller than that (torch's Adam
    epsilon placement: 1e-5 in 20 steps) is left to the metric tier."""
    if key.endswith("running_var"):
        # torch's BatchNorm updates running_var with the unbiased batch variance, Keras with
        # the biased one: a systematic n/(n-1) on the update, allowed for (nn.BatchNorm)
        return _num(d.get("rel", "inf")) > 2.0 / max(1, batch - 1)
    err = _num(d.get("max_abs", "inf"))
    return _bad(d, DYN_WEIGHT_TOL) and err > NOISE_FACTOR * _num(d.get("noise", 0.0)) and \
        err > MOVED_FRACTION * _num(d.get("moved", 0.0))
