"""An immutable proposal: model source, its training recipe and artifacts.

A candidate is data, never executed in this process: checks hand its files to the sandbox.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step")
PREPROCESSING = ("none", "standardize")
LOSSES = ("auto", "cross_entropy", "binary_cross_entropy", "mse", "mae", "huber")


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
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "penalties", tuple(dict(p) for p in self.penalties))
        if self.class_weight is not None:
            object.__setattr__(self, "class_weight",
                               {int(k): float(v) for k, v in self.class_weight.items()})
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("schedule", self.schedule, SCHEDULES)
        _one_of("preprocessing", self.preprocessing, PREPROCESSING)
        _one_of("loss", self.loss, LOSSES)
        for name in ("lr", "batch_size", "epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Recipe.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("weight_decay", "early_stopping", "grad_clip", "clipnorm", "clipvalue"):
            if getattr(self, name) < 0:
                raise ValueError(f"Recipe.{name} must be >= 0, got {getattr(self, name)!r}")

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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
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


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"Recipe.{name} must be one of {allowed}, got {value!r}")
