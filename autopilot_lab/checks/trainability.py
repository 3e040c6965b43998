"""Tier 3: a few optimizer steps with the recipe. Catches, in seconds, what a full training
run would reveal only at its end: NaN loss, parameters without gradient, exploding gradients,
a loss that does not fall, dead ReLU units."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autopilot_lab.candidate import Candidate, Recipe
from autopilot_lab.checks.base import Check, CheckContext
from autopilot_lab.checks.measured import Malformed, Measurements, recompute_loss
from autopilot_lab.harness.probes import r
from autopilot_lab.harness.training import resolve_loss, target_scaling
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.scorecard import Verdict

PROBE_STEPS = 20
PROBE_BATCH = 64
LOSS_AGREEMENT = 1e-4  # a reported loss this far (relative) from ours is not its outputs'
EXPLODING_NORM = 1e4
LEARNING_RATIO = 0.98  # mean loss of the last 5 steps must be below this x the first 5
DEAD_FRACTION = 0.6


def _finite(x) -> bool:
    return not isinstance(x, str)


class TrainabilityCheck(Check):
    """``hard=False``: reports without gating (a migration after parity, an improve run that
    starts from a candidate that already trained)."""

    name = "trainability"
    tier = 3

    def __init__(self, hard: bool = True) -> None:
        self.hard = hard

    def evaluate(self, candidate: Candidate, ctx: CheckContext) -> Verdict:
        batches = probe_batches(len(ctx.labels("train")), ctx.seed)
        outcome = ctx.run_job(self.name, "trainability", candidate,
                              batches=[b.tolist() for b in batches])
        if outcome.status != "ok":
            return self.failed_run(outcome, candidate)
        res = _judged(Measurements(outcome.result), candidate.recipe, ctx, batches)
        keras = _keras_behaviour(ctx)
        recipe = candidate.recipe
        hints: list[Hint] = []
        losses = res["losses"]
        bad = next((i for i, v in enumerate(losses) if not _finite(v)), None)
        initial_ok = _finite(res["initial_loss"])
        if not initial_ok or bad is not None:
            step = 0 if not initial_ok else bad + 1
            hints.append(Hint(
                HintKind.NAN_LOSS, self.name, "training loss",
                f"{res['initial_loss'] if not initial_ok else losses[bad]} at step {step}",
                "finite at every step",
                f"lower the learning rate (now {recipe.lr:g}) or clip gradients "
                f"(grad_clip now {recipe.grad_clip:g})", where="recipe.lr"))
        for pname, g in res["gradients"].items():
            if g["state"] == "none" or (g["state"] == "ok" and g["zero"]):
                hints.append(Hint(
                    HintKind.NO_GRADIENT, self.name, "gradient",
                    "None" if g["state"] == "none" else "all zeros", "finite, non-zero",
                    f"parameter {pname} does not reach the loss: use it in forward() and "
                    "remove .detach() / torch.no_grad() on its path", where=pname))
            elif g["state"] == "ok" and not g["finite"]:
                hints.append(Hint(HintKind.EXPLODING_GRADIENT, self.name, "gradient",
                                  "non-finite", "finite", "clip gradients, lower the lr",
                                  where=pname))
        norms = [n for n in res["grad_norms"] if _finite(n)]
        if bad is None and norms and max(norms) > EXPLODING_NORM and \
                keras.get("grad_norm", 0.0) <= EXPLODING_NORM:  # not Keras' own gradient
            hints.append(Hint(HintKind.EXPLODING_GRADIENT, self.name, "gradient norm",
                              max(norms), f"<= {EXPLODING_NORM:g}",
                              f"clip gradients (e.g. grad_clip=1.0) or lower lr "
                              f"{recipe.lr:g}", where="recipe.grad_clip"))
        first = _mean(losses[:5])
        last = _mean(losses[-5:])
        if initial_ok and bad is None and len(losses) >= 10 and \
                not last < LEARNING_RATIO * first and keras.get("learns", True):
            hints.append(Hint(
                HintKind.NOT_LEARNING, self.name, "loss after probe steps",
                f"{last:.6g} (first steps {first:.6g})", f"< {LEARNING_RATIO * first:.6g}",
                "standardize the inputs (preprocessing='standardize') or raise the learning "
                f"rate (now {recipe.lr:g})", where="recipe.preprocessing"))
        for mod, frac in sorted(res["dead_fraction"].items()):
            if _finite(frac) and frac > DEAD_FRACTION and not keras:
                hints.append(Hint(HintKind.DEAD_UNITS, self.name, "dead unit fraction", frac,
                                  f"<= {DEAD_FRACTION}",
                                  "lower the learning rate or standardize inputs", where=mod))
        blocking = [h for h in hints if h.priority.value == 1]
        keeps = []
        if not blocking:
            n = len(res["gradients"])
            keeps.append(Keep(self.name, f"all {n} parameters get finite non-zero gradients; "
                                         f"loss falls {first:.4g} -> {last:.4g} in "
                                         f"{len(losses)} steps"))
        evidence = {"initial_loss": res["initial_loss"], "losses": losses,
                    "max_grad_norm": max(norms) if norms else None,
                    "dead_fraction": res["dead_fraction"], "loss": res["loss_name"],
                    **({"keras": keras} if keras else {})}
        return self.verdict(not blocking, 0.0 if blocking else 1.0, hints, keeps, evidence)


def probe_batches(n_rows: int, seed: int, steps: int = PROBE_STEPS) -> list[np.ndarray]:
    """The train rows of each probe step, drawn by the parent (the first batch twice: it
    gives the gradients before any update, then the first step)."""
    gen = np.random.default_rng(seed)
    size = min(PROBE_BATCH, n_rows)
    first = gen.choice(n_rows, size=size, replace=False)
    return [first] + [gen.choice(n_rows, size=size, replace=False) for _ in range(steps - 1)]


def _judged(m: Measurements, recipe: Recipe, ctx: CheckContext,
            batches: list[np.ndarray]) -> dict[str, Any]:
    """The probe's figures with every loss recomputed here from the returned outputs and the
    labels the parent holds; a reported loss that is not the loss of its outputs is
    tampering."""
    y = ctx.labels("train")
    kind = ctx.task["kind"]
    y_mean, y_std = (target_scaling(y) if kind == "regression"
                     and recipe.preprocessing == "standardize" else (0.0, 1.0))

    def loss_of(step: Measurements, rows: np.ndarray, penalty: float) -> float | str:
        ours = recompute_loss(recipe, kind, step, y[rows], y_mean=y_mean, y_std=y_std)
        total = ours + penalty
        claimed = step.number("loss")
        if math.isfinite(total) != math.isfinite(claimed) or (
                math.isfinite(total) and abs(total - claimed) > LOSS_AGREEMENT * max(
                    1.0, abs(total))):
            raise Malformed(f"{step.what}: the reported loss {claimed:.7g} is not the loss "
                            f"of the returned outputs ({total:.7g})")
        return r(total)

    steps = m.subs("steps")
    if not 1 <= len(steps) <= len(batches):
        raise Malformed(f"result.steps: {len(steps)} steps, expected 1 to {len(batches)}")
    losses, norms = [], []
    for i, step in enumerate(steps):
        penalty = step.number("penalty")
        if not penalty >= 0:
            penalty = math.nan
        losses.append(loss_of(step, batches[i], penalty))
        norms.append(r(step.number("grad_norm")))
        if isinstance(losses[-1], str) and i < len(steps) - 1:
            raise Malformed("result.steps: steps went on after a non-finite loss")
    initial = m.sub("initial")
    grads = {}
    for name in m.sub("gradients").keys():
        g = m.sub("gradients").sub(name)
        state = g.text("state", ("frozen", "none", "ok"))
        grads[name] = {"state": state} if state != "ok" else {
            "state": state, "norm": g.number("norm"), "finite": g.flag("finite"),
            "zero": g.flag("zero")}
    dead = m.sub("dead_fraction")
    return {"initial_loss": loss_of(initial, batches[0], steps[0].number("penalty")),
            "losses": losses, "grad_norms": norms, "gradients": grads,
            "dead_fraction": {k: r(dead.number(k)) for k in dead.keys()},
            "loss_name": resolve_loss(recipe, kind, m.integer("n_out", 1, 1 << 20))}


def _keras_behaviour(ctx: CheckContext) -> dict[str, Any]:
    """What the Keras reference does on its own first steps (migrate only): whether its loss
    falls over parity's 20 steps and its gradient norm on one batch. A plateau or a large
    gradient that Keras shows too is the model's own, not a mistake of the migration: judging
    it against a fixed bound raised NOT_LEARNING on correct translations. Dead units are the
    architecture's too: not reported for a migration."""
    if not ctx.reference or "arrays" not in ctx.reference:
        return {}
    ref = ctx.reference_arrays()
    losses = [float(v) for v in ref["dyn_losses"]]
    first, last = _mean(losses[:5]), _mean(losses[-5:])
    norm = math.sqrt(sum(float(np.square(ref[k]).sum()) for k in ref if k.startswith("grad__")))
    return {"learns": bool(len(losses) < 10 or last < LEARNING_RATIO * first),
            "loss_first": r(first), "loss_last": r(last), "grad_norm": r(norm)}


def _mean(values) -> float:
    vals = [v for v in values if _finite(v)]
    return sum(vals) / len(vals) if vals else float("nan")
