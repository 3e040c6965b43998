"""An immutable proposal: model source, its training recipe and artifacts.

A candidate is data, never executed in this process: checks hand its files to the sandbox.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step")
PREPROCESSING = ("none", "standardize")
LOSSES = ("auto", "cross_entropy", "binary_cross_entropy", "mse", "mae", "huber")
# Upper bounds on what a recipe may ask for: far above any real schedule, low enough that a
# slip of the keyboard (1e11 epochs) is refused up front instead of running into a time limit.
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1_000_000
MAX_SEED = 2**32 - 1  # numpy's bound
MAX_ITERS = 1000  # a run's iteration budget (checked by the API and the CLI, not here)
_INT_FIELDS = {"batch_size": (1, MAX_BATCH_SIZE), "epochs": (1, MAX_EPOCHS),
               "early_stopping": (0, MAX_EPOCHS), "seed": (0, MAX_SEED)}
# float field -> (lowest, whether the lowest itself is excluded)
_FLOAT_FIELDS = {"lr": (0.0, True), "weight_decay": (0.0, False), "grad_clip": (0.0, False),
                 "clipnorm": (0.0, False), "clipvalue": (0.0, False),
                 "label_smoothing": (0.0, False), "eps": (0.0, True), "momentum": (0.0, False),
                 "rho": (0.0, False)}
_BOOL_FIELDS = ("from_logits", "nesterov", "centered", "keras_epsilon", "restore_best")


@dataclass(frozen=True)
class Recipe:
    """How to train a candidate. Everything our training harness needs, nothing more.

    ``loss="auto"`` picks cross-entropy for classification and MSE for regression;
    ``from_logits=False`` means the model already outputs probabilities (Keras-style softmax /
    sigmoid heads; the loss then clips them to [1e-7, 1 - 1e-7] as Keras does).
    ``early_stopping`` is the patience in epochs on the validation loss (0 = off);
    ``restore_best`` puts back the best weights when it stops.
    ``grad_clip`` is the max global gradient norm (Keras ``global_clipnorm``), ``clipnorm`` the
    max norm of each gradient tensor (Keras ``clipnorm``), ``clipvalue`` the max absolute value
    of each gradient element (Keras ``clipvalue``); 0 = off.
    ``eps``, ``betas`` (Adam family), ``momentum`` (SGD, RMSprop), ``rho`` and ``centered``
    (RMSprop) and ``nesterov`` (SGD) are the optimizer's constants; ``weight_decay`` is
    decoupled for AdamW. ``keras_epsilon`` steps the optimizer as Keras does
    (``harness.keras_optim``: Adam's epsilon after the bias correction, RMSprop's inside the
    square root, decoupled weight decay for every optimizer); a recipe translated from Keras
    sets it.
    ``penalties`` are explicit loss terms, Keras regularizers as they are:
    ``{"param": <state_dict key>, "l1": float, "l2": float}`` adds
    ``l1 * sum(|w|) + l2 * sum(w**2)`` to the mean loss.
    ``class_weight`` maps class index -> weight; each sample's loss is scaled by it before the
    mean over the batch (Keras semantics).
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 64
    epochs: int = 20
    weight_decay: float = 0.0
    loss: str = "auto"
    schedule: str = "constant"
    early_stopping: int = 0
    grad_clip: float = 0.0
    clipnorm: float = 0.0
    clipvalue: float = 0.0
    preprocessing: str = "none"
    seed: int = 0
    from_logits: bool = True
    label_smoothing: float = 0.0
    eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    rho: float = 0.9
    nesterov: bool = False
    centered: bool = False
    keras_epsilon: bool = False
    restore_best: bool = True
    penalties: tuple[dict, ...] = ()
    class_weight: dict[int, float] | None = None

    def __post_init__(self) -> None:
        """Check every field's type and range: a wrong type is a TypeError, a value out of
        range a ValueError, both naming the field (``Recipe.lr``) and the value."""
        for name in ("optimizer", "schedule", "preprocessing", "loss"):
            _one_of(name, getattr(self, name), _CHOICES[name])
        for name, (low, high) in _INT_FIELDS.items():
            value = _integer(name, getattr(self, name))
            if not low <= value <= high:
                raise ValueError(f"Recipe.{name} must be {'> 0' if low == 1 else '>= 0'} and "
                                 f"<= {high}, got {value!r}")
            object.__setattr__(self, name, value)
        for name, (low, open_low) in _FLOAT_FIELDS.items():
            value = _real(name, getattr(self, name))
            if value < low or (open_low and value == low):
                raise ValueError(f"Recipe.{name} must be {'>' if open_low else '>='} {low:g}, "
                                 f"got {value!r}")
            object.__setattr__(self, name, value)
        if self.label_smoothing > 1:
            raise ValueError(f"Recipe.label_smoothing must be <= 1, got {self.label_smoothing!r}")
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if not (isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind",
                                                       "") == "b"):
                raise TypeError(f"Recipe.{name} must be true or false, got {value!r}")
            object.__setattr__(self, name, bool(value))
        object.__setattr__(self, "betas", _betas(self.betas))
        object.__setattr__(self, "penalties", _penalties(self.penalties))
        if self.class_weight is not None:
            object.__setattr__(self, "class_weight", check_class_weight(self.class_weight))

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["penalties"] = [dict(p) for p in self.penalties]
        if self.class_weight is not None:
            d["class_weight"] = {str(k): v for k, v in self.class_weight.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        """A recipe from its dict (a JSON object); refuses anything but a mapping of known
        field names."""
        if not isinstance(d, Mapping):
            raise TypeError(f"a recipe must be a dict (a JSON object) of fields, got "
                            f"{type(d).__name__} {_short(d)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(d) - known)
        if unknown:
            raise ValueError(f"unknown recipe fields {unknown}; allowed: {sorted(known)}")
        return cls(**d)


@dataclass(frozen=True)
class Candidate:
    """One proposal of the agent.

    ``files`` maps file names to source text; ``entry`` names the ``nn.Module`` class in
    ``files[main]``; ``init_kwargs`` are passed to its constructor on top of the sizes the
    harness fills in (``n_features``, ``n_outputs`` when the constructor takes them).
    ``notes`` is the agent's own account (e.g. which repair answered which hint).
    """

    files: dict[str, str]
    entry: str
    recipe: Recipe = field(default_factory=Recipe)
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    parent: int | None = None
    main: str = "model.py"

    def __post_init__(self) -> None:
        """Check the types of what the agent or the API hands over, naming the argument:
        a candidate with a non-text file or a dict for a recipe fails here, not in a check."""
        if not isinstance(self.files, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.files.items()):
            raise TypeError(f"Candidate files must be a dict of file name -> source text, got "
                            f"{_short(self.files)}")
        if not isinstance(self.entry, str):
            raise TypeError(f"Candidate entry must be a class name (str), got {self.entry!r}")
        if not isinstance(self.recipe, Recipe):
            raise TypeError(f"Candidate recipe must be a Recipe (Recipe.from_dict turns a dict "
                            f"into one), got {type(self.recipe).__name__}")
        for name in ("init_kwargs", "artifacts", "notes"):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise TypeError(f"Candidate {name} must be a dict with str keys, got "
                                f"{_short(value)}")
        if self.parent is not None and (isinstance(self.parent, bool)
                                        or not isinstance(self.parent, int)):
            raise TypeError(f"Candidate parent must be an iteration number or None, got "
                            f"{self.parent!r}")
        if not isinstance(self.main, str):
            raise TypeError(f"Candidate main must be a file name (str), got {self.main!r}")
        if self.main not in self.files:
            raise ValueError(f"candidate has no main file {self.main!r}; files: "
                             f"{sorted(self.files)}")
        if not self.entry.isidentifier():
            raise ValueError(f"entry must be a class name, got {self.entry!r}")

    @property
    def source(self) -> str:
        return self.files[self.main]

    def replace(self, **changes: Any) -> Candidate:
        return dataclasses.replace(self, **changes)

    def digest(self) -> str:
        """Content hash of what determines behaviour (not notes or parent)."""
        payload = json.dumps({"files": self.files, "entry": self.entry,
                              "recipe": self.recipe.to_dict(), "init": self.init_kwargs},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"files": dict(self.files), "entry": self.entry, "recipe": self.recipe.to_dict(),
                "init_kwargs": dict(self.init_kwargs), "artifacts": dict(self.artifacts),
                "notes": dict(self.notes), "parent": self.parent, "main": self.main}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        return cls(files=d["files"], entry=d["entry"], recipe=Recipe.from_dict(d["recipe"]),
                   init_kwargs=d.get("init_kwargs", {}), artifacts=d.get("artifacts", {}),
                   notes=d.get("notes", {}), parent=d.get("parent"),
                   main=d.get("main", "model.py"))


_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "preprocessing": PREPROCESSING,
            "loss": LOSSES}


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"Recipe.{name} must be one of {allowed}, got {value!r}")


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters, for messages about a wrong value."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _integer(name: str, value: Any) -> int:
    """An integral field's value as int; a float (even 2.0), a bool or text is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Recipe.{name} must be an integer, got {type(value).__name__} "
                        f"{_short(value)}")
    return int(value)


def _real(name: str, value: Any) -> float:
    """A real field's value, finite; ints stay ints (the stored dict and digests keep them)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Recipe.{name} must be a number, got {type(value).__name__} "
                        f"{_short(value)}")
    if not math.isfinite(value):
        raise ValueError(f"Recipe.{name} must be a finite number, got {value!r}")
    return value if type(value) in (int, float) else float(value)


def _betas(value: Any) -> tuple[float, float]:
    """Adam's two decay rates, each in [0, 1)."""
    try:
        betas = tuple(_real("betas", b) for b in value)
    except TypeError:
        raise TypeError(f"Recipe.betas must be two numbers in [0, 1), got {_short(value)}"
                        ) from None
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"Recipe.betas must be two numbers in [0, 1), got {_short(value)}")
    return float(betas[0]), float(betas[1])


def _penalties(value: Any) -> tuple[dict, ...]:
    """Loss terms ``{"param": name, "l1": x, "l2": y}`` with finite, non-negative factors."""
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise TypeError(f"Recipe.penalties must be a list of {{'param', 'l1', 'l2'}} dicts, "
                        f"got {_short(value)}")
    out = []
    for p in value:
        if not isinstance(p, Mapping) or not isinstance(p.get("param"), str):
            raise TypeError(f"each of Recipe.penalties must be a dict with a 'param' name, got "
                            f"{_short(p)}")
        for k in ("l1", "l2"):
            if k in p and _real(f"penalties[{p['param']!r}].{k}", p[k]) < 0:
                raise ValueError(f"Recipe.penalties[{p['param']!r}].{k} must be >= 0, got "
                                 f"{p[k]!r}")
        out.append(dict(p))
    return tuple(out)


def check_class_weight(value: Any, name: str = "Recipe.class_weight") -> dict[int, float]:
    """Class index -> weight as ints and floats; indices >= 0 (text digits allowed, as JSON
    keys are text), weights finite and >= 0. ``name`` is the argument's name in messages."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of class index -> weight, got {_short(value)}")
    out = {}
    for k, v in value.items():
        try:
            index = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"{name} keys must be class indices, got {k!r}") from None
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name}[{k!r}] must be a number, got {_short(v)}")
        if index < 0 or not (0 <= v < math.inf):
            raise ValueError(f"{name} maps class indices >= 0 to finite weights >= 0, got "
                             f"{k!r}: {v!r}")
        out[index] = float(v)
    return out
