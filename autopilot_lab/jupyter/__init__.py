"""Autopilot Lab in Jupyter: the ``%autopilot`` magics, background runs and the live panel.

``%load_ext autopilot_lab`` registers the magics; everything they do is this API too::

    from autopilot_lab import jupyter as apj
    run = apj.start("improve", Net, "sklearn:breast_cancer", target="roc_auc>=0.98")
    run                  # the live panel
    run.wait()           # the RunResult
"""

from __future__ import annotations

from typing import Any

from autopilot_lab.jupyter.model_detect import NotebookError
from autopilot_lab.jupyter.runner import (
    NotebookRun,
    active_runs,
    insert,
    resume,
    runs,
    show,
    start,
    stop,
)

__all__ = ["NotebookError", "NotebookRun", "active_runs", "insert", "load_ipython_extension",
           "resume", "runs", "show", "start", "stop"]


def load_ipython_extension(ip: Any) -> None:
    """Register ``%autopilot`` / ``%%autopilot`` in an IPython shell or kernel."""
    from autopilot_lab.jupyter.magics import AutopilotMagics

    ip.register_magics(AutopilotMagics)


# ---- the tracking console's jupyter_server extension (autopilot_lab/jupyter/server.py) ----


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """``jupyter server extension list`` finds the console's REST API here."""
    return [{"module": "autopilot_lab.jupyter.server"}]
