"""The parent's half of tier 2: Keras' numbers against what the sandboxed candidate measured.

Keras' outputs, per-layer outputs, loss, gradients and K-step weights (``reference.npz``,
written by ``migrate.reference`` in the caller) never enter the sandbox. The sandbox gets
inputs only (``parity_inputs``): the fixed train rows with their labels and fresh challenge
rows drawn per verification, for which the parent asks Keras afresh. :func:`compare` turns
the returned measurements into the differences ``checks.parity`` judges, recomputing every
loss from the returned outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from autopilot_lab.candidate import Recipe
from autopilot_lab.checks.measured import Malformed, Measurements, recompute_loss
from autopilot_lab.harness.probes import r

LAYER_ROWS = 16  # per-layer outputs compared on this many rows (they only localize)
CHALLENGE_ROWS = 64
CHALLENGE_JITTER = 0.1  # of each feature's spread over the fixed rows
LOSS_AGREEMENT = 1e-4


def parity_inputs(ref: dict[str, np.ndarray], meta: dict[str, Any], oracle: Any,
                  seed: int, path: Path) -> tuple[list[np.ndarray], int]:
    """Write the sandbox's ``parity.npz``: the fixed rows, then ``CHALLENGE_ROWS`` fresh rows
    drawn with ``seed`` (mixes of two fixed rows plus jitter; integer inputs: random valid
    ids), the fixed rows' labels and the K steps' rows. Returns Keras' outputs on the
    challenge rows (computed now, kept here) and the number of fixed rows."""
    rng = np.random.default_rng(seed)
    fixed = [ref[f"x_{i}"] for i in range(meta["n_inputs"])]
    n = len(fixed[0])
    pick_a, pick_b = rng.integers(0, n, CHALLENGE_ROWS), rng.integers(0, n, CHALLENGE_ROWS)
    mix = rng.uniform(0.0, 1.0, (CHALLENGE_ROWS,) + (1,) * (fixed[0].ndim - 1))
    challenge = []
    for x in fixed:
        if np.issubdtype(x.dtype, np.integer):
            high = max(int(x.max()) + 1, 1)
            challenge.append(rng.integers(0, high, (CHALLENGE_ROWS, *x.shape[1:])).astype(x.dtype))
            continue
        m = mix.reshape((CHALLENGE_ROWS,) + (1,) * (x.ndim - 1))
        spread = x.std(axis=0, keepdims=True)
        rows = m * x[pick_a] + (1 - m) * x[pick_b]
        rows = rows + CHALLENGE_JITTER * spread * rng.standard_normal(rows.shape)
        challenge.append(rows.astype(x.dtype))
    keras_out = oracle.outputs(challenge) if oracle is not None else None
    with path.open("wb") as fh:
        np.savez(fh, y=ref["y"], dyn_index=ref["dyn_index"],
                 **{f"x_{i}": np.concatenate([x, c]) if keras_out is not None else x
                    for i, (x, c) in enumerate(zip(fixed, challenge))})
    return keras_out or [], n


def _diff(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return {"shape": list(a.shape), "expected_shape": list(b.shape), "max_abs": "inf"}
    with np.errstate(invalid="ignore", over="ignore"):
        err = float(np.abs(a - b).max()) if a.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 0.0
    return {"max_abs": r(err), "rel": r(err / max(scale, 1e-12)), "scale": r(scale)}


def _num(x: Any) -> float:
    return float("inf") if isinstance(x, str) else float(x)


def _activations() -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    return {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
            "softmax": lambda t: torch.softmax(t, dim=-1), "elu": F.elu, "selu": F.selu,
            "gelu": F.gelu, "swish": F.silu, "silu": F.silu, "softplus": F.softplus,
            "relu6": F.relu6, "linear": lambda t: t}


def _layer_match(out: np.ndarray, ref: np.ndarray, activation: str | None) -> dict[str, Any]:
    """Best match of a submodule's output with the Keras layer's output, allowing for the
    channels-first layout inside forward(), an activation fused into the Keras layer, and a
    recurrent layer whose Keras output is only the last step."""
    import torch

    t = torch.as_tensor(out)
    act = _activations().get(activation or "linear")
    variants = {"as is": t, "channels last": t.movedim(1, -1) if t.ndim > 2 else t}
    if t.ndim == 3:
        variants["last step"] = t[:, -1]
    best: dict[str, Any] | None = None
    for variant, v in variants.items():
        for fused in (False, True):
            if fused and act is None:
                continue
            d = _diff((act(v) if fused else v).numpy(), ref)
            d["variant"] = variant + (f" + {activation}" if fused else "")
            if best is None or _num(d["max_abs"]) < _num(best["max_abs"]):
                best = d
    assert best is not None
    return best


def _settings(m: Measurements) -> dict[str, Any]:
    bn, drop = m.sub("batchnorm"), m.sub("dropout")
    order = m.data.get("order", [])
    if not (isinstance(order, list) and all(
            isinstance(o, list) and len(o) == 2 and isinstance(o[0], str)
            and o[1] in ("dropout", "normalization") for o in order)):
        raise Malformed("result.settings.order: expected [name, kind] pairs")
    return {"batchnorm": {k: {"eps": bn.sub(k).number("eps"),
                              "momentum": bn.sub(k).number("momentum")} for k in bn.keys()},
            "dropout": {k: drop.number(k) for k in drop.keys()},
            "order": [tuple(o) for o in order]}


def _penalty(recipe: Recipe, initial: Measurements) -> float:
    """The recipe's L1/L2 penalty of the returned starting weights, in float32 as in torch."""
    total = np.float32(0.0)
    for p in recipe.penalties:
        w = initial.array(p["param"]).astype(np.float32)
        if p.get("l1"):
            total += np.float32(p["l1"]) * np.abs(w).sum(dtype=np.float32)
        if p.get("l2"):
            total += np.float32(p["l2"]) * (w ** 2).sum(dtype=np.float32)
    return float(total)


def _checked_loss(recipe: Recipe, kind: str, step: Measurements, y: np.ndarray,
                  penalty: float) -> float:
    """Our loss of the returned outputs; a reported loss that disagrees is tampering."""
    ours = recompute_loss(recipe, kind, step, y) + penalty
    claimed = step.number("loss")
    if np.isfinite(ours) != np.isfinite(claimed) or (
            np.isfinite(ours) and abs(ours - claimed) > LOSS_AGREEMENT * max(1.0, abs(ours))):
        raise Malformed(f"{step.what}: the reported loss {claimed:.7g} is not the loss of "
                        f"the returned outputs ({ours:.7g})")
    return ours


def compare(m: Measurements, ref: dict[str, np.ndarray], meta: dict[str, Any],
            challenge_out: list[np.ndarray], recipe: Recipe, kind: str,
            keras_initial: dict[str, np.ndarray]) -> dict[str, Any]:
    """The differences ``checks.parity`` judges, computed here from the measurements."""
    y = ref["y"]
    batch = int(meta.get("batch", 32))
    res: dict[str, Any] = {"settings": _settings(m.sub("settings"))}
    outputs = m.arrays("outputs")
    if not 1 <= len(outputs) <= meta.get("n_outputs", 1):
        raise Malformed(f"result.outputs: {len(outputs)} outputs, Keras has "
                        f"{meta.get('n_outputs')}")
    res["forward"] = [_diff(o, np.concatenate([ref[f"out_{j}"], challenge_out[j]])
                            if challenge_out else ref[f"out_{j}"])
                      for j, o in enumerate(outputs)]
    layers = m.sub("layers")
    res["layers"] = [{"layer": a, **_layer_match(layers.array(a), ref[f"layer__{a}"][:LAYER_ROWS],
                                                  meta["activations"].get(a))}
                     for a in meta["layers"] if a in layers.data]
    initial = m.sub("initial")
    penalty = _penalty(recipe, initial)
    first = m.sub("batch")
    torch_loss = _checked_loss(recipe, kind, first, y[:batch], penalty)
    data_loss = torch_loss - penalty
    flipped = recompute_loss(recipe.replace(from_logits=not recipe.from_logits), kind, first,
                             y[:batch]) + penalty
    keras_weights = meta["expect"]["recipe"].get("class_weight")
    with_keras_weights = recompute_loss(recipe.replace(class_weight=keras_weights), kind, first,
                                        y[:batch]) + penalty
    res["loss"] = {"torch": r(torch_loss), "keras": r(meta["keras_loss"]),
                   "keras_regularization": r(meta["keras_regularization"]),
                   "counterfactual": {"from_logits_flipped": r(flipped),
                                      "without_penalties": r(data_loss),
                                      "keras_class_weight": r(with_keras_weights)}}
    grads_m = m.sub("gradients")
    grads: dict[str, Any] = {}
    for key in sorted(k[len("grad__"):] for k in ref if k.startswith("grad__")):
        want = ref[f"grad__{key}"]
        keras_norm = r(np.linalg.norm(want))
        if key not in grads_m.data:
            grads[key] = {"state": "missing", "keras_norm": keras_norm}
            continue
        g = grads_m.sub(key)
        if g.text("state", ("ok", "none")) == "none":
            grads[key] = {"state": "none", "keras_norm": keras_norm}
        else:
            grads[key] = {"state": "ok", "keras_norm": keras_norm,
                          "data_grad": g.text("data_grad", ("none", "zero", "ok")),
                          **_diff(g.array("grad"), want)}
    res["gradients"] = grads
    dyn = m.sub("dynamics")
    steps = dyn.subs("steps")
    index = ref["dyn_index"]
    if len(steps) != len(index):
        raise Malformed(f"result.dynamics.steps: {len(steps)} steps, expected {len(index)}")
    losses = [r(_checked_loss(recipe, kind, s, y[rows], s.number("penalty")))
              for s, rows in zip(steps, index)]
    final_m, twins_m = dyn.sub("final"), dyn.sub("twins")
    final: dict[str, Any] = {}
    for k in sorted(ref):
        if not k.startswith("final__"):
            continue
        key = k[len("final__"):]
        if key not in final_m.data:
            final[key] = {"state": "missing"}
            continue
        state = final_m.array(key)  # another shape than Keras' is a finding, not tampering
        final[key] = _diff(state, ref[k])
        if key in keras_initial and np.issubdtype(np.asarray(keras_initial[key]).dtype,
                                                  np.floating) and ref[k].size:
            final[key]["moved"] = r(float(np.abs(ref[k] - keras_initial[key]).max()))
        if key in twins_m.data:
            twins = twins_m.array(key, shape=(None, *state.shape))
            if twins.shape[0]:
                with np.errstate(invalid="ignore", over="ignore"):
                    final[key]["noise"] = r(float(np.abs(twins - state).max()))
    res["dynamics"] = {"torch_losses": losses,
                       "keras_losses": [r(v) for v in ref["dyn_losses"]], "final": final}
    return res
