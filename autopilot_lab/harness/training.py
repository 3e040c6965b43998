"""Our training harness: trains a candidate from its recipe (CPU, or CUDA when present).

One implementation for probes, the metric check and the exported ``train.py``-style recipe,
so "the recipe" means the same thing everywhere.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from autopilot_lab.candidate import Recipe


@dataclass
class Prepared:
    """Arrays after the recipe's preprocessing, and how to undo it on predictions."""

    parts: dict[str, tuple[np.ndarray, np.ndarray]]
    y_mean: float = 0.0
    y_std: float = 1.0


def prepare(data: dict[str, np.ndarray], recipe: Recipe, kind: str) -> Prepared:
    """Apply ``recipe.preprocessing`` with statistics of the train part only."""
    parts = {p: (data[f"X_{p}"].astype(np.float32), data[f"y_{p}"])
             for p in ("train", "valid", "test") if f"X_{p}" in data}
    prep = Prepared(parts)
    if recipe.preprocessing == "standardize":
        X_train = parts["train"][0]
        mean = X_train.mean(axis=0)
        std = X_train.std(axis=0)
        std[std == 0] = 1.0
        prep.parts = {p: ((X - mean) / std, y) for p, (X, y) in parts.items()}
        if kind == "regression":
            prep.y_mean = float(parts["train"][1].mean())
            prep.y_std = float(parts["train"][1].std()) or 1.0
    return prep


def loss_function(recipe: Recipe, kind: str, n_out: int) -> tuple[nn.Module, str]:
    """The loss the recipe names, resolved for the task; returns (module, name)."""
    name = recipe.loss
    if name == "auto":
        if kind == "regression":
            name = "mse"
        elif kind == "binary" and n_out == 1:
            name = "bce_with_logits"
        else:
            name = "cross_entropy"
    losses = {"mse": nn.MSELoss, "huber": nn.HuberLoss, "cross_entropy": nn.CrossEntropyLoss,
              "bce_with_logits": nn.BCEWithLogitsLoss}
    return losses[name](), name


def targets(y: np.ndarray, loss_name: str, prep: Prepared) -> torch.Tensor:
    if loss_name == "cross_entropy":
        return torch.as_tensor(y, dtype=torch.long)
    if loss_name == "bce_with_logits":
        return torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1)
    return torch.as_tensor((y - prep.y_mean) / prep.y_std, dtype=torch.float32).reshape(-1, 1)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, recipe: Recipe, steps: int):
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    if recipe.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, steps // 3), gamma=0.1)
    return None


def train_step(model: nn.Module, opt, loss_fn, xb, yb, recipe: Recipe) -> tuple[float, float]:
    """One optimizer step; returns (loss, gradient norm before clipping)."""
    opt.zero_grad(set_to_none=True)
    out = model(xb)
    loss = loss_fn(out, yb)
    loss.backward()
    grads = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
    gnorm = float(torch.stack(grads).norm()) if grads else 0.0
    if recipe.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    opt.step()
    return float(loss.detach()), gnorm


def predict_scores(model: nn.Module, X: np.ndarray, loss_name: str, prep: Prepared,
                   device: str = "cpu", batch: int = 4096) -> np.ndarray:
    """Class probabilities (classification) or predictions on the original scale."""
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(X), batch):
            outs.append(model(torch.as_tensor(X[i:i + batch], device=device)).float().cpu())
    out = torch.cat(outs) if outs else torch.empty(0, 1)
    if loss_name == "cross_entropy":
        return torch.softmax(out, dim=1).numpy()
    if loss_name == "bce_with_logits":
        return torch.sigmoid(out).reshape(-1).numpy()
    return (out.reshape(-1).numpy() * prep.y_std + prep.y_mean).astype(np.float64)


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    diverged: dict[str, Any] | None = None
    best_epoch: int | None = None
    stopped_early: bool = False


def fit(model: nn.Module, prep: Prepared, recipe: Recipe, kind: str, n_out: int,
        device: str = "cpu", seed: int = 0) -> tuple[History, str]:
    """Train per recipe with validation-loss early stopping; stops at the first NaN loss."""
    model.to(device)
    loss_fn, loss_name = loss_function(recipe, kind, n_out)
    X, y = prep.parts["train"]
    Xv, yv = prep.parts["valid"]
    Xt = torch.as_tensor(X, device=device)
    yt = targets(y, loss_name, prep).to(device)
    Xvt = torch.as_tensor(Xv, device=device)
    yvt = targets(yv, loss_name, prep).to(device)
    opt = make_optimizer(model, recipe)
    steps_per_epoch = math.ceil(len(X) / recipe.batch_size)
    sched = make_schedule(opt, recipe, recipe.epochs)
    gen = torch.Generator().manual_seed(seed)
    hist = History()
    best, best_state, bad = math.inf, None, 0
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(X), generator=gen).to(device)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * recipe.batch_size:(s + 1) * recipe.batch_size]
            loss, _ = train_step(model, opt, loss_fn, Xt[idx], yt[idx], recipe)
            if not math.isfinite(loss):
                hist.diverged = {"epoch": epoch + 1, "step": s + 1, "loss": repr(loss)}
                return hist, loss_name
            total += loss * len(idx)
        if sched is not None:
            sched.step()
        model.eval()
        with torch.no_grad():
            vloss = float(loss_fn(model(Xvt), yvt))
        hist.epochs.append({"epoch": epoch + 1, "train_loss": total / len(X),
                            "valid_loss": vloss})
        if not math.isfinite(vloss):
            hist.diverged = {"epoch": epoch + 1, "step": None, "loss": repr(vloss)}
            return hist, loss_name
        if vloss < best - 1e-6:
            best, bad, hist.best_epoch = vloss, 0, epoch + 1
            if recipe.early_stopping:
                best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if recipe.early_stopping and bad >= recipe.early_stopping:
                hist.stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return hist, loss_name
