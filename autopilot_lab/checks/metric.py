"""Tier 5: train with the recipe's budget and compare the validation metric with the target.

Valid decides (the target, the score that ranks candidates, every hint); the test rows'
outputs are kept unscored for the run's one test scoring (docs/evaluation.md).
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np

from autopilot_lab import metrics
from autopilot_lab.candidate import Candidate
from autopilot_lab.checks.base import Check, CheckContext
from autopilot_lab.checks.measured import Malformed, Measurements, recompute_loss, scores
from autopilot_lab.harness.probes import r
from autopilot_lab.harness.training import EarlyStopping, resolve_loss, target_scaling
from autopilot_lab.harness.wire import pack, unpack
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.scorecard import Verdict

OVERFIT_GAP = 0.08  # in quality units (see metrics.quality): train far better than valid
# training settings a migration must carry over, in the order they usually matter
TRAINING_SETTINGS = ("epochs", "batch_size", "lr", "optimizer", "early_stopping",
                     "weight_decay", "penalties", "from_logits", "loss", "eps", "betas",
                     "momentum", "rho", "nesterov", "centered", "class_weight", "grad_clip",
                     "clipnorm", "clipvalue", "keras_epsilon")


class MetricCheck(Check):
    name = "metric"
    tier = 5
    hard = False

    def evaluate(self, candidate: Candidate, ctx: CheckContext) -> Verdict:
        shared = (ctx.reference or {}).get("shared_dropout")
        judge = EpochJudge(candidate, ctx)
        outcome = ctx.run_job(self.name, "train_eval", candidate, on_ask=judge,
                              **({"shared_dropout": shared} if shared else {}))
        if judge.problem:
            raise Malformed(judge.problem)
        if outcome.status != "ok":
            v = self.failed_run(outcome, candidate)
            v.evidence["target_met"] = False
            return v
        res = judge.result(Measurements(outcome.result))
        weights = outcome.result.get("weights_b64")
        if isinstance(weights, str) and not res["diverged"]:
            try:
                ctx.outputs["weights"] = base64.b64decode(weights, validate=True)
            except binascii.Error as exc:
                raise Malformed(f"result.weights_b64: not base64 ({exc})") from exc
        recipe = candidate.recipe
        primary = ctx.target.metric if ctx.target else metrics.PRIMARY[ctx.task["kind"]]
        evidence = {"metric": primary, "target": ctx.target.text if ctx.target else None,
                    "history": res["history"], "epochs_run": res["epochs_run"],
                    "best_epoch": res["best_epoch"], "stopped_early": res["stopped_early"],
                    "loss": res["loss_name"], "shared_dropout": res["shared_dropout"],
                    "challenge_seed": ctx.challenge_seed(candidate)}
        if res["diverged"]:
            d = res["diverged"]
            evidence.update(diverged=d, target_met=False)
            return self.verdict(False, 0.0, [Hint(
                HintKind.NAN_LOSS, self.name, "training loss",
                f"{d['loss']} at epoch {d['epoch']}", "finite for the whole training",
                f"lower the learning rate (now {recipe.lr:g}) or clip gradients",
                where="recipe.lr")], evidence=evidence)
        m = res["metrics"]  # train and valid only: the test part waits for the final scoring
        ctx.keep_test_outputs(candidate, judge.test_outputs())
        value = m["valid"][primary]
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
                HintKind.METRIC_GAP, self.name, f"valid {primary} vs Keras (cause: {name})",
                f"{value:.4g} vs Keras {ctx.target.baseline:.4g}", want,
                f"short of {ctx.target.text} by {ctx.target.gap(value):.4g}; the recipe's "
                f"{name} is {have}, Keras trains with {want}: set it"
                + (f"; other differences: {others}" if others else ""),
                where=f"recipe.{name}"))
        elif not met:
            hints.append(Hint(HintKind.METRIC_GAP, self.name, f"valid {primary}", value,
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
        keeps = [Keep(self.name, f"valid {primary} {value:.4g} meets {ctx.target.text}")] \
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


class EpochJudge:
    """The parent's half of training in the sandbox: answers, after each epoch, whether it
    is the best so far and whether to stop, from the validation loss it computes on the
    returned held-out outputs (Keras' EarlyStopping, ``training.EarlyStopping``); keeps each
    epoch's outputs, so the metrics come from what the parent saw, at the epoch it chose.
    Train and valid are scored; the test rows' outputs are kept, not scored.
    It never raises into the sandbox's supervisor: a question out of protocol is refused and
    remembered (``problem``)."""

    def __init__(self, candidate: Candidate, ctx: CheckContext):
        self.recipe, self.ctx, self.kind = candidate.recipe, ctx, ctx.task["kind"]
        self.rows = ctx.held_out(candidate)
        self.y_valid = ctx.labels("valid")
        y_train = ctx.labels("train")
        self.scaling = (target_scaling(y_train) if self.kind == "regression"
                        and self.recipe.preprocessing == "standardize" else (0.0, 1.0))
        self.n_eval = len(self.rows["valid"]) + len(self.rows["test"])
        self.stopper = EarlyStopping(self.recipe.early_stopping)
        self.outputs: list[np.ndarray] = []
        self.valid_losses: list[float] = []
        self.stopped = False
        self.problem: str | None = None
        self.chosen: np.ndarray | None = None

    def __call__(self, question: dict) -> dict:
        try:
            return self._answer(Measurements(question, "question"))
        except Malformed as exc:
            self.problem = self.problem or str(exc)
            return {"refused": str(exc)}

    def _answer(self, q: Measurements) -> dict:
        epoch = q.integer("epoch", 1, self.recipe.epochs)
        if self.stopped or epoch != len(self.outputs) + 1:
            told = ", told to stop" if self.stopped else ""
            raise Malformed(f"question: epoch {epoch} out of order (after "
                            f"{len(self.outputs)} epochs{told})")
        q.number("train_loss")
        out = q.array("eval")
        if out.ndim not in (1, 2) or out.shape[0] != self.n_eval:
            raise Malformed(f"question.eval: shape {list(out.shape)}, expected "
                            f"{self.n_eval} rows")
        valid = Measurements({"out": _rows(q.data["eval"], self.rows["valid"]),
                              "logits": _tagged_rows(q, self.rows["valid"])}, "question")
        loss = recompute_loss(self.recipe, self.kind, valid, self.y_valid,
                              y_mean=self.scaling[0], y_std=self.scaling[1])
        self.outputs.append(out)
        self.valid_losses.append(loss)
        best, stop = self.stopper.update(epoch, loss)
        self.stopped = stop
        return {"best": best, "stop": stop}

    def test_outputs(self) -> np.ndarray | None:
        """The held-out test rows' outputs at the chosen epoch, in test order: kept unscored
        for the run's one test scoring (``evaluation.final_test``)."""
        return None if self.chosen is None else self.chosen[self.rows["test"]]

    def result(self, m: Measurements) -> dict[str, Any]:
        """The run's figures: history, early stopping, divergence and metrics, from the
        returned history and train outputs and the held-out outputs kept per epoch."""
        history = m.subs("history")
        diverged = m.data.get("diverged")
        if len(history) != len(self.outputs):
            raise Malformed(f"result.history: {len(history)} epochs, but the parent was "
                            f"asked after {len(self.outputs)}")
        hist = [{"epoch": i + 1, "train_loss": r(h.number("train_loss")),
                 "valid_loss": r(v)} for i, (h, v) in enumerate(zip(history,
                                                                   self.valid_losses))]
        stopped_early = bool(self.stopped and self.recipe.early_stopping and
                             all(math.isfinite(v) for v in self.valid_losses))
        out: dict[str, Any] = {
            "history": hist, "epochs_run": len(hist), "best_epoch": self.stopper.best_epoch,
            "stopped_early": stopped_early, "diverged": None,
            "shared_dropout": [str(x) for x in m.data.get("shared_dropout") or []][:100],
            "loss_name": resolve_loss(self.recipe, self.kind, m.integer("n_out", 1, 1 << 20))}
        if diverged is not None:
            d = Measurements(diverged, "result.diverged")
            out["diverged"] = {"epoch": d.integer("epoch", 1, self.recipe.epochs),
                               "step": d.integer("step", 1), "loss": d.text("loss")}
        elif self.valid_losses and not math.isfinite(self.valid_losses[-1]):
            out["diverged"] = {"epoch": len(hist), "step": None,
                               "loss": repr(self.valid_losses[-1])}
        elif not self.outputs:
            raise Malformed("result: training ended without a single epoch")
        if out["diverged"]:
            return out
        chosen = (self.stopper.best_epoch if self.recipe.early_stopping and
                  self.recipe.restore_best and self.stopper.best_epoch else len(self.outputs))
        held = self.outputs[chosen - 1]
        y_train = self.ctx.labels("train")
        train = m.array("train_outputs")
        if train.shape[:1] != (len(y_train),) or (held.ndim == 2 and train.shape[1:] !=
                                                  held.shape[1:]):
            raise Malformed(f"result.train_outputs: shape {list(train.shape)}, expected "
                            f"{len(y_train)} rows like the held-out outputs")
        self.chosen = held
        parts = {"train": (train, y_train), "valid": (held[self.rows["valid"]], self.y_valid)}
        scored = {}
        for part, (o, y) in parts.items():
            pred = scores(o, self.recipe, self.kind, *self.scaling)
            if not np.all(np.isfinite(pred)):
                out["diverged"] = {"epoch": None, "step": None,
                                   "loss": "non-finite predictions"}
                return out
            scored[part] = {k: r(v) for k, v in metrics.all_metrics(self.kind, y, pred).items()}
        out["metrics"] = scored
        return out


def _rows(packed: Any, rows: np.ndarray) -> dict[str, Any]:
    """A packed array cut to ``rows`` (re-packed: recompute_loss reads packed arrays)."""
    return pack(unpack(packed, "question.eval")[rows].astype(np.float32))


def _tagged_rows(q: Measurements, rows: np.ndarray) -> dict[str, Any] | None:
    if not q.has("logits"):
        return None
    lg = q.sub("logits")
    return {"kind": lg.text("kind", ("softmax", "sigmoid")),
            "values": _rows(lg.data.get("values"), rows)}
