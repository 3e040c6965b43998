"""Autopilot Lab in Jupyter: the ``%autopilot`` magics, background runs and the live panel.

``%load_ext autopilot_lab`` registers the magics; everything they do is this API too::

    from autopilot_lab import jupyter as apj
    run = apj.start("improve", Net, "sklearn:breast_cancer", target="roc_auc>=0.98")
    run                  # the live panel
    run.wait()           # the RunResult
"""

from __future__ import annotations

import importlib
from typing import Any

# imported on first use: the console's server extension loads this package at Jupyter server
# start, and the runner pulls in the whole API (torch among it), about 2 s it does not need
_LAZY = {"NotebookError": "model_detect", "NotebookRun": "runner", "active_runs": "runner",
         "insert": "runner", "resume": "runner", "runs": "runner", "show": "runner",
         "start": "runner", "stop": "runner"}

__all__ = [*_LAZY, "load_ipython_extension"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ip: Any) -> None:
    """Register ``%autopilot`` / ``%%autopilot`` in an IPython shell or kernel."""
    from autopilot_lab.jupyter.magics import AutopilotMagics

    ip.register_magics(AutopilotMagics)


# ---- the tracking console's jupyter_server extension (autopilot_lab/jupyter/server.py) ----


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """``jupyter server extension list`` finds the console's REST API here."""
    return [{"module": "autopilot_lab.jupyter.server"}]
