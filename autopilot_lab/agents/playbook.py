"""The rules agent's playbook: deterministic repairs, each answering a hint kind.

A repair looks at the candidate and the hint and returns a changed candidate plus a one-line
account of the change, or ``None`` when it does not apply (e.g. gradients already clipped).
The order of repairs under a kind is the order they are tried.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autopilot_lab.candidate import Candidate, Recipe
from autopilot_lab.hints import Hint, HintKind

Change = tuple[Candidate, str] | None

MIN_LR, MAX_LR = 1e-5, 0.1
MAX_EPOCHS = 400
CAPACITY_ARGS = ("hidden", "hidden_size", "hidden_dim", "width", "n_hidden", "units")
DROPOUT_ARGS = ("dropout", "p_dropout", "dropout_rate")


@dataclass(frozen=True)
class Repair:
    name: str
    answers: tuple[HintKind, ...]
    description: str
    apply: Callable[[Candidate, Hint], Change]


def _recipe(c: Candidate, **changes) -> Candidate:
    return c.replace(recipe=c.recipe.replace(**changes))


def lower_lr(c: Candidate, hint: Hint, objective=None) -> Change:
    lr = c.recipe.lr
    if lr <= MIN_LR:
        return None
    # a loss that blows up in the first steps needs a bigger cut than one that drifts late
    early = re.search(r"at step (\d+)", str(hint.observed))
    factor = 100.0 if early and int(early.group(1)) <= 3 and lr > 1e-2 else 10.0
    new = max(MIN_LR, lr / factor)
    return _recipe(c, lr=new), f"learning rate {lr:g} -> {new:g}"


def raise_lr(c: Candidate, hint: Hint, objective=None) -> Change:
    lr = c.recipe.lr
    if lr >= MAX_LR / 3:
        return None
    new = min(MAX_LR, lr * 3)
    return _recipe(c, lr=new), f"learning rate {lr:g} -> {new:g}"


def clip_gradients(c: Candidate, hint: Hint, objective=None) -> Change:
    if c.recipe.grad_clip:
        return None
    return _recipe(c, grad_clip=1.0), "clip gradient norm at 1.0 (was off)"


def standardize_inputs(c: Candidate, hint: Hint, objective=None) -> Change:
    if c.recipe.preprocessing == "standardize":
        return None
    return (_recipe(c, preprocessing="standardize"),
            "standardize inputs with train-split mean and std (was none)")


def add_weight_decay(c: Candidate, hint: Hint, objective=None) -> Change:
    wd = c.recipe.weight_decay
    if wd >= 1e-2:
        return None
    new = 1e-4 if wd == 0 else min(1e-2, wd * 10)
    opt = "adamw" if c.recipe.optimizer == "adam" else c.recipe.optimizer
    return _recipe(c, weight_decay=new, optimizer=opt), f"weight decay {wd:g} -> {new:g} ({opt})"


def early_stopping(c: Candidate, hint: Hint, objective=None) -> Change:
    if c.recipe.early_stopping:
        return None
    return _recipe(c, early_stopping=10), "early stopping on validation loss, patience 10"


def add_dropout(c: Candidate, hint: Hint, objective=None) -> Change:
    arg = _constructor_arg(c, DROPOUT_ARGS)
    if arg is None:
        return None
    old = float(c.init_kwargs.get(arg, 0.0) or 0.0)
    if old >= 0.5:
        return None
    new = round(min(0.5, old + 0.2), 2)
    return (c.replace(init_kwargs={**c.init_kwargs, arg: new}),
            f"constructor argument {arg} {old:g} -> {new:g}")


def longer_schedule(c: Candidate, hint: Hint, objective=None) -> Change:
    epochs = c.recipe.epochs
    if epochs >= MAX_EPOCHS:
        return None
    new = min(MAX_EPOCHS, epochs * 2)
    patience = c.recipe.early_stopping or 10
    return (_recipe(c, epochs=new, early_stopping=patience),
            f"epochs {epochs} -> {new} with early stopping (patience {patience})")


def raise_capacity(c: Candidate, hint: Hint, objective=None) -> Change:
    arg = _constructor_arg(c, CAPACITY_ARGS)
    if arg is None:
        return None
    default = _constructor_default(c, arg)
    old = int(c.init_kwargs.get(arg, default or 32))
    if old >= 1024:
        return None
    return (c.replace(init_kwargs={**c.init_kwargs, arg: old * 2}),
            f"constructor argument {arg} {old} -> {old * 2}")


def cosine_schedule(c: Candidate, hint: Hint, objective=None) -> Change:
    if c.recipe.schedule != "constant":
        return None
    return _recipe(c, schedule="cosine"), "cosine learning-rate schedule (was constant)"


def smaller_batch(c: Candidate, hint: Hint, objective=None) -> Change:
    if "memory" not in hint.metric or c.recipe.batch_size <= 8:
        return None
    new = c.recipe.batch_size // 2
    return _recipe(c, batch_size=new), f"batch size {c.recipe.batch_size} -> {new}"


def fewer_epochs(c: Candidate, hint: Hint, objective=None) -> Change:
    if "wall" not in hint.metric or c.recipe.epochs <= 2:
        return None
    new = c.recipe.epochs // 2
    return _recipe(c, epochs=new), f"epochs {c.recipe.epochs} -> {new} to fit the time limit"


def remove_detach(c: Candidate, hint: Hint, objective=None) -> Change:
    """A parameter without gradient behind a ``.detach()`` in forward: drop the detach."""
    src = c.source
    if ".detach()" not in src:
        return None
    fixed = re.sub(r"\.detach\(\)", "", src)
    return c.replace(files={**c.files, c.main: fixed}), "removed .detach() from the model code"


def keras_setting(c: Candidate, hint: Hint, objective=None) -> Change:
    """A recipe setting the check named, with the value Keras uses (``hint.expected``)."""
    if not hint.where.startswith("recipe."):
        return None
    name = hint.where.split(".", 1)[1]
    old = c.recipe.to_dict().get(name)
    if name not in c.recipe.to_dict() or old == hint.expected:
        return None
    try:
        recipe = Recipe.from_dict({**c.recipe.to_dict(), name: hint.expected})
    except (TypeError, ValueError):
        return None
    return c.replace(recipe=recipe), f"recipe {name} {old} -> {hint.expected} (Keras' value)"


_MODULE_ARGS = {"BatchNorm epsilon": "eps", "BatchNorm momentum": "momentum",
                "Dropout rate": "p"}


def module_setting(c: Candidate, hint: Hint, objective=None) -> Change:
    """A submodule argument the check named (BatchNorm eps/momentum, dropout rate), set to
    Keras' value on the line that builds that submodule."""
    arg = _MODULE_ARGS.get(hint.metric)
    if arg is None or ":" not in hint.where:
        return None
    attr = hint.where.split(":", 1)[1]
    pattern = re.compile(rf"^(\s*self\.{re.escape(attr)}\s*=\s*nn\.\w+\()(.*)(\)\s*)$", re.M)
    m = pattern.search(c.source)
    if m is None:
        return None
    args = m.group(2)
    value = f"{hint.expected:g}"
    if re.search(rf"\b{arg}\s*=", args):
        new_args = re.sub(rf"\b{arg}\s*=\s*[^,)]+", f"{arg}={value}", args)
    elif arg == "p" and args.strip():
        new_args = value  # nn.Dropout(rate): the first positional argument is p
    else:
        new_args = f"{args}, {arg}={value}" if args.strip() else f"{arg}={value}"
    source = c.source[:m.start(2)] + new_args + c.source[m.end(2):]
    return (c.replace(files={**c.files, c.main: source}),
            f"{attr}: {arg}={value} (Keras' value)")


def reconvert_weights(c: Candidate, hint: Hint, objective=None) -> Change:
    """The first diverging layer's weights, converted again from Keras by the translator."""
    reference = getattr(objective, "reference_weights", None)
    weights = c.artifacts.get("weights.pt")
    if reference is None or not weights or ":" in hint.where or "." in hint.where:
        return None
    import numpy as np
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    ref = reference()
    keys = [k for k in ref if k.startswith(hint.where + ".") and k in state and
            not np.array_equal(state[k].numpy(), ref[k])]
    if not keys:
        return None
    for k in keys:
        state[k] = torch.from_numpy(np.require(ref[k], requirements="C"))  # keeps 0-d
    path = objective.workdir / f"weights-{c.digest()}-{hint.where}.pt"
    torch.save(state, path)
    return (c.replace(artifacts={**c.artifacts, "weights.pt": str(path)}),
            f"re-converted {', '.join(keys)} from the Keras weights")


PLAYBOOK: tuple[Repair, ...] = (
    # a setting the checks named, with the reference's value: the most specific answer first
    Repair("keras_setting", (HintKind.IO_MISMATCH, HintKind.METRIC_GAP),
           "set the recipe setting the check named to Keras' value", keras_setting),
    Repair("module_setting", (HintKind.IO_MISMATCH,),
           "set a BatchNorm / dropout argument to Keras' value", module_setting),
    Repair("reconvert_weights", (HintKind.IO_MISMATCH,),
           "convert the diverging layer's weights from Keras again", reconvert_weights),
    Repair("lower_lr", (HintKind.NAN_LOSS, HintKind.EXPLODING_GRADIENT, HintKind.DEAD_UNITS),
           "divide the learning rate by 10 (by 100 when the loss blows up in 3 steps)", lower_lr),
    Repair("clip_gradients", (HintKind.NAN_LOSS, HintKind.EXPLODING_GRADIENT),
           "clip the gradient norm at 1.0", clip_gradients),
    Repair("standardize_inputs",
           (HintKind.NOT_LEARNING, HintKind.NUMERICAL_INSTABILITY, HintKind.DEAD_UNITS,
            HintKind.NAN_LOSS),
           "standardize features with the train split's mean and std", standardize_inputs),
    Repair("raise_lr", (HintKind.NOT_LEARNING,), "multiply the learning rate by 3", raise_lr),
    Repair("remove_detach", (HintKind.NO_GRADIENT,),
           "remove .detach() calls that cut parameters off the loss", remove_detach),
    Repair("add_weight_decay", (HintKind.OVERFITTING,),
           "add or raise weight decay (AdamW)", add_weight_decay),
    Repair("early_stopping", (HintKind.OVERFITTING,),
           "stop on the validation loss (patience 10)", early_stopping),
    Repair("add_dropout", (HintKind.OVERFITTING,),
           "raise the model's dropout constructor argument", add_dropout),
    Repair("longer_schedule", (HintKind.METRIC_GAP,),
           "double the epochs, with early stopping", longer_schedule),
    Repair("raise_capacity", (HintKind.METRIC_GAP,),
           "double the model's width constructor argument", raise_capacity),
    Repair("cosine_schedule", (HintKind.METRIC_GAP,), "cosine learning-rate decay",
           cosine_schedule),
    Repair("smaller_batch", (HintKind.RESOURCE_LIMIT,), "halve the batch size (memory)",
           smaller_batch),
    Repair("fewer_epochs", (HintKind.RESOURCE_LIMIT,), "halve the epochs (time)", fewer_epochs),
)


def repairs_for(kind: HintKind) -> list[Repair]:
    return [r for r in PLAYBOOK if kind in r.answers]


def repairs_by_kind() -> dict[str, list[str]]:
    """For the hint catalogue: which playbook repairs answer each kind."""
    out: dict[str, list[str]] = {}
    for r in PLAYBOOK:
        for k in r.answers:
            out.setdefault(k.name, []).append(r.name)
    return out


def _init_params(c: Candidate) -> dict[str, ast.expr | None]:
    """The entry class's ``__init__`` parameters and their default expressions (from AST)."""
    try:
        tree = ast.parse(c.source)
    except SyntaxError:
        return {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == c.entry:
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                    args = fn.args.args[1:] + fn.args.kwonlyargs
                    defaults = ([None] * (len(fn.args.args[1:]) - len(fn.args.defaults))
                                + list(fn.args.defaults) + list(fn.args.kw_defaults))
                    return {a.arg: d for a, d in zip(args, defaults)}
    return {}


def _constructor_arg(c: Candidate, names: tuple[str, ...]) -> str | None:
    params = _init_params(c)
    return next((n for n in names if n in params), None)


def _constructor_default(c: Candidate, name: str):
    default = _init_params(c).get(name)
    try:
        return ast.literal_eval(default) if default is not None else None
    except ValueError:
        return None


# Repairs a person may choose for the next iteration without a hint that names a place or a
# value: each changes the recipe or the model by a rule of its own.
USER_REPAIRS = ("lower_lr", "raise_lr", "clip_gradients", "standardize_inputs",
                "add_weight_decay", "early_stopping", "add_dropout", "longer_schedule",
                "raise_capacity", "cosine_schedule", "smaller_batch", "fewer_epochs")


def user_repairs(objective: Any = None) -> list[Repair]:
    """The repairs a person can pick from the panel, as the objective allows them."""
    allowed = getattr(objective, "repairs", None)
    return [r for r in PLAYBOOK if r.name in USER_REPAIRS
            and (allowed is None or r.name in allowed)]


def apply_user_repair(name: str, candidate: Candidate, objective: Any = None
                      ) -> tuple[Candidate, str] | None:
    """The candidate with the repair a person chose applied (None where it changes nothing,
    e.g. the learning rate is already at its floor)."""
    repair = next((r for r in user_repairs(objective) if r.name == name), None)
    if repair is None:
        raise ValueError(f"{name!r} is not a repair you can choose here; choose one of "
                         f"{', '.join(r.name for r in user_repairs(objective))}")
    hint = Hint(repair.answers[0], "user", "repair chosen by the user", "-", "-",
                repair.description, where="recipe")
    return repair.apply(candidate, hint, objective)
