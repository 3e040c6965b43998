"""Sandbox jobs: each loads the candidate, measures one dimension and returns plain JSON.

Every job has the signature ``job(payload, workdir) -> dict``; the payload carries the
candidate's entry, init kwargs, recipe, task sizes, seed and thread count. Numbers are rounded
to 7 significant digits so that the same code on the same data gives byte-identical JSON.
"""

from __future__ import annotations

import base64
import copy
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autopilot_lab import metrics
from autopilot_lab.candidate import Recipe
from autopilot_lab.harness import shared_dropout
from autopilot_lab.harness.model_loader import build_model, load_data, seed_everything
from autopilot_lab.harness.training import (
    fit,
    loss_function,
    make_optimizer,
    predict_scores,
    prepare,
    targets,
    train_step,
)

PROBE_BATCH = 64
MAX_WEIGHTS_BYTES = 32 * 2**20


def r(x: float) -> float | str:
    """Round for canonical JSON; non-finite values become their repr ('nan', 'inf')."""
    x = float(x)
    if not math.isfinite(x):
        return repr(x)
    return float(f"{x:.7g}")


def _setup(payload: dict[str, Any], workdir: Path):
    recipe = Recipe.from_dict(payload["recipe"])
    kind = payload["task"]["kind"]
    model = build_model(workdir, payload)
    prep = prepare(load_data(workdir, payload), recipe, kind)
    return model, recipe, kind, prep


def _n_out(model: nn.Module, X: np.ndarray) -> int:
    model.eval()
    with torch.no_grad():
        out = model(torch.as_tensor(X[:2]))
    return int(out.shape[1]) if out.ndim == 2 else 1


def build(payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Instantiate and run one forward pass; report what came out."""
    model, _, _, prep = _setup(payload, workdir)
    X = prep.parts["train"][0][:8]
    params = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    model.eval()
    with torch.no_grad():
        out = model(torch.as_tensor(X))
    result: dict[str, Any] = {"n_parameters": sum(math.prod(s) for _, s in params),
                              "parameters": [[n, list(s)] for n, s in params],
                              "output_type": type(out).__name__}
    if isinstance(out, torch.Tensor):
        result.update(shape=list(out.shape), dtype=str(out.dtype).replace("torch.", ""),
                      floating=bool(out.is_floating_point()),
                      finite=bool(torch.isfinite(out).all()) if out.is_floating_point() else None)
    return result


def _dead_unit_hooks(model: nn.Module, stats: dict[str, list[float]]):
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.ReLU, nn.ReLU6)):
            def hook(_m, _inp, out, name=name):
                alive = (out.detach().reshape(-1, out.shape[-1]) > 0).any(dim=0)
                stats.setdefault(name, []).append(float(1.0 - alive.float().mean()))
            hooks.append(mod.register_forward_hook(hook))
    return hooks


def trainability(payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """A few optimizer steps on fixed batches: gradients, loss trajectory, dead units."""
    steps = int(payload.get("steps", 20))
    model, recipe, kind, prep = _setup(payload, workdir)
    X, y = prep.parts["train"]
    n_out = _n_out(model, X)
    loss_fn, loss_name = loss_function(recipe, kind, n_out, model)
    model.train()
    opt = make_optimizer(model, recipe)
    gen = np.random.default_rng(int(payload.get("seed", 0)))
    batch = min(PROBE_BATCH, len(X))
    rows = gen.choice(len(X), size=batch, replace=False)
    xb = torch.as_tensor(X[rows])
    yb = targets(y[rows], loss_name, prep)
    dead: dict[str, list[float]] = {}
    hooks = _dead_unit_hooks(model, dead)
    # first step: gradients per parameter, before any update
    opt.zero_grad(set_to_none=True)
    loss0 = loss_fn(model(xb), yb)
    loss0.backward()
    for h in hooks:
        h.remove()
    grads = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            grads[name] = {"state": "frozen"}
        elif p.grad is None:
            grads[name] = {"state": "none"}
        else:
            g = p.grad.detach()
            grads[name] = {"state": "ok", "norm": r(g.norm()),
                           "finite": bool(torch.isfinite(g).all()),
                           "zero": bool((g == 0).all())}
    losses, gnorms = [], []
    for i in range(steps):
        rows = gen.choice(len(X), size=batch, replace=False) if i else rows
        loss, gnorm = train_step(model, opt, loss_fn, torch.as_tensor(X[rows]),
                                 targets(y[rows], loss_name, prep), recipe)
        losses.append(r(loss))
        gnorms.append(r(gnorm))
        if not math.isfinite(loss):
            break
    return {"loss_name": loss_name, "initial_loss": r(loss0.detach()), "losses": losses,
            "grad_norms": gnorms, "gradients": grads, "steps": steps, "batch": batch,
            "dead_fraction": {k: r(np.mean(v)) for k, v in dead.items()}}


def stability(payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """float64 vs float32 drift, extreme inputs, eval-mode batch invariance."""
    model, _, _, prep = _setup(payload, workdir)
    X = torch.as_tensor(prep.parts["valid"][0][:PROBE_BATCH])
    model.eval()
    with torch.no_grad():
        out32 = model(X).float()
        m64 = _as_float64(model)
        out64 = m64(X.double()).double() if m64 is not None else None
        scale = float(out32.abs().max().clamp_min(1.0))
        drift = (float((out32.double() - out64).abs().max()) / scale
                 if out64 is not None else None)
        extremes = {}
        for label, factor in (("x1e3", 1e3), ("x-1e3", -1e3), ("zeros", 0.0)):
            xe = X * factor if factor else torch.zeros_like(X)
            extremes[label] = bool(torch.isfinite(model(xe)).all())
        single = torch.cat([model(X[i:i + 1]) for i in range(min(16, len(X)))])
        batch_diff = float((single - out32[:len(single)]).abs().max()) / scale
    return {"finite": bool(torch.isfinite(out32).all()),
            "drift_f64": r(drift) if drift is not None else None,
            "extreme_inputs_finite": extremes, "batch_invariance": r(batch_diff)}


def _as_float64(model: nn.Module) -> nn.Module | None:
    try:
        return copy.deepcopy(model).double()
    except Exception:
        return None


def train_eval(payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Train with the recipe; metrics on train/valid/test; the trained weights."""
    model, recipe, kind, prep = _setup(payload, workdir)
    device = payload.get("device", "cpu")
    n_out = _n_out(model, prep.parts["train"][0])
    seed_everything(int(payload.get("seed", 0)), int(payload.get("threads", 1)))
    shared = payload.get("shared_dropout") or {}
    hooked = shared_dropout.install(model, shared["seed"], shared["modules"]) if shared else []
    hist, loss_name = fit(model, prep, recipe, kind, n_out, device=device,
                          seed=int(payload.get("seed", 0)))
    result: dict[str, Any] = {
        "shared_dropout": hooked, "loss_name": loss_name, "diverged": hist.diverged,
        "best_epoch": hist.best_epoch,
        "stopped_early": hist.stopped_early, "epochs_run": len(hist.epochs),
        "history": [{k: r(v) for k, v in e.items()} for e in hist.epochs]}
    if hist.diverged:
        return result
    scores = {}
    for part, (X, y) in prep.parts.items():
        pred = predict_scores(model, X, loss_name, prep, device=device,
                              from_logits=recipe.from_logits)
        if not np.all(np.isfinite(pred)):
            result["diverged"] = {"epoch": None, "step": None, "loss": "non-finite predictions"}
            return result
        scores[part] = {k: r(v) for k, v in metrics.all_metrics(kind, y, pred).items()}
    result["metrics"] = scores
    buf = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buf)
    if buf.tell() <= MAX_WEIGHTS_BYTES:
        result["weights_b64"] = base64.b64encode(buf.getvalue()).decode()
    return result
