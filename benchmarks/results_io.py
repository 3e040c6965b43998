"""Writing a benchmark's results: JSON and markdown side by side, with the machine and the
command that produced them, so every figure in the README can be traced to a run."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": sys.version.split()[0],
                            "cpus": os.cpu_count(), "processor": platform.processor() or None,
                            "load_average_1m": round(os.getloadavg()[0], 2)}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def write(name: str, payload: dict[str, Any], markdown: str, folder: Path | None = None,
          argv: list[str] | None = None) -> tuple[Path, Path]:
    """``<folder>/<name>.json`` and ``.md`` (default folder: ``benchmarks/results``), with the
    machine and the command (``argv``: the arguments given, default ``sys.argv[1:]``)."""
    folder = Path(folder) if folder is not None else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    args = sys.argv[1:] if argv is None else argv
    payload = {**payload, "machine": machine(), "command": " ".join(
        ["python -m benchmarks." + name, *args]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    jpath = folder / f"{name}.json"
    mpath = folder / f"{name}.md"
    jpath.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    footer = (f"\n\nMachine: {payload['machine']['platform']}, {payload['machine']['cpus']} "
              f"CPUs (load average {payload['machine']['load_average_1m']} when it finished), "
              f"torch {payload['machine'].get('torch')}, device "
              f"{payload['machine'].get('cuda') or 'cpu'}.  \nCommand: `{payload['command']}`"
              f"  \nFinished: {payload['finished_at']}\n")
    mpath.write_text(markdown.rstrip() + footer)
    return jpath, mpath
