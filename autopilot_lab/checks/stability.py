"""Tier 4: numerical stability in eval mode: float64 vs float32 drift, extreme inputs,
whether a row's output depends on the other rows of its batch, whether the same inputs give
the same outputs twice, and half-precision round trips inside forward()."""

from __future__ import annotations

from typing import Any

import numpy as np

from autopilot_lab.candidate import Candidate
from autopilot_lab.checks.base import Check, CheckContext
from autopilot_lab.checks.measured import Malformed, Measurements
from autopilot_lab.harness.probes import r
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.scorecard import Verdict

MAX_DRIFT = 1e-3          # relative to the output scale
MAX_BATCH_DEPENDENCE = 1e-4
# Two eval passes on the same inputs: bit-identical on the CPU, where the harness makes torch
# deterministic; on a GPU some kernels (atomic adds) reorder sums, so a difference is a finding
# only beyond this, relative to the output scale: far below noise a candidate would add.
ACCELERATOR_REPEAT_RTOL = 1e-6


class StabilityCheck(Check):
    name = "stability"
    tier = 4
    hard = True

    def evaluate(self, candidate: Candidate, ctx: CheckContext) -> Verdict:
        outcome = ctx.run_job(self.name, "stability", candidate,
                              int_columns=integer_columns(ctx.inputs("train")))
        if outcome.status != "ok":
            return self.failed_run(outcome, candidate)
        res = measured_stability(Measurements(outcome.result), ctx.device)
        where = f"{candidate.entry}.forward"
        hints = []
        if res["nondeterministic"] is not None:
            hints.append(Hint(HintKind.NONDETERMINISM, self.name,
                              "the same inputs twice in eval mode", res["nondeterministic"],
                              "identical outputs",
                              "remove randomness from forward() in eval mode (noise, sampling, "
                              "dropout applied with training=True)", where=where))
        if res["half_ops"] or res["f64_error"]:
            observed = (f"half-precision tensors from {', '.join(res['half_ops'])}"
                        if res["half_ops"] else f"no float64 run: {res['f64_error']}")
            hints.append(Hint(HintKind.PRECISION_LOSS, self.name, "precision in forward()",
                              observed, "float32 throughout (float64 when asked)",
                              "remove the fixed-dtype casts in forward() (.half(), .bfloat16(), "
                              ".float() on an intermediate); cast inputs with x.to(weight.dtype) "
                              "if needed", where=where))
        if not res["finite"]:
            hints.append(Hint(HintKind.NUMERICAL_INSTABILITY, self.name, "outputs on real rows",
                              "NaN or inf", "finite",
                              "guard divisions, logs and exps in forward()", where=where))
        drift = res["drift_f64"]
        if drift is not None and (isinstance(drift, str) or drift > MAX_DRIFT) \
                and not res["half_ops"]:  # the half round trip is the cause, said above
            hints.append(Hint(HintKind.NUMERICAL_INSTABILITY, self.name,
                              "float32 vs float64 drift", drift, f"<= {MAX_DRIFT:g}",
                              "avoid catastrophic cancellation; use stable ops "
                              "(logsumexp, log_softmax)", where=where))
        broken = sorted(k for k, ok in res["extreme_inputs_finite"].items() if not ok)
        if broken:
            hints.append(Hint(HintKind.NUMERICAL_INSTABILITY, self.name,
                              "outputs on extreme inputs", f"non-finite for {broken}", "finite",
                              "bound activations (no unguarded exp) or standardize inputs",
                              where=where))
        dep = res["batch_invariance"]
        if isinstance(dep, str) or dep > MAX_BATCH_DEPENDENCE:
            hints.append(Hint(HintKind.NUMERICAL_INSTABILITY, self.name,
                              "eval-mode batch dependence", dep, f"<= {MAX_BATCH_DEPENDENCE:g}",
                              "a row's output must not depend on other rows in eval mode: "
                              "use BatchNorm running statistics, no cross-row operations",
                              where=where))
        keeps = [] if hints else [Keep(self.name, "stable: float64 drift "
                                                  f"{drift}, finite on extreme inputs, "
                                                  "batch-invariant in eval mode")]
        return self.verdict(not hints, 0.0 if hints else 1.0, hints, keeps, evidence=res)


def measured_stability(m: Measurements, device: str = "cpu") -> dict[str, Any]:
    """Drift, finiteness and batch invariance, computed here from the returned outputs."""
    out32 = m.array("out32")
    if out32.ndim == 0 or len(out32) == 0:
        raise Malformed("result.out32: no rows")
    shape = list(out32.shape)
    scale = max(float(np.abs(out32[np.isfinite(out32)]).max(initial=0.0)), 1.0)
    drift = None
    if m.has("out64"):
        out64 = m.array("out64", shape=shape)
        with np.errstate(invalid="ignore", over="ignore"):
            drift = r(float(np.abs(out32 - out64).max()) / scale)
    extremes_m = m.sub("extremes")
    extremes = {label: bool(np.isfinite(extremes_m.array(label, shape=shape)).all())
                for label in ("x1e3", "x-1e3", "zeros")}
    single = m.array("single", shape=[min(16, shape[0]), *shape[1:]])
    with np.errstate(invalid="ignore", over="ignore"):
        dependence = float(np.abs(single - out32[:len(single)]).max()) / scale
    again = m.array("again", shape=shape)
    with np.errstate(invalid="ignore", over="ignore"):
        moved = float(np.nanmax(np.abs(again - out32))) if np.isfinite(out32).any() else 0.0
    same = np.array_equal(again, out32, equal_nan=True) or (
        device != "cpu" and np.array_equal(np.isfinite(again), np.isfinite(out32))
        and moved <= ACCELERATOR_REPEAT_RTOL * scale)
    half_ops = [str(op)[:80] for op in (m.data.get("half_ops") or [])][:8]
    f64_error = m.data.get("f64_error")
    return {"nondeterministic": None if same else f"outputs moved by up to {r(moved)}",
            "half_ops": half_ops, "f64_error": str(f64_error)[:300] if f64_error else None,
            "finite": bool(np.isfinite(out32).all()), "drift_f64": drift,
            "extreme_inputs_finite": extremes, "batch_invariance": r(dependence)}


def integer_columns(X: np.ndarray) -> dict[str, list]:
    """Columns whose train values are all integers (ids, category codes): their extreme
    inputs are their smallest and largest value, not x1e3 (no model meets id 3000 of 30)."""
    finite = np.isfinite(X).all(axis=0)
    integral = finite & np.all(np.equal(np.mod(X, 1), 0), axis=0)
    idx = [int(i) for i in np.flatnonzero(integral)]
    return {"idx": idx, "low": [float(X[:, i].min()) for i in idx],
            "high": [float(X[:, i].max()) for i in idx]}
