"""Keras' optimizers, stepped in torch with Keras' arithmetic: Adam/AdamW, RMSprop and SGD.

torch's own optimizers differ from Keras' in ways a migrated model feels: Adam adds epsilon
before the bias correction, RMSprop adds it outside the square root and defaults to rho 0.99
(Keras 0.9), SGD applies weight decay to the gradient (Keras decouples it) and Nesterov
momentum in another form. Measured against Keras' own optimizers on the same gradients over
200 steps, torch's ended up to 0.49 (RMSprop with momentum) and 0.17 (SGD with weight decay)
away; these classes agree to float32 rounding (``tests/migrate/test_keras_optimizers.py``).

Keras takes its hyperparameters through float32 tensors (``ops.cast(python float, dtype)``)
and its learning rate is a float32 variable, so each step here computes with the float32
values, in the weight's dtype: for Adam that is what keeps the bias correction exact (1 -
0.999f is 1.3e-5 off 1 - 0.999; computed in Python floats, every step moved 6.4e-6 of the
learning rate off Keras').

This module needs torch and numpy only: the ``train.py`` exported with a migration embeds
its source, so the script a user takes away trains as the harness verified.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def keras_clip(params, clipnorm: float = 0.0, global_clipnorm: float = 0.0,
               clipvalue: float = 0.0) -> None:
    """Clip gradients in place as a Keras optimizer does before its step: each tensor to
    ``clipnorm`` (``t * c / max(|t|, c)``), all of them to ``global_clipnorm`` together, each
    element to [-clipvalue, clipvalue]; 0 = off. torch's ``clip_grad_norm_`` adds 1e-6 to the
    norm and clips only the global norm."""
    grads = [p.grad for p in params if p.grad is not None]
    if clipnorm > 0:
        for g in grads:
            norm = g.square().sum().sqrt()
            g.mul_(torch.as_tensor(clipnorm, dtype=g.dtype) / torch.maximum(
                norm, torch.as_tensor(clipnorm, dtype=g.dtype)))
    if global_clipnorm > 0 and grads:
        total = torch.stack([g.square().sum() for g in grads]).sum().sqrt()
        scale = torch.as_tensor(global_clipnorm, dtype=total.dtype) / torch.maximum(
            total, torch.as_tensor(global_clipnorm, dtype=total.dtype))
        for g in grads:
            g.mul_(scale.to(g.dtype))
    if clipvalue > 0:
        for g in grads:
            g.clamp_(-clipvalue, clipvalue)


class KerasOptimizer(torch.optim.Optimizer):
    """What Keras' optimizers share: float32 hyperparameters and decoupled weight decay
    (``w -= w * wd * lr`` before the update, as ``BaseOptimizer._apply_weight_decay``)."""

    @staticmethod
    def scalar(value: float, like: torch.Tensor) -> torch.Tensor:
        """``ops.cast(value, dtype)``: the float32 value, in ``like``'s dtype and device."""
        return torch.tensor(float(np.float32(value)), dtype=like.dtype, device=like.device)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                lr = self.scalar(group["lr"], p)
                if group["weight_decay"]:
                    p.sub_(p * self.scalar(group["weight_decay"], p) * lr)
                self.update(p, p.grad, lr, group, self.state[p])

    def update(self, p, grad, lr, group, state) -> None:
        raise NotImplementedError


class KerasAdam(KerasOptimizer):
    """Adam/AdamW as Keras 3 steps: epsilon added to sqrt(v) after the bias correction has
    been folded into the step size; the correction's powers from float32 betas. An
    Embedding's second moment sums the squares of each occurrence (``keras_sparse_squares``)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-7,
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                p._keras_squares = None  # those of a backward that no step used

    def update(self, p, grad, lr, group, state) -> None:
        b1, b2 = group["betas"]
        if not state:
            state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
        state["t"] += 1
        m, v = state["m"], state["v"]
        t = torch.tensor(float(state["t"]), dtype=p.dtype, device=p.device)
        lr_t = lr * torch.sqrt(1 - torch.pow(self.scalar(b2, p), t)) / (
            1 - torch.pow(self.scalar(b1, p), t))
        m.add_((grad - m) * (1 - b1))
        squares = getattr(p, "_keras_squares", None)
        p._keras_squares = None
        v.add_(((squares if squares is not None else grad.square()) - v) * (1 - b2))
        p.sub_(m * lr_t / (v.sqrt() + group["eps"]))


class KerasRMSprop(KerasOptimizer):
    """RMSprop as Keras steps it: v = rho v + (1 - rho) g^2, step lr g / sqrt(v + eps)
    (epsilon inside the root; centered subtracts the squared mean gradient), momentum
    accumulating the steps."""

    def __init__(self, params, lr: float, rho: float = 0.9, eps: float = 1e-7,
                 momentum: float = 0.0, centered: bool = False, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps, "momentum": momentum,
                                  "centered": centered, "weight_decay": weight_decay})

    def update(self, p, grad, lr, group, state) -> None:
        rho = group["rho"]
        if not state:
            state["v"] = torch.zeros_like(p)
            if group["centered"]:
                state["mean"] = torch.zeros_like(p)
            if group["momentum"] > 0:
                state["buf"] = torch.zeros_like(p)
        v = state["v"]
        v.copy_(rho * v + (1 - rho) * grad.square())
        if group["centered"]:
            mean = state["mean"]
            mean.copy_(rho * mean + (1 - rho) * grad)
            denominator = v - mean.square() + group["eps"]
        else:
            denominator = v + group["eps"]
        increment = lr * grad / denominator.sqrt()
        if group["momentum"] > 0:
            buf = state["buf"]
            buf.copy_(group["momentum"] * buf + increment)
            p.sub_(buf)
        else:
            p.sub_(increment)


class KerasSGD(KerasOptimizer):
    """SGD as Keras steps it: m = momentum m - lr g, then w += m (Nesterov: w += momentum m -
    lr g); decoupled weight decay."""

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                                  "weight_decay": weight_decay})

    def update(self, p, grad, lr, group, state) -> None:
        if not group["momentum"]:
            p.sub_(grad * lr)
            return
        momentum = self.scalar(group["momentum"], p)
        if not state:
            state["m"] = torch.zeros_like(p)
        m = state["m"]
        m.copy_(m * momentum - grad * lr)
        p.add_(m * momentum - grad * lr if group["nesterov"] else m)


def keras_optimizer(model: nn.Module, name: str, lr: float, *, betas=(0.9, 0.999),
                    eps: float = 1e-7, momentum: float = 0.0, rho: float = 0.9,
                    nesterov: bool = False, centered: bool = False,
                    weight_decay: float = 0.0) -> KerasOptimizer:
    """The Keras-stepped optimizer ``name`` (adam, adamw, rmsprop, sgd) over the trainable
    parameters of ``model``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name in ("adam", "adamw"):
        keras_sparse_squares(model)
        return KerasAdam(params, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay if name == "adamw" else 0.0)
    if name == "rmsprop":
        return KerasRMSprop(params, lr=lr, rho=rho, eps=eps, momentum=momentum,
                            centered=centered, weight_decay=weight_decay)
    if name == "sgd":
        return KerasSGD(params, lr=lr, momentum=momentum, nesterov=nesterov,
                        weight_decay=weight_decay)
    raise ValueError(f"no Keras-stepped optimizer {name!r}; one of adam, adamw, rmsprop, sgd")


def keras_sparse_squares(model: nn.Module) -> None:
    """Keras' Adam gets an Embedding's gradient as IndexedSlices, one slice per looked-up id,
    and squares the slices before summing the repeats into its second moment: a row looked up
    k times in a batch adds sum(g_i ** 2), where torch's dense gradient gives (sum g_i) ** 2.
    A categorical column with 7 codes repeats every id ~9 times in a batch of 64, so the two
    second moments, and the step sizes, differ by up to k-fold. Backward hooks on the
    ``nn.Embedding`` modules leave that sum of squares on the weight for ``KerasAdam``."""
    for module in model.modules():
        if type(module) is nn.Embedding and not getattr(module, "_keras_sparse", False):
            module._keras_sparse = True
            module.register_forward_hook(_watch_gradient)


def _watch_gradient(module: nn.Embedding, inputs: tuple, output: torch.Tensor) -> None:
    if output.requires_grad:
        ids = inputs[0].detach().reshape(-1)
        output.register_hook(lambda grad: _add_squares(module.weight, ids, grad))


def _add_squares(weight: torch.Tensor, ids: torch.Tensor, grad: torch.Tensor) -> None:
    squares = torch.zeros_like(weight).index_add_(
        0, ids, grad.reshape(-1, weight.shape[1]).square())
    previous = getattr(weight, "_keras_squares", None)  # an embedding called twice per step
    weight._keras_squares = squares if previous is None else previous + squares
