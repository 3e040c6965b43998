"""Load a candidate's ``nn.Module`` from the sandbox's scratch folder and seed everything."""

from __future__ import annotations

import importlib.util
import inspect
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autopilot_lab.harness.training import tag_logits

# Constructor parameters the harness fills from the task, by the names people use for them.
FEATURE_ARGS = ("n_features", "in_features", "input_dim", "n_inputs", "num_features")
OUTPUT_ARGS = ("n_outputs", "out_features", "output_dim", "n_classes", "num_classes")


def seed_everything(seed: int, threads: int = 1) -> None:
    """Same seed, same thread count -> same numbers (the verdict JSON depends on it)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))
    deterministic_algorithms()


def deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its import of
    ``torch._inductor`` (and with it ``torch._dynamo``): 1.5 to 2.5 s here, paid by every
    sandboxed job for a compiler most candidates never touch. The compiler's own flag is set
    when a job has imported it."""
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = True  # type: ignore[attr-defined]


def import_candidate(workdir: Path, main: str) -> Any:
    """Import the candidate's main file as a fresh module (its siblings importable too)."""
    path = Path(workdir) / main
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    name = f"candidate_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_model(workdir: Path, payload: dict[str, Any]) -> torch.nn.Module:
    """Instantiate ``payload['entry']`` with the task sizes its constructor asks for."""
    module = import_candidate(workdir, payload.get("main", "model.py"))
    entry = payload["entry"]
    cls = getattr(module, entry, None)
    if cls is None:
        raise AttributeError(f"model file defines no {entry!r}")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise TypeError(f"{entry} is not a torch.nn.Module subclass")
    kwargs = dict(payload.get("init_kwargs") or {})
    params = inspect.signature(cls.__init__).parameters
    task = payload["task"]
    for names, value in ((FEATURE_ARGS, task["n_features"]), (OUTPUT_ARGS, task["n_outputs"])):
        for n in names:
            if n in params and n not in kwargs:
                kwargs[n] = value
                break
    seed_everything(int(payload.get("seed", 0)), int(payload.get("threads", 1)))
    model = cls(**kwargs)
    if payload.get("weights"):
        # converted weights of a migration: strict, so a wrong key or shape is an error
        state = torch.load(Path(workdir) / payload["weights"], map_location="cpu",
                           weights_only=True)
        model.load_state_dict(state, strict=True)
    recipe = payload.get("recipe") or {}
    if not recipe.get("from_logits", True) and recipe.get("loss", "auto") in (
            "auto", "cross_entropy", "binary_cross_entropy"):
        tag_logits(model)  # a probabilities loss: Keras' logits rule needs the tags
    return model


def load_data(workdir: Path, payload: dict[str, Any]) -> dict[str, np.ndarray]:
    with np.load(Path(workdir) / payload.get("data", "data.npz")) as npz:
        return {k: npz[k] for k in npz.files}
