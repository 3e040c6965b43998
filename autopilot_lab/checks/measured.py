"""The parent's reading of what a sandboxed job returned: typed access that rejects anything
out of protocol, and the arithmetic the parent redoes itself.

Candidate code runs in the same process as the harness, so every number from the sandbox is
a claim. :class:`Measurements` gives checks typed access (a missing key, a wrong type, an
array of the wrong shape raise :class:`Malformed`, which the ladder turns into a P1 TAMPERING
hint); :func:`recompute_loss` and :func:`scores` compute losses and predictions from the
returned outputs with our own code, so a patched loss or metric inside the sandbox changes
nothing the parent decides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from autopilot_lab.candidate import Recipe
from autopilot_lab.harness.wire import Malformed, unpack

__all__ = ["Malformed", "Measurements", "recompute_loss", "scores"]

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class Measurements:
    """A JSON object from the sandbox, read only through typed accessors."""

    def __init__(self, data: Any, what: str = "result"):
        if not isinstance(data, dict):
            raise Malformed(f"{what}: expected an object, got {type(data).__name__}")
        self.data, self.what = data, what

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise Malformed(f"{self.what}: missing {key!r}")
        return self.data[key]

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def sub(self, key: str) -> Measurements:
        return Measurements(self._get(key), f"{self.what}.{key}")

    def subs(self, key: str) -> list[Measurements]:
        items = self._get(key)
        if not isinstance(items, list):
            raise Malformed(f"{self.what}.{key}: expected a list")
        return [Measurements(x, f"{self.what}.{key}[{i}]") for i, x in enumerate(items)]

    def number(self, key: str) -> float:
        """A float; non-finite values travel as 'nan', 'inf', '-inf'."""
        value = self._get(key)
        if isinstance(value, str) and value in _NONFINITE:
            return _NONFINITE[value]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Malformed(f"{self.what}.{key}: expected a number, got {str(value)[:40]!r}")
        return float(value)

    def integer(self, key: str, low: int = 0, high: int = 1 << 40) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Malformed(f"{self.what}.{key}: expected an integer in [{low}, {high}]")
        return value

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise Malformed(f"{self.what}.{key}: expected true or false")
        return value

    def text(self, key: str, choices: Sequence[str] | None = None, limit: int = 200) -> str:
        value = self._get(key)
        if not isinstance(value, str) or len(value) > limit or (
                choices is not None and value not in choices):
            raise Malformed(f"{self.what}.{key}: expected "
                            + (f"one of {list(choices)}" if choices else "a short text"))
        return value

    def array(self, key: str, shape: Sequence[int | None] | None = None,
              floating: bool = True) -> np.ndarray:
        return unpack(self._get(key), f"{self.what}.{key}", shape=shape, floating=floating)

    def arrays(self, key: str, limit: int = 64) -> list[np.ndarray]:
        """A list of packed arrays (at most ``limit``)."""
        items = self._get(key)
        if not isinstance(items, list) or len(items) > limit:
            raise Malformed(f"{self.what}.{key}: expected a list of at most {limit} arrays")
        return [unpack(x, f"{self.what}.{key}[{i}]") for i, x in enumerate(items)]

    def keys(self) -> list[str]:
        return [str(k) for k in self.data]


def output_width(out: np.ndarray) -> int:
    return int(out.shape[1]) if out.ndim == 2 else 1


def recompute_loss(recipe: Recipe, kind: str, m: Measurements, y: np.ndarray,
                   rows: int | None = None, y_mean: float = 0.0, y_std: float = 1.0,
                   out_key: str = "out") -> float:
    """The recipe's data loss (no penalties) of the outputs in ``m`` against labels ``y`` the
    parent holds, with the harness' own loss code (Keras' logits rule included: ``m``'s
    ``logits`` carry the logits behind a softmax/sigmoid output)."""
    import torch

    from autopilot_lab.harness.training import Prepared, loss_function, targets

    n = len(y) if rows is None else rows
    out = m.array(out_key)
    if out.ndim not in (1, 2) or out.shape[0] != n:
        raise Malformed(f"{m.what}.{out_key}: shape {list(out.shape)}, expected {n} rows")
    tensor = torch.as_tensor(out, dtype=torch.float32)
    if m.has("logits"):
        lg = m.sub("logits")
        logits = lg.array("values", shape=out.shape)
        tensor._keras_logits = (lg.text("kind", ("softmax", "sigmoid")),  # type: ignore[attr-defined]
                                torch.as_tensor(logits, dtype=torch.float32))
    n_out = output_width(out)
    loss_fn, name = loss_function(recipe.replace(penalties=()), kind, n_out)
    prep = Prepared({}, y_mean, y_std)
    with torch.no_grad():
        return float(loss_fn.data_loss(tensor, targets(np.asarray(y), name, prep)))


def scores(out: np.ndarray, recipe: Recipe, kind: str, y_mean: float = 0.0,
           y_std: float = 1.0) -> np.ndarray:
    """Class probabilities or predictions on the original scale from raw outputs, with the
    harness' own arithmetic (``training.scores_from_outputs``)."""
    import torch

    from autopilot_lab.harness.training import resolve_loss, scores_from_outputs

    name = resolve_loss(recipe, kind, output_width(out))
    return scores_from_outputs(torch.as_tensor(out, dtype=torch.float32), name,
                               recipe.from_logits, y_mean, y_std)
