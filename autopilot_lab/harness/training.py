"""Our training harness: trains a candidate from its recipe (CPU, or CUDA when present).

One implementation for probes, the metric check and the exported ``train.py``-style recipe,
so "the recipe" means the same thing everywhere.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from autopilot_lab.candidate import Recipe
from autopilot_lab.harness.keras_optim import keras_clip, keras_optimizer


@dataclass
class Prepared:
    """Arrays after the recipe's preprocessing, and how to undo it on predictions."""

    parts: dict[str, tuple[np.ndarray, np.ndarray]]
    y_mean: float = 0.0
    y_std: float = 1.0


def prepare(data: dict[str, np.ndarray], recipe: Recipe, kind: str) -> Prepared:
    """Apply ``recipe.preprocessing`` with statistics of the train part only. A part without
    labels (in the sandbox: the held-out rows, ``eval``) gets ``None`` for y."""
    parts = {p: (data[f"X_{p}"].astype(np.float32), data.get(f"y_{p}"))
             for p in ("train", "valid", "test", "eval") if f"X_{p}" in data}
    prep = Prepared(parts)
    if recipe.preprocessing == "standardize":
        X_train = parts["train"][0]
        mean = X_train.mean(axis=0)
        std = X_train.std(axis=0)
        std[std == 0] = 1.0
        prep.parts = {p: ((X - mean) / std, y) for p, (X, y) in parts.items()}
        if kind == "regression":
            prep.y_mean, prep.y_std = target_scaling(parts["train"][1])
    return prep


def target_scaling(y_train: np.ndarray) -> tuple[float, float]:
    """(mean, std) a standardizing recipe scales regression targets by: the harness in the
    sandbox and the judge in the parent compute it with this one function."""
    return float(y_train.mean()), float(y_train.std()) or 1.0


KERAS_EPS = 1e-7  # Keras clips probabilities to [eps, 1 - eps] before taking logs


class _TagLogits(TorchFunctionMode):
    """Tags the result of a softmax (over the last dim) or a sigmoid with its input, as Keras
    tags its activations' outputs (``_keras_logits``)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
            if func in _SIGMOIDS:
                out._keras_logits = ("sigmoid", args[0])
            elif func in _SOFTMAXES:
                dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
                if dim is not None and dim % out.dim() == out.dim() - 1:
                    out._keras_logits = ("softmax", args[0])
        return out


_SIGMOIDS = {torch.sigmoid, F.sigmoid, torch.Tensor.sigmoid}
_SOFTMAXES = {torch.softmax, F.softmax, torch.Tensor.softmax}


def tag_logits(model: nn.Module) -> nn.Module:
    """Keras computes a cross-entropy with ``from_logits=False`` from the logits behind the
    output when the output is a softmax's or a sigmoid's (the probabilities are not clipped:
    a saturated class keeps its gradient). So that the recipe's loss does the same, every
    forward of ``model`` tags such outputs with their logits; ``RecipeLoss`` uses them."""
    def enter(module, args):
        mode = _TagLogits()
        mode.__enter__()
        module._tag_logits_modes.append(mode)

    def leave(module, args, output):
        module._tag_logits_modes.pop().__exit__(None, None, None)

    if not hasattr(model, "_tag_logits_modes"):
        model._tag_logits_modes = []
        model.register_forward_pre_hook(enter)
        model.register_forward_hook(leave, always_call=True)
    return model


class RecipeLoss(nn.Module):
    """The recipe's loss with Keras semantics: logits or probabilities, label smoothing,
    per-sample class weights before the mean, explicit L1/L2 penalties on named weights."""

    def __init__(self, name: str, recipe: Recipe, model: nn.Module | None = None):
        super().__init__()
        self.name, self.recipe = name, recipe
        self.params = dict(model.named_parameters()) if model is not None else {}
        missing = [p["param"] for p in recipe.penalties if p["param"] not in self.params]
        if model is not None and missing:
            raise KeyError(f"recipe penalties name parameters the model does not have: "
                           f"{missing}")

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.data_loss(out, y) + self.penalty()

    def per_sample(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r, name = self.recipe, self.name
        kind, logits = getattr(out, "_keras_logits", (None, None))
        if not r.from_logits and (kind, name) in (("softmax", "cross_entropy"),
                                                  ("sigmoid", "binary_cross_entropy")):
            r = replace(r, from_logits=True)  # Keras' rule (see tag_logits)
            out = logits
        if name == "cross_entropy":
            if r.from_logits:
                return F.cross_entropy(out, y, reduction="none", label_smoothing=r.label_smoothing)
            probs = out / out.sum(dim=-1, keepdim=True)
            logp = torch.log(probs.clamp(KERAS_EPS, 1 - KERAS_EPS))
            k = out.shape[-1]
            onehot = F.one_hot(y, k).to(out.dtype)
            if r.label_smoothing:
                onehot = onehot * (1 - r.label_smoothing) + r.label_smoothing / k
            return -(onehot * logp).sum(dim=-1)
        if name == "binary_cross_entropy":
            target = y
            if r.label_smoothing:
                target = target * (1 - r.label_smoothing) + 0.5 * r.label_smoothing
            if r.from_logits:
                loss = F.binary_cross_entropy_with_logits(out, target, reduction="none")
            else:
                p = out.clamp(KERAS_EPS, 1 - KERAS_EPS)
                loss = -(target * torch.log(p) + (1 - target) * torch.log(1 - p))
            return loss.mean(dim=-1)
        fn = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}[name]
        return fn(out, y, reduction="none").mean(dim=-1)

    def data_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.per_sample(out, y)
        cw = self.recipe.class_weight
        if cw and self.name in ("cross_entropy", "binary_cross_entropy"):
            labels = y.reshape(-1).long()
            weights = torch.tensor([cw.get(int(c), 1.0) for c in range(int(labels.max()) + 1)],
                                   dtype=loss.dtype, device=loss.device)
            loss = loss * weights[labels]
        return loss.mean()

    def penalty(self) -> torch.Tensor:
        total = torch.zeros(())
        for p in self.recipe.penalties:
            w = self.params[p["param"]]
            if p.get("l1"):
                total = total + p["l1"] * w.abs().sum()
            if p.get("l2"):
                total = total + p["l2"] * (w ** 2).sum()
        return total


def resolve_loss(recipe: Recipe, kind: str, n_out: int) -> str:
    if recipe.loss != "auto":
        return recipe.loss
    if kind == "regression":
        return "mse"
    return "binary_cross_entropy" if kind == "binary" and n_out == 1 else "cross_entropy"


def loss_function(recipe: Recipe, kind: str, n_out: int,
                  model: nn.Module | None = None) -> tuple[RecipeLoss, str]:
    """The loss the recipe names, resolved for the task; returns (module, name)."""
    name = resolve_loss(recipe, kind, n_out)
    return RecipeLoss(name, recipe, model), name


def targets(y: np.ndarray, loss_name: str, prep: Prepared) -> torch.Tensor:
    if loss_name == "cross_entropy":
        return torch.as_tensor(y, dtype=torch.long)
    if loss_name == "binary_cross_entropy":
        return torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1)
    return torch.as_tensor((y - prep.y_mean) / prep.y_std, dtype=torch.float32).reshape(-1, 1)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer: stepped as Keras steps it when ``recipe.keras_epsilon`` (a
    recipe translated from Keras; ``harness.keras_optim``), else torch's own."""
    r = recipe
    if r.keras_epsilon and r.optimizer in ("adam", "adamw", "rmsprop", "sgd"):
        return keras_optimizer(model, r.optimizer, r.lr, betas=r.betas, eps=r.eps,
                               momentum=r.momentum, rho=r.rho, nesterov=r.nesterov,
                               centered=r.centered, weight_decay=r.weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    if r.optimizer == "adam":
        return torch.optim.Adam(params, lr=r.lr, betas=r.betas, eps=r.eps,
                                weight_decay=r.weight_decay)
    if r.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=r.lr, betas=r.betas, eps=r.eps,
                                 weight_decay=r.weight_decay)
    if r.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=r.lr, alpha=r.rho, eps=r.eps, momentum=r.momentum,
                                   centered=r.centered, weight_decay=r.weight_decay)
    return torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay,
                           nesterov=r.nesterov and r.momentum > 0)


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
    clip_gradients(model, recipe)
    opt.step()
    return float(loss.detach()), gnorm


def eval_outputs(model: nn.Module, X: np.ndarray, device: str = "cpu", batch: int = 4096
                 ) -> tuple[torch.Tensor, tuple[str, torch.Tensor] | None]:
    """The model's eval-mode outputs on ``X`` (float32, on the CPU), in batches, and the
    logits behind them when they are a tagged softmax/sigmoid (``tag_logits``): a validation
    loss computed from outputs alone would lose Keras' logits rule."""
    model.eval()
    outs, logits, kind = [], [], None
    with torch.no_grad():
        for i in range(0, len(X), batch):
            out = model(torch.as_tensor(X[i:i + batch], device=device))
            tag = getattr(out, "_keras_logits", None)
            if tag is not None:
                kind = tag[0]
                logits.append(tag[1].float().cpu())
            outs.append(out.float().cpu())
    if not outs:
        return torch.empty(0, 1), None
    tagged = (kind, torch.cat(logits)) if kind and len(logits) == len(outs) else None
    return torch.cat(outs), tagged


def raw_outputs(model: nn.Module, X: np.ndarray, device: str = "cpu",
                batch: int = 4096) -> torch.Tensor:
    """The model's eval-mode outputs on ``X`` (float32, on the CPU), in batches."""
    return eval_outputs(model, X, device, batch)[0]


def scores_from_outputs(out: torch.Tensor, loss_name: str, from_logits: bool = True,
                        y_mean: float = 0.0, y_std: float = 1.0) -> np.ndarray:
    """Class probabilities (classification) or predictions on the original scale, from raw
    outputs: the parent turns the outputs a sandboxed candidate returned into scores with
    this, the same arithmetic the harness uses on a model in hand."""
    out = out.float()
    if loss_name == "cross_entropy":
        if not from_logits:
            return (out / out.sum(dim=1, keepdim=True)).numpy()
        return torch.softmax(out, dim=1).numpy()
    if loss_name == "binary_cross_entropy":
        return (torch.sigmoid(out) if from_logits else out).reshape(-1).numpy()
    return (out.reshape(-1).numpy() * y_std + y_mean).astype(np.float64)


def clip_gradients(model: nn.Module, recipe: Recipe) -> None:
    """The recipe's gradient clipping, Keras' arithmetic (``keras_optim.keras_clip``)."""
    if recipe.clipnorm or recipe.grad_clip or recipe.clipvalue:
        keras_clip(model.parameters(), recipe.clipnorm, recipe.grad_clip, recipe.clipvalue)


def predict_scores(model: nn.Module, X: np.ndarray, loss_name: str, prep: Prepared,
                   device: str = "cpu", batch: int = 4096,
                   from_logits: bool = True) -> np.ndarray:
    """Class probabilities (classification) or predictions on the original scale."""
    return scores_from_outputs(raw_outputs(model, X, device, batch), loss_name, from_logits,
                               prep.y_mean, prep.y_std)


def epoch_order(n: int, epoch: int, seed: int) -> np.ndarray:
    """The order of the ``n`` train rows in ``epoch`` (0-based): one seeded permutation per
    epoch, drawn with numpy so that migrate's Keras training feeds the same batches in the
    same order (``objectives.migrate``): two correct translations then differ only by their
    dropout masks and float rounding, not by which rows each step saw."""
    return np.random.default_rng((int(seed), int(epoch))).permutation(n)


GRAD_ROUNDING = 1e-6  # measured: Keras' and torch's gradients of one batch differ by <= 8e-7


def round_off_gradients(model: nn.Module, gen: torch.Generator,
                        scale: float = GRAD_ROUNDING) -> None:
    """Add ``scale`` x the largest |element| x N(0, 1) to every gradient of ``model``: the size
    of the difference between two frameworks' roundings of the same sums. Training with it
    shows how far rounding alone moves this model (parity's rounding twin, the sweep's
    rounding spread): Adam steps a near-zero gradient fully whatever its sign, and on
    ill-conditioned data a ReLU then flips."""
    def hook(grad: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(grad.shape, generator=gen, dtype=grad.dtype).to(grad.device)
        return grad + scale * grad.abs().max() * noise

    for param in model.parameters():
        if param.requires_grad:
            param.register_hook(hook)


def lone_row(idx: torch.Tensor) -> torch.Tensor:
    """A batch of one row, as a batch of that row twice. Keras trains on a last batch of one
    row (BatchNorm's batch variance is then 0 and it outputs beta), while torch's BatchNorm
    refuses one value per channel. Two copies give the same mean loss, the same gradients and
    the same batch statistics (mean = the row, variance 0), so the step matches Keras' (but
    for dropout, which draws a mask per copy)."""
    return idx.repeat(2)


def refuses_one_row(model: nn.Module) -> bool:
    """Whether a training batch of one row would raise: a stock torch BatchNorm inside (the
    translation's KerasBatchNorm accepts one row; dropout masks then stay one row's)."""
    stock = nn.modules.batchnorm._BatchNorm.forward
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and type(m).forward is stock
               for m in model.modules())


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    diverged: dict[str, Any] | None = None
    best_epoch: int | None = None
    stopped_early: bool = False


@dataclass
class EarlyStopping:
    """Keras' EarlyStopping on the validation loss, as pure bookkeeping: fed one loss per
    epoch, it says whether this epoch is the best so far and whether to stop. The parent runs
    it on losses it computes from the candidate's outputs (the labels never enter the
    sandbox); ``fit`` runs it on a validation loss of its own where labels are at hand."""

    patience: int = 0
    best_loss: float = math.inf
    best_epoch: int | None = None
    bad: int = 0

    def update(self, epoch: int, loss: float) -> tuple[bool, bool]:
        """(best, stop) after ``epoch`` (1-based) ended with validation ``loss``."""
        if not math.isfinite(loss):
            return False, True
        if loss < self.best_loss - 1e-6:
            self.best_loss, self.best_epoch, self.bad = loss, epoch, 0
            return True, False
        self.bad += 1
        return False, bool(self.patience and self.bad >= self.patience)


# Decides after each epoch: (epoch, mean train loss, model) -> (best so far, stop now).
EpochJudge = Callable[[int, float, nn.Module], tuple[bool, bool]]


def valid_loss_judge(prep: Prepared, recipe: Recipe, kind: str, n_out: int,
                     device: str = "cpu") -> tuple[EpochJudge, EarlyStopping, list[float]]:
    """The judge ``fit`` uses where the validation labels are at hand (trusted code: the
    sweep's rounding spread, tests): the recipe's data loss on the valid part."""
    Xv, yv = prep.parts["valid"]
    loss_fn, loss_name = loss_function(recipe, kind, n_out)
    Xvt = torch.as_tensor(Xv, device=device)
    yvt = targets(yv, loss_name, prep).to(device)
    stopper = EarlyStopping(recipe.early_stopping)
    losses: list[float] = []

    def judge(epoch: int, train_loss: float, model: nn.Module) -> tuple[bool, bool]:
        model.eval()
        with torch.no_grad():
            losses.append(float(loss_fn.data_loss(model(Xvt), yvt)))
        return stopper.update(epoch, losses[-1])

    return judge, stopper, losses


def fit(model: nn.Module, prep: Prepared, recipe: Recipe, kind: str, n_out: int,
        device: str = "cpu", seed: int = 0,
        judge: EpochJudge | None = None) -> tuple[History, str]:
    """Train per recipe; after each epoch ``judge`` says whether the epoch is the best so far
    (kept when ``recipe.restore_best``) and whether to stop (early stopping, or a
    non-finite validation loss). Stops at the first NaN training loss."""
    model.to(device)
    loss_fn, loss_name = loss_function(recipe, kind, n_out, model)
    valid_losses: list[float] | None = None
    if judge is None:
        judge, _, valid_losses = valid_loss_judge(prep, recipe, kind, n_out, device)
    X, y = prep.parts["train"]
    Xt = torch.as_tensor(X, device=device)
    yt = targets(y, loss_name, prep).to(device)
    opt = make_optimizer(model, recipe)
    steps_per_epoch = math.ceil(len(X) / recipe.batch_size)
    sched = make_schedule(opt, recipe, recipe.epochs)
    hist = History()
    lone_rows_fail = refuses_one_row(model)
    best_state = None
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.as_tensor(epoch_order(len(X), epoch, seed), device=device)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * recipe.batch_size:(s + 1) * recipe.batch_size]
            if len(idx) == 1 and lone_rows_fail:  # fed twice (see lone_row)
                idx = lone_row(idx)
            loss, _ = train_step(model, opt, loss_fn, Xt[idx], yt[idx], recipe)
            if not math.isfinite(loss):
                hist.diverged = {"epoch": epoch + 1, "step": s + 1, "loss": repr(loss)}
                return hist, loss_name
            total += loss * len(idx)
        if sched is not None:
            sched.step()
        best, stop = judge(epoch + 1, total / len(X), model)
        hist.epochs.append({"epoch": epoch + 1, "train_loss": total / len(X)})
        if valid_losses is not None:
            hist.epochs[-1]["valid_loss"] = valid_losses[-1]
            if not math.isfinite(valid_losses[-1]):
                hist.diverged = {"epoch": epoch + 1, "step": None,
                                 "loss": repr(valid_losses[-1])}
                return hist, loss_name
        if best:
            hist.best_epoch = epoch + 1
            if recipe.early_stopping and recipe.restore_best:
                best_state = copy.deepcopy(model.state_dict())
        if stop:
            hist.stopped_early = bool(recipe.early_stopping)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return hist, loss_name
