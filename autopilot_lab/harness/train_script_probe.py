"""Sandbox job for the exported ``train.py``: the script a user takes away, run for K steps.

Imports the candidate's ``train.py`` (candidate code: it runs here, never in the parent),
builds the model from ``model.py`` and ``weights.pt``, switches dropout off (as Keras' side of
the comparison does) and calls the script's documented entry points on parity's inputs:
``train_steps(model, batches)`` on the K steps' batches and ``predict(model, x)`` on the fixed
rows. Returns measurements only: ``checks.train_script`` compares them with Keras' own steps,
which never enter the sandbox.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from autopilot_lab.harness.model_loader import build_model, import_candidate
from autopilot_lab.harness.parity import _dropout_off
from autopilot_lab.harness.probes import r
from autopilot_lab.harness.wire import pack


def steps(payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    workdir = Path(workdir)
    data = dict(np.load(workdir / "parity.npz"))
    x, y = data["x_0"], data["y"]
    script = import_candidate(workdir, "train.py")
    for name in ("train_steps", "predict"):
        if not callable(getattr(script, name, None)):
            raise AttributeError(f"train.py defines no {name}(); verify calls train_steps("
                                 "model, batches) and predict(model, x)")
    model = build_model(workdir, payload)
    predicted = script.predict(model, x)
    _dropout_off(model)
    batches = [(x[rows], y[rows]) for rows in data["dyn_index"]]
    losses = script.train_steps(model, batches)
    return {"losses": [r(v) for v in losses], "predicted": pack(torch.as_tensor(predicted)),
            "final": {k: pack(v) for k, v in model.state_dict().items()}}
