"""Metric targets: parse what the user asked for into a metric, a direction and a number.

Grammar (spaces allowed around the operator):

- ``<metric><op><number>``, op one of ``>=``, ``<=``, ``>``, ``<``: e.g. ``roc_auc>=0.90``,
  ``rmse<=3.1``. The operator must point the metric's way (``rmse>=3`` is refused).
- ``baseline``, ``baseline+D``, ``baseline-D`` (D >= 0): relative to the HGB baseline's primary
  metric on the same split. ``+D`` asks for better than the baseline by D in the metric's
  direction, ``-D`` allows up to D worse; for rmse, ``+D`` means ``<= baseline - D``.
- ``None`` or empty: no target. ``met()`` is always True and ``gap()`` 0; the metric is the
  kind's primary one, held at an infinite bound (``>= -inf`` / ``<= inf``).

The metric must be one ``metrics.all_metrics`` reports for the task kind, and the bound must be
reachable (``roc_auc>=1.2`` is refused).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autopilot_lab.metrics import HIGHER_IS_BETTER, METRICS_BY_KIND, PRIMARY

BOUNDS = {"roc_auc": (0.0, 1.0), "accuracy": (0.0, 1.0), "balanced_accuracy": (0.0, 1.0),
          "log_loss": (0.0, math.inf), "rmse": (0.0, math.inf), "mae": (0.0, math.inf),
          "r2": (-math.inf, 1.0)}
_METRIC_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*(\S+)\s*$")
_BASELINE_RE = re.compile(r"^\s*baseline\s*(?:([+-])\s*(\S+))?\s*$", re.IGNORECASE)


class TargetError(ValueError):
    """A target text that cannot be parsed or cannot fit the task."""


@dataclass(frozen=True)
class Target:
    """A bound on one metric: ``metric op value`` (``strict`` for ``>``/``<``)."""

    metric: str
    op: str
    value: float
    text: str
    baseline: float | None = None
    strict: bool = False

    @property
    def is_set(self) -> bool:
        """False for "no target"."""
        return math.isfinite(self.value)

    def met(self, observed: float) -> bool:
        if not self.is_set:
            return True
        if observed is None or math.isnan(observed):
            return False
        if self.op == ">=":
            return observed > self.value if self.strict else observed >= self.value
        return observed < self.value if self.strict else observed <= self.value

    def gap(self, observed: float) -> float:
        """How far ``observed`` falls short of the bound, in metric units (0 when reached)."""
        if not self.is_set:
            return 0.0
        if observed is None or math.isnan(observed):
            return math.inf
        short = self.value - observed if self.op == ">=" else observed - self.value
        return max(0.0, float(short))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: "no target" stores value None."""
        return {"metric": self.metric, "op": self.op,
                "value": self.value if self.is_set else None, "text": self.text,
                "baseline": self.baseline, "strict": self.strict}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        value = d["value"]
        if value is None:
            value = -math.inf if d["op"] == ">=" else math.inf
        return cls(metric=d["metric"], op=d["op"], value=float(value), text=d["text"],
                   baseline=d.get("baseline"), strict=bool(d.get("strict", False)))

    def __str__(self) -> str:
        if not self.is_set:
            return f"no target ({self.metric} is reported)"
        op = self.op[0] if self.strict else self.op
        base = f" (baseline {self.baseline:.6g})" if self.baseline is not None else ""
        return f"{self.metric} {op} {self.value:.6g}{base}"


def parse_target(text: str | None, *, kind: str,
                 baseline: Callable[[], dict] | dict | None = None) -> Target:
    """Parse ``text`` for a task of ``kind``; ``baseline`` (hgb_baseline's dict, or a callable
    returning it) is only used, and only called, when the text mentions ``baseline``."""
    if kind not in METRICS_BY_KIND:
        raise TargetError(f"unknown task kind {kind!r}; use one of {', '.join(METRICS_BY_KIND)}")
    if text is None or not text.strip():
        metric = PRIMARY[kind]
        higher = HIGHER_IS_BETTER[metric]
        return Target(metric, ">=" if higher else "<=", -math.inf if higher else math.inf,
                      text or "")
    match = _BASELINE_RE.match(text)
    if match:
        return _baseline_target(text, match.group(1), match.group(2), kind, baseline)
    match = _METRIC_RE.match(text)
    if not match:
        example = f"{PRIMARY[kind]}{'>=0.9' if HIGHER_IS_BETTER[PRIMARY[kind]] else '<=1.5'}"
        raise TargetError(f"cannot parse target {text!r}: expected <metric><op><number> with op "
                          f"one of >=, <=, >, < (e.g. {example}), or baseline, baseline+D, "
                          "baseline-D")
    metric, op, number = match.group(1).lower(), match.group(2), match.group(3)
    _check_metric(metric, kind, text)
    value = _number(number, text)
    higher = HIGHER_IS_BETTER[metric]
    if higher != op.startswith(">"):
        way, want = ("higher", ">=") if higher else ("lower", "<=")
        raise TargetError(f"target {text!r} points the wrong way: {metric} is "
                          f"{way}-is-better, so the bound must use {want} or {want[0]} "
                          f"(e.g. {metric}{want}{value:g})")
    target = Target(metric, ">=" if higher else "<=", value, text, strict=len(op) == 1)
    _check_reachable(target, text)
    return target


class _BaselineLater(Exception):
    """Raised by :func:`check_target_text`'s stand-in baseline: the text is sound so far."""


def check_target_text(text: Any, *, kind: str) -> None:
    """Check a target text for a task of ``kind`` before any work is done (no baseline is
    computed): the grammar, the metric, the direction and an absolute bound's range. Raises
    ``TypeError`` for a target that is not text and ``TargetError`` as ``parse_target`` does;
    a ``baseline...`` target's bound is only checked once the baseline is known."""
    if text is not None and not isinstance(text, str):
        raise TypeError(f"target must be a text such as 'roc_auc>=0.9' or 'baseline-0.02', or "
                        f"None; got {type(text).__name__} {text!r}")

    def later() -> dict:
        raise _BaselineLater

    try:
        parse_target(text, kind=kind, baseline=later)
    except _BaselineLater:
        pass


def _baseline_target(text: str, sign: str | None, number: str | None, kind: str,
                     baseline: Callable[[], dict] | dict | None) -> Target:
    if baseline is None:
        raise TargetError(f"target {text!r} is relative to the HGB baseline, but no baseline "
                          "was given (pass baseline=hgb_baseline(task) or a callable)")
    delta = 0.0 if number is None else _number(number, text)
    if delta < 0:
        raise TargetError(f"target {text!r}: D in baseline+D / baseline-D must be >= 0; the "
                          "sign says the direction")
    info = baseline() if callable(baseline) else baseline
    try:
        metric, base = str(info["primary"]), float(info["value"])
    except (KeyError, TypeError, ValueError):
        raise TargetError(f"target {text!r}: the baseline must be a dict with 'primary' and "
                          f"a numeric 'value' (as hgb_baseline returns); got {info!r}") from None
    _check_metric(metric, kind, text)
    if not math.isfinite(base):
        raise TargetError(f"target {text!r}: the baseline's {metric} is {base}; no bound can "
                          "be set relative to it")
    higher = HIGHER_IS_BETTER[metric]
    step = {"+": delta, "-": -delta, None: 0.0}[sign]
    value = round(base + step if higher else base - step, 12)
    target = Target(metric, ">=" if higher else "<=", value, text, baseline=base)
    _check_reachable(target, text)
    return target


def _check_metric(metric: str, kind: str, text: str) -> None:
    valid = METRICS_BY_KIND[kind]
    if metric in valid:
        return
    if metric in HIGHER_IS_BETTER:
        fits = (metric in METRICS_BY_KIND["regression"]) == (kind == "regression")
        why = f"is not reported for {kind} tasks" if fits else f"does not fit a {kind} task"
        raise TargetError(f"target {text!r}: {metric} {why}; metrics for {kind}: "
                          f"{', '.join(valid)}")
    close = difflib.get_close_matches(metric, valid, n=2, cutoff=0.4)
    raise TargetError(f"target {text!r}: unknown metric {metric!r}; metrics for {kind}: "
                      f"{', '.join(valid)}"
                      + (f" (did you mean {', '.join(close)}?)" if close else ""))


def _number(text: str, target_text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TargetError(f"target {target_text!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TargetError(f"target {target_text!r}: the bound must be a finite number")
    return value


def _check_reachable(target: Target, text: str) -> None:
    low, high = BOUNDS[target.metric]
    value = target.value
    beyond = value > high or (target.strict and value >= high) if target.op == ">=" \
        else value < low or (target.strict and value <= low)
    if beyond:
        shown = f"{target.op[0] if target.strict else target.op} {value:.6g}"
        raise TargetError(f"target {text!r} asks for {target.metric} {shown}, but "
                          f"{target.metric} lies in [{low:g}, {high:g}]; it can never be met")
