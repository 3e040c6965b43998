"""Sandbox jobs: each loads the candidate, measures, and returns raw measurements as JSON.

Every job has the signature ``job(payload, workdir) -> dict``. A job returns what the
candidate produced (outputs on the inputs it was given, gradient states, losses it computed,
weights) and never a judgement: the parent computes every metric, error and verdict from
these numbers against data it kept (``checks/``). The sandbox holds the train rows with their
labels and the held-out rows without theirs (``eval``, in an order drawn per verification).
Arrays travel packed (``harness.wire``); scalars are rounded to 7 significant digits so that
the same code on the same data gives byte-identical JSON.
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
from torch.overrides import TorchFunctionMode

from autopilot_lab.candidate import Recipe
from autopilot_lab.harness import channel, shared_dropout
from autopilot_lab.harness.model_loader import build_model, load_data, seed_everything
from autopilot_lab.harness.training import (
    eval_outputs,
    fit,
    loss_function,
    make_optimizer,
    prepare,
    raw_outputs,
    targets,
    train_step,
)
from autopilot_lab.harness.wire import pack

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


def outputs_of(out: torch.Tensor) -> dict[str, Any]:
    """A training-mode output as the parent needs it to recompute the loss: the output, and
    the logits behind it when it is a tagged softmax/sigmoid (``training.tag_logits``)."""
    kind, logits = getattr(out, "_keras_logits", (None, None))
    return {"out": pack(out), "logits": None if logits is None else
            {"kind": kind, "values": pack(logits)}}


def build(payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Instantiate and run one forward pass on 8 train rows; return what came out."""
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
                      out=pack(out) if out.is_floating_point() else None)
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
    """Optimizer steps on the train batches the parent drew (``payload['batches']``, row
    indices): the first step's gradient states, and per step the loss, its penalty part, the
    gradient norm and the outputs (from which the parent recomputes the loss)."""
    model, recipe, kind, prep = _setup(payload, workdir)
    X, y = prep.parts["train"]
    n_out = _n_out(model, X)
    loss_fn, loss_name = loss_function(recipe, kind, n_out, model)
    model.train()
    opt = make_optimizer(model, recipe)
    batches = [np.asarray(rows, dtype=np.int64) for rows in payload["batches"]]
    dead: dict[str, list[float]] = {}
    hooks = _dead_unit_hooks(model, dead)
    # first step: gradients per parameter, before any update
    opt.zero_grad(set_to_none=True)
    xb, yb = torch.as_tensor(X[batches[0]]), targets(y[batches[0]], loss_name, prep)
    out0 = model(xb)
    loss0 = loss_fn(out0, yb)
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
    steps = []
    for rows in batches:
        record: dict[str, Any] = {}

        def measured(out: torch.Tensor, target: torch.Tensor,
                     record: dict[str, Any] = record) -> torch.Tensor:
            with torch.no_grad():
                record.update(outputs_of(out), penalty=r(loss_fn.penalty()))
            return loss_fn(out, target)

        loss, gnorm = train_step(model, opt, measured, torch.as_tensor(X[rows]),
                                 targets(y[rows], loss_name, prep), recipe)
        steps.append({"loss": r(loss), "grad_norm": r(gnorm), **record})
        if not math.isfinite(loss):
            break
    return {"n_out": n_out, "initial": {"loss": r(loss0.detach()), **outputs_of(out0)},
            "steps": steps, "gradients": grads,
            "dead_fraction": {k: r(np.mean(v)) for k, v in dead.items()}}


class _HalfWatch(TorchFunctionMode):
    """Records the ops of a forward that produce a float16/bfloat16 tensor: a silent
    half-precision round trip (``x.half().float()``) is a precision finding, named by op."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.dtype in (torch.float16, torch.bfloat16) \
                and len(self.ops) < 8:
            self.ops.append(f"{getattr(func, '__name__', str(func))} -> "
                            f"{str(out.dtype).replace('torch.', '')}")
        return out


def extreme_inputs(X: torch.Tensor, int_columns: dict[str, list]) -> dict[str, torch.Tensor]:
    """Inputs at the edges: every float column x1e3, x-1e3 and zeros; an integer-coded column
    (an id, a category code) at its largest and smallest valid value instead, since x1e3 of an
    id is no input the model can meet (it indexes past an Embedding)."""
    cols = [int(c) for c in int_columns.get("idx", [])]
    low = torch.as_tensor(int_columns.get("low", []), dtype=X.dtype)
    high = torch.as_tensor(int_columns.get("high", []), dtype=X.dtype)
    out = {}
    for label, factor, edge in (("x1e3", 1e3, high), ("x-1e3", -1e3, low), ("zeros", 0.0, low)):
        xe = X * factor if factor else torch.zeros_like(X)
        if cols:
            xe[:, cols] = edge
        out[label] = xe
    return out


def stability(payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Eval-mode outputs on held-out inputs: in float32 twice (determinism), in float64, on
    extreme inputs and row by row (the parent judges drift, finiteness, batch invariance),
    and the ops that produced half-precision tensors on the way."""
    model, _, _, prep = _setup(payload, workdir)
    X = torch.as_tensor(prep.parts["eval"][0][:int(payload.get("rows", 64))])
    model.eval()
    watch = _HalfWatch()
    with torch.no_grad():
        with watch:
            out32 = model(X).float()
        again = model(X).float()
        m64, f64_error = _as_float64(model), None
        out64 = None
        if m64 is not None:
            try:
                out64 = m64(X.double()).double()
            except Exception as exc:  # a fixed-dtype cast inside forward(): a precision finding
                f64_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        extremes = {label: pack(model(xe).float()) for label, xe in
                    extreme_inputs(X, payload.get("int_columns") or {}).items()}
        single = torch.cat([model(X[i:i + 1]) for i in range(min(16, len(X)))]).float()
    return {"out32": pack(out32), "again": pack(again),
            "out64": None if out64 is None else pack(out64), "f64_error": f64_error,
            "half_ops": watch.ops, "extremes": extremes, "single": pack(single)}


def _as_float64(model: nn.Module) -> nn.Module | None:
    try:
        return copy.deepcopy(model).double()
    except Exception:
        return None


def train_eval(payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Train with the recipe. After each epoch the outputs on the held-out inputs go to the
    parent, which answers whether the epoch is the best so far and whether to stop (it
    computes the validation loss; the labels stay with it). Returns the training history,
    the outputs on the train rows and the trained weights."""
    model, recipe, kind, prep = _setup(payload, workdir)
    device = payload.get("device", "cpu")
    n_out = _n_out(model, prep.parts["train"][0])
    seed_everything(int(payload.get("seed", 0)), int(payload.get("threads", 1)))
    shared = payload.get("shared_dropout") or {}
    hooked = shared_dropout.install(model, shared["seed"], shared["modules"]) if shared else []
    X_eval = prep.parts["eval"][0]

    def judge(epoch: int, train_loss: float, net: nn.Module) -> tuple[bool, bool]:
        out, tagged = eval_outputs(net, X_eval, device)
        answer = channel.ask(payload, {
            "epoch": epoch, "train_loss": r(train_loss), "eval": pack(out),
            "logits": None if tagged is None else {"kind": tagged[0], "values": pack(tagged[1])}})
        return bool(answer.get("best")), bool(answer.get("stop"))

    hist, loss_name = fit(model, prep, recipe, kind, n_out, device=device,
                          seed=int(payload.get("seed", 0)), judge=judge)
    result: dict[str, Any] = {
        "shared_dropout": hooked, "n_out": n_out, "diverged": hist.diverged,
        "history": [{k: r(v) for k, v in e.items()} for e in hist.epochs]}
    if hist.diverged:
        return result
    result["train_outputs"] = pack(raw_outputs(model, prep.parts["train"][0], device))
    buf = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buf)
    if buf.tell() <= MAX_WEIGHTS_BYTES:
        result["weights_b64"] = base64.b64encode(buf.getvalue()).decode()
    return result
