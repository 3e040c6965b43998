"""`autopilot doctor`: versions, devices, the sandbox layers this host allows, data access."""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys
from typing import Any

PACKAGES = ("torch", "numpy", "pandas", "scikit-learn", "sqlalchemy", "openml", "ruff",
            "tensorflow-cpu", "tensorflow", "keras")


def diagnose() -> dict[str, Any]:
    from autopilot_lab import __version__
    from autopilot_lab.data import datasets_dir
    from autopilot_lab.sandbox import Sandbox

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    devices: dict[str, Any] = {"cpu_threads": None, "cuda": False}
    try:
        import torch

        devices["cpu_threads"] = torch.get_num_threads()
        devices["cuda"] = torch.cuda.is_available()
        if devices["cuda"]:
            devices["gpus"] = [torch.cuda.get_device_name(i)
                               for i in range(torch.cuda.device_count())]
    except Exception as e:  # doctor reports, never crashes
        devices["error"] = str(e)
    try:
        data_dir = str(datasets_dir())
    except Exception as e:
        data_dir = f"unavailable: {e}"
    return {"autopilot_lab": __version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "packages": versions, "devices": devices,
            "sandbox": Sandbox.available_layers(), "datasets_dir": data_dir,
            "llm": _llm_endpoint()}


def _llm_endpoint(timeout_s: float = 3.0) -> dict[str, Any]:
    """Whether the configured LLM endpoint answers and which models it serves."""
    from autopilot_lab.agents.llm_client import probe_endpoint

    try:
        return probe_endpoint(timeout_s=timeout_s)
    except Exception as e:  # doctor reports, never crashes
        return {"configured": True, "ok": False, "error": f"{type(e).__name__}: {e}"}


def render(report: dict[str, Any]) -> str:
    lines = [f"autopilot-lab {report['autopilot_lab']} on Python {report['python']} "
             f"({report['platform']})", "", "packages:"]
    lines += [f"  {k:<16} {v}" for k, v in report["packages"].items()]
    dev = report["devices"]
    lines += ["", "devices:", f"  cpu threads      {dev.get('cpu_threads')}",
              f"  cuda             {dev.get('cuda')}"]
    lines += [f"  gpu              {g}" for g in dev.get("gpus", [])]
    lines += ["", "sandbox layers:"]
    for layer, state in report["sandbox"].items():
        lines.append(_layer_line(layer, state))
    lines += ["", f"datasets folder: {report['datasets_dir']}"]
    llm = report.get("llm") or {}
    lines += ["", "llm endpoint:"]
    if not llm.get("configured"):
        lines.append(f"  {llm.get('message', 'not configured')}")
    else:
        lines += [f"  url              {llm.get('base_url')}",
                  f"  key              {llm.get('key')}"]
        if llm.get("ok"):
            served = ", ".join(llm.get("models", [])) or "none listed"
            more = llm.get("n_models", 0) - len(llm.get("models", []))
            lines += [f"  answers          yes ({llm.get('latency_s')} s)",
                      f"  serves           {served}" + (f" and {more} more" if more > 0 else "")]
            model = llm.get("model")
            if model:
                state = "served" if llm.get("model_served") else "NOT served by this endpoint"
                lines.append(f"  model            {model} ({state})")
            else:
                lines.append("  model            not set: set AUTOPILOT_LLM_MODEL")
        else:
            lines.append(f"  answers          no: {llm.get('error')}")
    return "\n".join(lines)


def _layer_line(layer: str, state: bool | str) -> str:
    """``[on ] name``: True, False, a reason why a layer is off, or "on: how" / "off: why"."""
    mark = "on " if state is True else "off" if state is False else "   "
    if isinstance(state, str) and state.startswith(("on:", "off:")):
        mark, _, state = state.partition(":")
        mark, state = mark.ljust(3), state.strip()
    return f"  [{mark}] {layer}" + ("" if isinstance(state, bool) else f": {state}")
