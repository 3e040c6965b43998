"""Sandbox job for tier 2 (migration parity): the candidate against the Keras reference.

Reads ``reference.npz`` (+ ``.json``) written by ``autopilot_lab.migrate.reference`` and
returns differences, never judgements: forward outputs, per-layer outputs (to localize), the
loss on one batch (and counterfactual losses that name a cause), the gradient of every
weight, K optimizer steps (losses and final weights), and the module settings that matter.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autopilot_lab.candidate import Recipe
from autopilot_lab.harness.model_loader import build_model
from autopilot_lab.harness.probes import r
from autopilot_lab.harness.training import loss_function, make_optimizer, round_off_gradients

ACTIVATIONS = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
               "softmax": lambda t: torch.softmax(t, dim=-1), "elu": F.elu, "selu": F.selu,
               "gelu": F.gelu, "swish": F.silu, "silu": F.silu, "softplus": F.softplus,
               "relu6": F.relu6, "linear": lambda t: t}


def _diff(a: torch.Tensor | np.ndarray, b: np.ndarray) -> dict[str, Any]:
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return {"shape": list(a.shape), "expected_shape": list(b.shape), "max_abs": "inf"}
    err = float(np.abs(a - b).max()) if a.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 0.0
    return {"max_abs": r(err), "rel": r(err / max(scale, 1e-12)), "scale": r(scale)}


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.movedim(1, -1) if t.ndim > 2 else t


def _layer_match(out: torch.Tensor, ref: np.ndarray, activation: str | None) -> dict[str, Any]:
    """Best match of a submodule's output with the Keras layer's output, allowing for the
    channels-first layout inside forward(), an activation fused into the Keras layer, and a
    recurrent layer whose Keras output is only the last step."""
    best = None
    act = ACTIVATIONS.get(activation or "linear")
    variants = {"as is": out, "channels last": _channels_last(out)}
    if out.ndim == 3:
        variants["last step"] = out[:, -1]
    for variant, t in variants.items():
        for fused in (False, True):
            if fused and act is None:
                continue
            cand = act(t) if fused else t
            d = _diff(cand, ref)
            d["variant"] = variant + (f" + {activation}" if fused else "")
            if best is None or _num(d["max_abs"]) < _num(best["max_abs"]):
                best = d
    return best


def _num(x) -> float:
    return float("inf") if isinstance(x, str) else float(x)


def _dropout_off(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                          nn.AlphaDropout)):
            m.p = 0.0


def _settings(model: nn.Module) -> dict[str, Any]:
    bn, drop = {}, {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            bn[name] = {"eps": r(m.eps), "momentum": r(m.momentum if m.momentum is not None
                                                       else float("nan"))}
        elif isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                            nn.AlphaDropout)):
            drop[name] = r(m.p)
    return {"batchnorm": bn, "dropout": drop}


def parity(payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    workdir = Path(workdir)
    ref = dict(np.load(workdir / "reference.npz"))
    meta = json.loads((workdir / "reference.npz.json").read_text())
    recipe = Recipe.from_dict(payload["recipe"])
    model = build_model(workdir, payload)
    initial = copy.deepcopy(model.state_dict())
    settings = _settings(model)
    xs = [torch.as_tensor(ref[f"x_{i}"]) for i in range(meta["n_inputs"])]
    result: dict[str, Any] = {"settings": settings}

    # forward, inference mode, with per-layer outputs captured by hooks
    captured: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    def capture(attr: str):
        def hook(_module, _inputs, output) -> None:  # returns None: never alters the output
            captured.setdefault(attr, output if isinstance(output, torch.Tensor) else output[0])
        return hook

    hooks = [modules[a].register_forward_hook(capture(a)) for a in meta["layers"]
             if a in modules]
    model.eval()
    with torch.no_grad():
        out = model(*xs)
    for h in hooks:
        h.remove()
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    result["forward"] = [_diff(o, ref[f"out_{j}"]) for j, o in enumerate(outs)]
    result["layers"] = [{"layer": a, **_layer_match(captured[a], ref[f"layer__{a}"],
                                                     meta["activations"].get(a))}
                        for a in meta["layers"] if a in captured]

    # loss and gradients on one batch, training mode, dropout off
    n_out = outs[0].shape[-1] if outs[0].ndim > 1 else 1
    batch = 32
    bx = [x[:batch] for x in xs]
    y = ref["y"]

    def loss_of(m: nn.Module, rec: Recipe, xb, yb) -> torch.Tensor:
        loss_fn, name = loss_function(rec, payload["task"]["kind"], n_out, m)
        target = torch.as_tensor(yb, dtype=torch.long if name == "cross_entropy"
                                 else torch.float32)
        if name != "cross_entropy":
            target = target.reshape(len(yb), -1)
        return loss_fn(m(*xb), target)

    model.train()
    _dropout_off(model)
    model.zero_grad(set_to_none=True)
    loss = loss_of(model, recipe, bx, y[:batch])
    loss.backward()
    with torch.no_grad():
        counter = {
            "from_logits_flipped": r(loss_of(model, recipe.replace(
                from_logits=not recipe.from_logits), bx, y[:batch])),
            "without_penalties": r(loss_of(model, recipe.replace(penalties=()), bx,
                                           y[:batch])),
        }
    result["loss"] = {"torch": r(loss), "keras": r(meta["keras_loss"]),
                      "keras_regularization": r(meta["keras_regularization"]),
                      "counterfactual": counter}
    params = dict(model.named_parameters())
    total = {k: (p.grad.detach().clone() if p.grad is not None else None)
             for k, p in params.items()}
    # the data loss alone: a weight reached only by its penalty is still cut off from the task
    model.zero_grad(set_to_none=True)
    loss_fn, _ = loss_function(recipe.replace(penalties=()), payload["task"]["kind"], n_out,
                               model)
    target = torch.as_tensor(y[:batch], dtype=torch.long if loss_fn.name == "cross_entropy"
                             else torch.float32)
    if loss_fn.name != "cross_entropy":
        target = target.reshape(batch if len(y) >= batch else len(y), -1)
    loss_fn(model(*bx), target).backward()
    grads = {}
    for key in sorted(k[len("grad__"):] for k in ref if k.startswith("grad__")):
        p = params.get(key)
        keras_norm = r(np.linalg.norm(ref[f"grad__{key}"]))
        if p is None:
            grads[key] = {"state": "missing", "keras_norm": keras_norm}
        elif total[key] is None or not p.requires_grad:
            grads[key] = {"state": "none", "keras_norm": keras_norm}
        else:
            data = p.grad
            grads[key] = {"state": "ok", "keras_norm": keras_norm,
                          "data_grad": "none" if data is None else
                          "zero" if bool((data == 0).all()) else "ok",
                          **_diff(total[key], ref[f"grad__{key}"])}
    result["gradients"] = grads

    # K optimizer steps from the same start, on the same batches. The floor below which a
    # difference is noise: how far this model's float32 run ends from the same steps in
    # float64, and from the same steps with GRAD_ROUNDING x the largest |element| of noise on
    # every gradient (the size of the Keras-vs-torch gradient difference on one batch: two
    # frameworks round the same sums differently). Adam makes a full step of a near-zero
    # gradient whatever its sign, so on some models that rounding alone flips a ReLU within
    # 20 steps (mushroom: a gradient of -4e-10 in Keras, +1e-9 here, a unit flipped at step 7)
    def steps(dtype: torch.dtype, grad_noise: bool = False) -> tuple[list, dict]:
        m = copy.deepcopy(model).to(dtype)
        m.load_state_dict(initial)
        m.train()
        _dropout_off(m)
        if grad_noise:
            round_off_gradients(m, gen)
        opt = make_optimizer(m, recipe)
        losses = []
        for rows in ref["dyn_index"]:
            opt.zero_grad(set_to_none=True)
            bx = [x[rows].to(dtype) if x.is_floating_point() else x[rows] for x in xs]
            step_loss = loss_of(m, recipe, bx, y[rows])
            step_loss.backward()
            if recipe.grad_clip > 0:
                nn.utils.clip_grad_norm_(m.parameters(), recipe.grad_clip)
            opt.step()
            losses.append(r(step_loss))
        return losses, m.state_dict()

    gen = torch.Generator().manual_seed(int(payload.get("seed", 0)))
    losses, state = steps(torch.float32)
    _, rounded = steps(torch.float32, grad_noise=True)
    try:
        _, state64 = steps(torch.float64)
    except (RuntimeError, TypeError):  # an op without float64 support: that twin unknown
        state64 = {}
    final = {}
    for k in sorted(ref):
        if not k.startswith("final__"):
            continue
        key = k[len("final__"):]
        if key not in state:
            final[key] = {"state": "missing"}
            continue
        final[key] = _diff(state[key], ref[k])
        if key in initial and initial[key].is_floating_point() and initial[key].numel():
            final[key]["moved"] = r(float(np.abs(ref[k] - initial[key].cpu().numpy()).max()))
        if state[key].is_floating_point():
            twins = [t for t in (state64.get(key), rounded.get(key)) if t is not None]
            final[key]["noise"] = r(max(float((state[key].double() - t.double()).abs().max())
                                        for t in twins))
    result["dynamics"] = {"torch_losses": losses,
                          "keras_losses": [r(v) for v in ref["dyn_losses"]], "final": final}
    return result
