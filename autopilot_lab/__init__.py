"""Autopilot Lab: a verified agent loop for model work (generate -> score -> hint -> regenerate).

The public API: :func:`improve`, :func:`run`, :func:`resume`; the result is a
:class:`RunResult`. Heavy modules load on first use so that ``import autopilot_lab`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["improve", "migrate", "resume", "run", "verify", "RunResult"]

if TYPE_CHECKING:
    from autopilot_lab.api import improve, migrate, resume, run, verify
    from autopilot_lab.loop import RunResult


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext autopilot_lab``: register the ``%autopilot`` / ``%%autopilot`` magics."""
    from autopilot_lab.jupyter import load_ipython_extension as load

    load(ip)


def __getattr__(name: str) -> Any:
    if name in ("improve", "migrate", "resume", "run", "verify"):
        from autopilot_lab import api

        return getattr(api, name)
    if name == "RunResult":
        from autopilot_lab.loop import RunResult

        return RunResult
    raise AttributeError(f"module 'autopilot_lab' has no attribute {name!r}")
