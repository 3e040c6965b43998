"""Trusted job functions for tests/test_sandbox.py; they run inside the sandbox."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any


def echo(payload: dict, workdir: Path) -> Any:
    """Return the payload's ``value`` (a normal job)."""
    return payload["value"]


def run_module(payload: dict, workdir: Path) -> Any:
    """Import candidate module ``payload["module"]`` from ``workdir``; return its ``main(**args)``.

    This is how a job reaches candidate code: the sandbox does not put ``workdir`` on sys.path.
    """
    sys.path.insert(0, str(workdir))
    return importlib.import_module(payload["module"]).main(**payload.get("args", {}))


def environment(payload: dict, workdir: Path) -> dict[str, Any]:
    """The child's environment and working folder, to check what leaked in."""
    return {"env": dict(os.environ), "cwd": os.getcwd(), "workdir": str(workdir)}


def fail(payload: dict, workdir: Path) -> None:
    """Raise the error the payload describes."""
    raise ValueError(payload["message"])


def unjsonable(payload: dict, workdir: Path) -> Any:
    """Return a value JSON cannot encode."""
    return {1, 2, 3}


def torch_sum(payload: dict, workdir: Path) -> dict[str, Any]:
    """Import torch and compute something small with it."""
    import torch

    return {"sum": float(torch.arange(10, dtype=torch.float32).sum()),
            "threads": torch.get_num_threads()}


def big_result(payload: dict, workdir: Path) -> str:
    """Return a string of ``payload["n"]`` characters."""
    return "x" * payload["n"]
