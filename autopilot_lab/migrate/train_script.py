"""`train.py` for a migrated model: the translated recipe as a plain PyTorch script.

The script depends on torch and numpy only (not on autopilot_lab), so a team can keep it next
to `model.py` and `weights.pt`. Its optimizer is the harness's own Keras-stepped one: the
source of `harness.keras_optim` is copied into the script, so it steps as the run verified.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from autopilot_lab.candidate import Candidate

TEMPLATE = '''"""Train {entry} with the recipe translated from Keras.

Usage: python train.py data.npz   (arrays X_train, y_train, X_valid, y_valid)
Entry points (what `autopilot verify` runs and compares with Keras): train_steps(model,
batches), predict(model, x).
Recipe: {recipe_line}
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model import {entry}

# KERAS_OPTIM_SOURCE

RECIPE = {recipe}
INIT = {init}  # constructor arguments
KIND = "{kind}"
EPS = 1e-7  # Keras clips probabilities to [eps, 1 - eps]


def loss_fn(model, out, y):
    r = RECIPE
    if KIND == "regression":
        per = (F.l1_loss if r["loss"] == "mae" else F.mse_loss)(out, y, reduction="none")
        per = per.mean(dim=-1)
    elif out.shape[-1] == 1:  # one logit or probability: binary cross-entropy
        y = y.to(out.dtype).reshape(len(y), -1)
        if r["from_logits"]:
            per = F.binary_cross_entropy_with_logits(out, y, reduction="none").mean(dim=-1)
        else:
            p = out.clamp(EPS, 1 - EPS)
            per = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean(dim=-1)
    elif r["from_logits"]:
        per = F.cross_entropy(out, y, reduction="none", label_smoothing=r["label_smoothing"])
    else:
        p = (out / out.sum(dim=-1, keepdim=True)).clamp(EPS, 1 - EPS)
        per = -torch.log(p.gather(1, y[:, None]))[:, 0]
    if r["class_weight"]:
        w = torch.tensor([r["class_weight"].get(str(int(c)), 1.0) for c in y.reshape(-1)])
        per = per * w
    loss = per.mean()
    params = dict(model.named_parameters())
    for pen in r["penalties"]:  # Keras regularizers, added to the loss as Keras does
        w = params[pen["param"]]
        loss = loss + pen["l1"] * w.abs().sum() + pen["l2"] * (w ** 2).sum()
    return loss


def make_optimizer(model):
    """The recipe's optimizer: Keras' arithmetic for a recipe translated from Keras."""
    r = RECIPE
    if r["keras_epsilon"]:
        return keras_optimizer(model, r["optimizer"], r["lr"], betas=tuple(r["betas"]),
                               eps=r["eps"], momentum=r["momentum"], rho=r["rho"],
                               nesterov=r["nesterov"], centered=r["centered"],
                               weight_decay=r["weight_decay"])
    opt_cls = {{"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}}[r["optimizer"]]
    kwargs = {{"lr": r["lr"], "weight_decay": r["weight_decay"]}}
    if r["optimizer"] in ("adam", "adamw"):
        kwargs.update(betas=tuple(r["betas"]), eps=r["eps"])
    elif r["optimizer"] == "rmsprop":
        kwargs.update(momentum=r["momentum"], alpha=r["rho"], eps=r["eps"],
                      centered=r["centered"])
    else:
        kwargs.update(momentum=r["momentum"], nesterov=r["nesterov"] and r["momentum"] > 0)
    return opt_cls(model.parameters(), **kwargs)


def as_targets(y):
    """Labels as the loss takes them."""
    if KIND != "regression" and RECIPE["loss"] != "binary_cross_entropy":
        return torch.as_tensor(y, dtype=torch.long)  # class ids ("auto": as the outputs say)
    return torch.as_tensor(y, dtype=torch.float32).reshape(len(y), -1)


def step(model, opt, x, y):
    """One training step of this script (loss, backward, Keras' clipping, the optimizer's
    step); returns the loss before the step."""
    opt.zero_grad()
    loss = loss_fn(model, model(x), y)
    loss.backward()
    r = RECIPE
    keras_clip(model.parameters(), r.get("clipnorm", 0.0), r.get("grad_clip", 0.0),
               r.get("clipvalue", 0.0))
    opt.step()
    return float(loss.detach())


def train_steps(model, batches):
    """Entry point for `autopilot verify`: train ``model`` (in training mode) on ``batches``,
    a list of (inputs, labels) arrays, one step each, exactly as ``main`` steps; returns the
    loss before each step. Verify compares the losses and the weights with Keras'."""
    opt = make_optimizer(model)
    model.train()
    return [step(model, opt, torch.as_tensor(x), as_targets(y)) for x, y in batches]


def predict(model, x):
    """Entry point for `autopilot verify`, and what ``main`` evaluates with: the outputs in
    inference mode."""
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(x))


def main(path):
    data = np.load(path)
    r = RECIPE
    torch.manual_seed(r["seed"])
    model = {entry}(**INIT)
    try:  # a migration's converted weights; a model trained from scratch has none
        model.load_state_dict(torch.load("weights.pt", weights_only=True))
    except FileNotFoundError:
        pass
    opt = make_optimizer(model)
    Xn, Xvn = data["X_train"].astype(np.float32), data["X_valid"].astype(np.float32)
    yn, yvn = data["y_train"], data["y_valid"]
    if r["preprocessing"] == "standardize":  # the recipe's preprocessing, train statistics
        mean, std = Xn.mean(axis=0), Xn.std(axis=0)
        std[std == 0] = 1.0
        Xn, Xvn = (Xn - mean) / std, (Xvn - mean) / std
        if KIND == "regression":
            ym, ys = float(yn.mean()), float(yn.std()) or 1.0
            yn, yvn = (yn - ym) / ys, (yvn - ym) / ys
    X, y = torch.as_tensor(Xn), as_targets(yn)
    Xv, yv = Xvn, as_targets(yvn)
    best, best_state, bad = float("inf"), None, 0
    for epoch in range(r["epochs"]):
        model.train()
        order = torch.randperm(len(X))
        for i in range(0, len(X), r["batch_size"]):
            idx = order[i:i + r["batch_size"]]
            step(model, opt, X[idx], y[idx])
        with torch.no_grad():
            vloss = float(loss_fn(model, predict(model, Xv), yv))
        print(f"epoch {{epoch + 1}}: valid loss {{vloss:.4f}}")
        if vloss < best:
            best, bad = vloss, 0
            best_state = {{k: v.clone() for k, v in model.state_dict().items()}}
        elif r["early_stopping"]:
            bad += 1
            if bad >= r["early_stopping"]:
                break
    if r["early_stopping"] and r["restore_best"] and best_state is not None:
        model.load_state_dict(best_state)
    torch.save(model.state_dict(), "trained_weights.pt")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data.npz")
'''


def keras_optim_source() -> str:
    """``harness/keras_optim.py`` without its docstring and imports (the script has them)."""
    from autopilot_lab.harness import keras_optim

    text = Path(keras_optim.__file__).read_text()
    body = text[text.index("\ndef keras_clip"):].strip()
    return ("# Keras' optimizers stepped in torch, copied from autopilot_lab.harness.keras_optim"
            "\n\n\n" + body + "\n")


def py_literal(value: Any) -> str:
    """JSON as a Python literal (true/false/null spelled Python's way)."""
    return json.dumps(value, indent=4).replace("true", "True").replace(
        "false", "False").replace("null", "None")


def constructor_arguments(candidate: Candidate, task: dict[str, Any]) -> dict[str, Any]:
    """The arguments the harness gives the model's constructor (``harness.model_loader``):
    the candidate's own, plus the task's sizes under the names the constructor uses. Read
    from the source's syntax tree: the parent never runs candidate code."""
    from autopilot_lab.harness.model_loader import FEATURE_ARGS, OUTPUT_ARGS

    kwargs = dict(candidate.init_kwargs)
    tree = ast.parse(candidate.source)
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef)
                and n.name == candidate.entry), None)
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef)
                 and n.name == "__init__"), None) if cls else None
    names = [a.arg for a in (init.args.args[1:] + init.args.kwonlyargs)] if init else []
    for options, value in ((FEATURE_ARGS, task.get("n_features")),
                           (OUTPUT_ARGS, task.get("n_outputs"))):
        name = next((n for n in options if n in names), None)
        if name and name not in kwargs and value is not None:
            kwargs[name] = value
    return kwargs


def train_script(candidate: Candidate, kind: str,
                 init_kwargs: dict[str, Any] | None = None) -> str:
    recipe = candidate.recipe.to_dict()
    return TEMPLATE.format(entry=candidate.entry, kind=kind,
                           init=py_literal(init_kwargs if init_kwargs is not None
                                           else candidate.init_kwargs),
                           recipe=py_literal(recipe),
                           recipe_line=", ".join(f"{k}={recipe[k]}" for k in
                                                 ("optimizer", "lr", "epochs", "batch_size"))
                           ).replace("# KERAS_OPTIM_SOURCE\n", keras_optim_source())
