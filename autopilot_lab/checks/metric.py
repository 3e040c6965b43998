"""Tier 5: train with the recipe's budget and compare the task metric with the target."""

from __future__ import annotations

import base64

from autopilot_lab import metrics
from autopilot_lab.candidate import Candidate
from autopilot_lab.checks.base import Check, CheckContext
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.scorecard import Verdict

OVERFIT_GAP = 0.08  # in quality units (see metrics.quality): train far better than valid
# training settings a migration must carry over, in the order they usually matter
TRAINING_SETTINGS = ("epochs", "batch_size", "lr", "optimizer", "early_stopping",
                     "weight_decay", "penalties", "from_logits", "loss", "eps", "betas",
                     "momentum", "rho", "nesterov", "centered", "class_weight")


class MetricCheck(Check):
    name = "metric"
    tier = 5
    hard = False

    def evaluate(self, candidate: Candidate, ctx: CheckContext) -> Verdict:
        shared = (ctx.reference or {}).get("shared_dropout")
        outcome = ctx.run_job(self.name, "train_eval", candidate,
                              **({"shared_dropout": shared} if shared else {}))
        if outcome.status != "ok":
            v = self.failed_run(outcome, candidate)
            v.evidence["target_met"] = False
            return v
        res = dict(outcome.result)
        weights = res.pop("weights_b64", None)
        if weights:
            ctx.outputs["weights"] = base64.b64decode(weights)
        recipe = candidate.recipe
        primary = ctx.target.metric if ctx.target else metrics.PRIMARY[ctx.task["kind"]]
        evidence = {"metric": primary, "target": ctx.target.text if ctx.target else None,
                    "history": res["history"], "epochs_run": res["epochs_run"],
                    "best_epoch": res["best_epoch"], "stopped_early": res["stopped_early"],
                    "loss": res["loss_name"], "shared_dropout": res.get("shared_dropout", [])}
        if res["diverged"]:
            d = res["diverged"]
            evidence.update(diverged=d, target_met=False)
            return self.verdict(False, 0.0, [Hint(
                HintKind.NAN_LOSS, self.name, "training loss",
                f"{d['loss']} at epoch {d['epoch']}", "finite for the whole training",
                f"lower the learning rate (now {recipe.lr:g}) or clip gradients",
                where="recipe.lr")], evidence=evidence)
        m = res["metrics"]
        value = m["test"][primary]
        evidence.update(metrics=m, value=value)
        hints = []
        met = ctx.target.met(value) if ctx.target else True
        evidence["target_met"] = met
        causes = _differences_from_reference(recipe, ctx.reference) if ctx.reference else []
        if not met and causes:
            # migrate: the gap to Keras' metric, and the training settings that differ from
            # the Keras recipe (the likely causes), the first one to repair first
            name, have, want = causes[0]
            others = "; ".join(f"{n} {h} (Keras {w})" for n, h, w in causes[1:])
            hints.append(Hint(
                HintKind.METRIC_GAP, self.name, f"test {primary} vs Keras (cause: {name})",
                f"{value:.4g} vs Keras {ctx.target.baseline:.4g}", want,
                f"short of {ctx.target.text} by {ctx.target.gap(value):.4g}; the recipe's "
                f"{name} is {have}, Keras trains with {want}: set it"
                + (f"; other differences: {others}" if others else ""),
                where=f"recipe.{name}"))
        elif not met:
            hints.append(Hint(HintKind.METRIC_GAP, self.name, f"test {primary}", value,
                              ctx.target.text,
                              f"short by {ctx.target.gap(value):.4g}: train longer (epochs "
                              f"{recipe.epochs}), add capacity, or tune the learning rate "
                              f"({recipe.lr:g})", where="recipe"))
        q_train = metrics.quality(primary, m["train"][primary], y_std=ctx.y_std)
        q_valid = metrics.quality(primary, m["valid"][primary], y_std=ctx.y_std)
        if q_train - q_valid > OVERFIT_GAP:
            hints.append(Hint(HintKind.OVERFITTING, self.name, f"train vs valid {primary}",
                              f"{m['train'][primary]:.4g} vs {m['valid'][primary]:.4g}",
                              f"quality gap <= {OVERFIT_GAP}",
                              "add weight decay or dropout, or stop early on the validation "
                              "loss", where="recipe.weight_decay"))
        keeps = [Keep(self.name, f"test {primary} {value:.4g} meets {ctx.target.text}")] \
            if met and ctx.target else []
        score = metrics.quality(primary, value, y_std=ctx.y_std)
        return self.verdict(met, score, hints, keeps, evidence)


def _differences_from_reference(recipe, reference: dict) -> list[tuple[str, object, object]]:
    """(setting, candidate's value, Keras' value) for each training setting that differs."""
    want = reference.get("expect", {}).get("recipe", {})
    have = recipe.to_dict()
    out = []
    for name in TRAINING_SETTINGS:
        if name in want and have.get(name) != want[name]:
            if isinstance(want[name], float) and isinstance(have.get(name), float) and \
                    abs(want[name] - have[name]) <= 1e-12 + 1e-9 * abs(want[name]):
                continue
            out.append((name, have.get(name), want[name]))
    return out
