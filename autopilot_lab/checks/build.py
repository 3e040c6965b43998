"""Tier 1: instantiate the candidate and forward one batch; check shape and dtype."""

from __future__ import annotations

import numpy as np

from autopilot_lab.candidate import Candidate
from autopilot_lab.checks.base import Check, CheckContext
from autopilot_lab.checks.measured import Malformed, Measurements
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.scorecard import Verdict


class BuildCheck(Check):
    name = "build"
    tier = 1
    hard = True

    def evaluate(self, candidate: Candidate, ctx: CheckContext) -> Verdict:
        outcome = ctx.run_job(self.name, "build", candidate)
        if outcome.status != "ok":
            return self.failed_run(outcome, candidate)
        m = Measurements(outcome.result)
        res = {"output_type": m.text("output_type"),
               "n_parameters": m.integer("n_parameters")}
        if res["output_type"] == "Tensor":
            shape = _shape(m)
            res.update(shape=shape, dtype=m.text("dtype"), floating=m.flag("floating"),
                       finite=None)
            if res["floating"]:  # finite or not is ours to say, from the outputs themselves
                res["finite"] = bool(np.isfinite(m.array("out", shape=shape)).all())
        expected = expected_outputs(ctx.task)
        hints = []
        if res.get("output_type") != "Tensor":
            hints.append(Hint(HintKind.DTYPE_MISMATCH, self.name, "forward() return type",
                              res.get("output_type"), "Tensor",
                              "return a single torch.Tensor of shape (batch, outputs)",
                              where=f"{candidate.entry}.forward"))
        else:
            shape = res["shape"]
            if len(shape) != 2 or shape[0] != 8 or shape[1] not in expected:
                widths = " or ".join(map(str, expected))
                hints.append(Hint(
                    HintKind.SHAPE_MISMATCH, self.name, "output shape", shape, f"[8, {widths}]",
                    f"make the last layer output {expected[0]} column(s) per row for a "
                    f"{ctx.task['kind']} task with {ctx.task['n_features']} input features",
                    where=f"{candidate.entry}.forward"))
            if not res["floating"]:
                hints.append(Hint(HintKind.DTYPE_MISMATCH, self.name, "output dtype",
                                  res["dtype"], "a floating dtype (float32)",
                                  "return logits / predictions as float tensors",
                                  where=f"{candidate.entry}.forward"))
            elif res["finite"] is False:
                hints.append(Hint(HintKind.NUMERICAL_INSTABILITY, self.name, "output finite",
                                  "NaN or inf at initialization", "finite outputs",
                                  "check the initialization and divisions/logs in forward()",
                                  where=f"{candidate.entry}.forward"))
        evidence = {k: res.get(k) for k in ("shape", "dtype", "n_parameters", "output_type")}
        if hints:
            return self.verdict(False, 0.0, hints, evidence=evidence)
        keeps = [Keep(self.name, f"builds ({res['n_parameters']} parameters) and returns "
                                 f"{res['shape']} {res['dtype']}")]
        return self.verdict(True, 1.0, (), keeps, evidence=evidence)


def expected_outputs(task: dict) -> list[int]:
    """Acceptable output widths: binary tasks take one logit or two."""
    if task["kind"] == "binary":
        return [2, 1]
    return [int(task["n_outputs"])]


def _shape(m: Measurements) -> list[int]:
    shape = m.data.get("shape")
    if not (isinstance(shape, list) and len(shape) <= 8 and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise Malformed("result.shape: expected a list of sizes")
    return shape
