"""Sandbox job for tier 2 (migration parity): the candidate's side of the comparison.

Measures only: outputs on the parity inputs, per-layer outputs (to localize), one batch's
training-mode outputs and every weight's gradient, K optimizer steps (losses, outputs and
final weights, with their float64 and round-off twins), and the module settings that matter.
Keras' numbers stay with the parent (``checks.parity_compare``), which compares.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autopilot_lab.candidate import Recipe
from autopilot_lab.harness.model_loader import build_model
from autopilot_lab.harness.probes import outputs_of, r
from autopilot_lab.harness.training import (
    clip_gradients,
    loss_function,
    make_optimizer,
    round_off_gradients,
)
from autopilot_lab.harness.wire import pack

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def _dropout_off(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, _DROPOUTS):
            m.p = 0.0


def _settings(model: nn.Module) -> dict[str, Any]:
    bn, drop = {}, {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            bn[name] = {"eps": r(m.eps), "momentum": r(m.momentum if m.momentum is not None
                                                       else float("nan"))}
        elif isinstance(m, _DROPOUTS):
            drop[name] = r(m.p)
    return {"batchnorm": bn, "dropout": drop}


def parity(payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Measure the candidate on the parity inputs (``parity.npz``: ``x_<i>`` rows, the labels
    ``y`` of the first rows and ``dyn_index``, the rows of each of K steps). Returns the
    outputs, the first rows' per-layer outputs, one batch's training-mode outputs and
    gradients, K steps' losses and outputs, and the weights at the start and after the K
    steps (float32, float64 and with gradient round-off): the parent compares them with
    Keras' numbers, which never enter the sandbox."""
    workdir = Path(workdir)
    data = dict(np.load(workdir / "parity.npz"))
    recipe = Recipe.from_dict(payload["recipe"])
    model = build_model(workdir, payload)
    initial = copy.deepcopy(model.state_dict())
    xs = [torch.as_tensor(data[f"x_{i}"]) for i in range(int(payload["n_inputs"]))]
    y = data["y"]
    layer_rows = int(payload.get("layer_rows", 16))
    result: dict[str, Any] = {"settings": _settings(model),
                              "initial": {k: pack(v) for k, v in initial.items()}}

    # forward, inference mode, with per-layer outputs captured by hooks
    captured: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())

    def capture(attr: str):
        def hook(_module, _inputs, output) -> None:  # returns None: never alters the output
            captured.setdefault(attr, output if isinstance(output, torch.Tensor) else output[0])
        return hook

    hooks = [modules[a].register_forward_hook(capture(a)) for a in payload["layers"]
             if a in modules]
    order: list[str] = []  # the order the forward pass calls normalization and dropout in
    hooks += [m.register_forward_pre_hook(lambda _m, _i, name=name: order.append(name))
              for name, m in modules.items() if isinstance(m, (*_NORMS, *_DROPOUTS))]
    model.eval()
    with torch.no_grad():
        out = model(*xs)
    for h in hooks:
        h.remove()
    result["settings"]["order"] = [
        [name, "dropout" if isinstance(modules[name], _DROPOUTS) else "normalization"]
        for name in order]
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    result["outputs"] = [pack(o) for o in outs]
    result["layers"] = {a: pack(t[:layer_rows]) for a, t in captured.items()
                        if isinstance(t, torch.Tensor)}

    # loss and gradients on one batch, training mode, dropout off
    n_out = outs[0].shape[-1] if outs[0].ndim > 1 else 1
    batch = int(payload.get("batch", 32))
    bx = [x[:batch] for x in xs]

    def loss_of(m: nn.Module, rec: Recipe, xb, yb, record: dict | None = None
                ) -> torch.Tensor:
        loss_fn, name = loss_function(rec, payload["task"]["kind"], n_out, m)
        target = torch.as_tensor(yb, dtype=torch.long if name == "cross_entropy"
                                 else torch.float32)
        if name != "cross_entropy":
            target = target.reshape(len(yb), -1)
        o = m(*xb)
        if record is not None:
            with torch.no_grad():
                record.update(outputs_of(o), penalty=r(loss_fn.penalty()))
        return loss_fn(o, target)

    model.train()
    _dropout_off(model)
    model.zero_grad(set_to_none=True)
    record: dict[str, Any] = {}
    loss = loss_of(model, recipe, bx, y[:batch], record)
    loss.backward()
    result["batch"] = {"loss": r(loss.detach()), **record}
    params = dict(model.named_parameters())
    total = {k: (p.grad.detach().clone() if p.grad is not None else None)
             for k, p in params.items()}
    # the data loss alone: a weight reached only by its penalty is still cut off from the task
    model.zero_grad(set_to_none=True)
    loss_of(model, recipe.replace(penalties=()), bx, y[:batch]).backward()
    grads = {}
    for key, p in params.items():
        if total[key] is None or not p.requires_grad:
            grads[key] = {"state": "none"}
        else:
            data_grad = p.grad
            grads[key] = {"state": "ok", "grad": pack(total[key]),
                          "data_grad": "none" if data_grad is None else
                          "zero" if bool((data_grad == 0).all()) else "ok"}
    result["gradients"] = grads

    # K optimizer steps from the same start, on the same batches, in float32, in float64 and
    # with GRAD_ROUNDING x the largest |element| of noise on every gradient: how far this
    # model's own rounding moves it (the parent's floor for calling a weight different)
    def steps(dtype: torch.dtype, grad_noise: bool = False) -> tuple[list, dict]:
        m = copy.deepcopy(model).to(dtype)
        m.load_state_dict(initial)
        m.train()
        _dropout_off(m)
        if grad_noise:
            round_off_gradients(m, gen)
        opt = make_optimizer(m, recipe)
        measured = []
        for rows in data["dyn_index"]:
            opt.zero_grad(set_to_none=True)
            bx = [x[rows].to(dtype) if x.is_floating_point() else x[rows] for x in xs]
            step: dict[str, Any] = {}
            step_loss = loss_of(m, recipe, bx, y[rows], step)
            step_loss.backward()
            clip_gradients(m, recipe)
            opt.step()
            measured.append({"loss": r(step_loss.detach()), **step})
        return measured, m.state_dict()

    gen = torch.Generator().manual_seed(int(payload.get("seed", 0)))
    measured, state = steps(torch.float32)
    _, rounded = steps(torch.float32, grad_noise=True)
    try:
        _, state64 = steps(torch.float64)
    except (RuntimeError, TypeError):  # an op without float64 support: that twin unknown
        state64 = {}
    result["dynamics"] = {
        "steps": measured, "final": {k: pack(v) for k, v in state.items()},
        "twins": {k: pack(torch.stack([t[k].double() for t in (state64, rounded)
                                       if k in t]).float())
                  for k, v in state.items() if v.is_floating_point()}}
    return result
