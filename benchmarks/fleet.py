"""The reference fleet: the Keras tabular architectures a production fleet holds, and the
documented rule that assigns one to each task.

Three architectures (all single-input, so the migrate ladder runs every tier on them):

- ``mlp``: Normalization -> (Dense -> BatchNorm -> ReLU -> Dropout) x 2 -> head.
- ``wide_deep``: a wide linear part on every normalized feature plus a deep part on the
  normalized features concatenated with an Embedding of each categorical column (the column is
  cut out of the one input with Cropping1D, shifted to start at 0 with Rescaling and clipped
  to the codes seen with a capped ReLU, so an unseen code falls on the nearest known one).
- ``resmlp``: Normalization -> Dense -> two residual blocks (Dense -> BatchNorm -> ReLU ->
  Dropout -> Dense, added back) -> head.

Heads: binary sigmoid (binary cross-entropy), multiclass softmax (sparse categorical
cross-entropy), regression linear with a Rescaling by the train target's std and mean (so the
network predicts a standardized target; mean squared error). Normalization statistics are the
train part's, passed as constants (a model that survives ``clone_model``).

The rule (``assign``), first match wins:

1. ``wide_deep`` when at least a quarter of the columns are categorical: integer-valued with
   3 to 20 distinct values spanning at most 64 codes (``categorical_columns``; at most
   ``MAX_EMBEDDED`` of them, in column order, get an embedding).
2. ``resmlp`` when the data set has at least ``RESMLP_MIN_ROWS`` rows before subsampling.
3. ``mlp`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from autopilot_lab.data import Task

ARCHITECTURES = ("mlp", "wide_deep", "resmlp")
CAT_MIN_DISTINCT, CAT_MAX_DISTINCT, CAT_MAX_SPAN = 3, 20, 64
WIDE_DEEP_MIN_SHARE = 0.25
MAX_EMBEDDED = 8
RESMLP_MIN_ROWS = 2000
BATCH_SIZE = 64
TARGET_STEPS = 400  # optimizer steps the epoch count aims at
MIN_EPOCHS, MAX_EPOCHS = 10, 200
LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class Assignment:
    """Which architecture a task gets, and why (the rule's words)."""

    arch: str
    reason: str
    categorical: tuple[int, ...]


def categorical_columns(X: np.ndarray) -> list[int]:
    """Columns that are integer codes: integral values, 3-20 distinct, a span of <= 64."""
    out = []
    for j in range(X.shape[1]):
        col = X[:, j]
        if not np.array_equal(col, np.round(col)):
            continue
        values = np.unique(col)
        if CAT_MIN_DISTINCT <= len(values) <= CAT_MAX_DISTINCT and \
                values[-1] - values[0] < CAT_MAX_SPAN:
            out.append(j)
    return out


def assign(task: Task, source_rows: int | None = None) -> Assignment:
    """The documented rule (module docstring); ``source_rows``: rows before subsampling."""
    cats = categorical_columns(task.X)
    rows = source_rows or task.n_rows
    share = len(cats) / task.n_features
    if cats and share >= WIDE_DEEP_MIN_SHARE:
        return Assignment("wide_deep", f"{len(cats)} of {task.n_features} columns categorical "
                          f"(>= {WIDE_DEEP_MIN_SHARE:.0%})", tuple(cats[:MAX_EMBEDDED]))
    if rows >= RESMLP_MIN_ROWS:
        return Assignment("resmlp", f"{rows} rows (>= {RESMLP_MIN_ROWS}), "
                          f"{len(cats)} categorical columns", ())
    return Assignment("mlp", f"{rows} rows (< {RESMLP_MIN_ROWS}), {len(cats)} of "
                      f"{task.n_features} columns categorical", ())


def fit_args(task: Task) -> dict[str, int]:
    """``model.fit`` arguments: batch 64, epochs aiming at ~400 steps, 10 to 200."""
    steps_per_epoch = math.ceil(len(task.split["train"]) / BATCH_SIZE)
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch)))
    return {"epochs": epochs, "batch_size": BATCH_SIZE}


def build(task: Task, assignment: Assignment, seed: int = 0) -> Any:
    """The compiled Keras model for ``task`` (weights seeded by ``seed``)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(seed)
    X, y = task.part("train")
    d = task.n_features
    inp = keras.Input((d,), name="features")
    var = np.maximum(X.var(axis=0), 1e-6)  # a constant column stays finite
    x = L.Normalization(mean=X.mean(axis=0).tolist(), variance=var.tolist(), name="scale")(inp)
    if assignment.arch == "mlp":
        h = x
        for i, width in enumerate((64, 32)):
            h = _dense_block(L, h, width, f"block{i}")
    elif assignment.arch == "resmlp":
        h = L.Dense(64, name="stem")(x)
        for i in range(2):
            r = _dense_block(L, h, 64, f"res{i}")
            h = L.Add(name=f"res{i}_add")([h, L.Dense(64, name=f"res{i}_out")(r)])
        h = L.Activation("relu", name="post")(h)
    elif assignment.arch == "wide_deep":
        h = _deep_with_embeddings(L, inp, x, task, assignment.categorical)
    else:
        raise ValueError(f"unknown architecture {assignment.arch!r}; one of {ARCHITECTURES}")
    z, loss = _head(L, h, task)
    if assignment.arch == "wide_deep":  # the wide part: linear in the normalized features
        z = L.Add(name="wide_deep")([z, L.Dense(z.shape[-1], name="wide")(x)])
    out = _activate(L, z, task, y)
    model = keras.Model(inp, out, name=f"{assignment.arch}_{_safe(task.name)}")
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=loss)
    return model


def _dense_block(L, h, width: int, name: str):
    h = L.Dense(width, use_bias=False, name=f"{name}_dense")(h)
    h = L.BatchNormalization(name=f"{name}_bn")(h)
    h = L.Activation("relu", name=f"{name}_relu")(h)
    return L.Dropout(0.1, name=f"{name}_drop")(h)


def _deep_with_embeddings(L, inp, x, task: Task, cats: tuple[int, ...]):
    d = task.n_features
    parts = [x]
    column = L.Reshape((d, 1), name="columns")(inp)
    for j in cats:
        lo, hi = float(task.X[:, j].min()), float(task.X[:, j].max())
        c = L.Cropping1D((j, d - j - 1), name=f"col{j}")(column)
        c = L.Flatten(name=f"col{j}_flat")(c)
        c = L.Rescaling(1.0, offset=-lo, name=f"col{j}_code")(c)
        n_codes = int(hi - lo) + 1
        c = L.ReLU(max_value=float(n_codes - 1), name=f"col{j}_clip")(c)  # unseen codes
        e = L.Embedding(n_codes, min(8, (n_codes + 1) // 2), name=f"col{j}_emb")(c)
        parts.append(L.Flatten(name=f"col{j}_vec")(e))
    h = L.Concatenate(name="deep_in")(parts)
    for i, width in enumerate((64, 32)):
        h = _dense_block(L, h, width, f"deep{i}")
    return h


def _head(L, h, task: Task):
    """(pre-activation output: logits or a standardized target, the Keras loss)."""
    if task.kind == "multiclass":
        return L.Dense(task.n_classes, name="logits")(h), "sparse_categorical_crossentropy"
    if task.kind == "binary":
        return L.Dense(1, name="logit")(h), "binary_crossentropy"
    return L.Dense(1, name="z")(h), "mse"


def _activate(L, z, task: Task, y: np.ndarray):
    if task.kind == "multiclass":
        return L.Activation("softmax", name="proba")(z)
    if task.kind == "binary":
        return L.Activation("sigmoid", name="proba")(z)
    return L.Rescaling(float(np.std(y)) or 1.0, offset=float(np.mean(y)), name="target")(z)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)
