"""Tests of the notebook side: magics, the panel in a real kernel, the notebooks, a screenshot.

:class:`Kernel` drives a real IPython kernel the way a frontend does: it executes cells, keeps
the state of every widget from the comm messages on IOPub, and clicks buttons or types text by
sending the same comm messages a browser sends.
"""

from __future__ import annotations

import json
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# A model whose ReLU layer starts almost dead (bias -1.5 on standardized inputs): iteration 1
# fails the trainability gate with NOT_LEARNING (P1) and raises DEAD_UNITS (P3) beside it.
# The rules agent answers NOT_LEARNING with raise_lr; once NOT_LEARNING is rejected, it answers
# DEAD_UNITS with lower_lr instead.
DEAD_UNITS_CELL = '''import torch
from torch import nn

BIAS = -1.5


class DeadNet(nn.Module):
    def __init__(self, n_features: int, n_outputs: int, hidden: int = 32):
        super().__init__()
        self.inp = nn.Linear(n_features, hidden)
        nn.init.constant_(self.inp.bias, BIAS)
        self.act = nn.ReLU()
        self.out = nn.Linear(hidden, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.inp(x)))
'''
DEAD_UNITS_RECIPE = '{"preprocessing": "standardize"}'


@dataclass
class Reply:
    """What one executed cell gave: its reply content and its IOPub outputs."""

    content: dict[str, Any]
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        parts = []
        for out in self.outputs:
            if out["msg_type"] == "stream":
                parts.append(out["content"]["text"])
            elif out["msg_type"] in ("execute_result", "display_data"):
                parts.append(out["content"]["data"].get("text/plain", ""))
            elif out["msg_type"] == "error":
                parts.append(f"{out['content']['ename']}: {out['content']['evalue']}")
        return "".join(parts)

    @property
    def views(self) -> list[str]:
        """Model ids of the widget views the cell displayed."""
        return [out["content"]["data"][WIDGET_VIEW]["model_id"] for out in self.outputs
                if out["msg_type"] in ("execute_result", "display_data")
                and WIDGET_VIEW in out["content"]["data"]]

    def json(self) -> Any:
        """The last line the cell printed, parsed as JSON."""
        return json.loads(self.text.strip().splitlines()[-1])


class Kernel:
    """A real ipykernel, with a frontend's view of its widgets."""

    def __init__(self, home: Path, cwd: Path = ROOT):
        from jupyter_client import KernelManager

        env = {**os.environ, "AUTOPILOT_HOME": str(home), "PYTHONPATH": str(ROOT)}
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env, cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)
        self.widgets: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)

    def restart(self) -> None:
        """Kill the kernel process and start a fresh one (what "Restart kernel" does)."""
        self.manager.restart_kernel(now=True)
        self.client.wait_for_ready(timeout=120)
        self.widgets.clear()

    # -- cells

    def execute(self, code: str, timeout: float = 120) -> Reply:
        msg_id = self.client.execute(code)
        reply = Reply({})
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            msg = self._next(deadline)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind in ("stream", "execute_result", "display_data", "error"):
                reply.outputs.append({"msg_type": kind, "content": msg["content"]})
            idle = kind == "status" and msg["content"]["execution_state"] == "idle"
        shell = self.client.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
        reply.content = shell["content"]
        return reply

    def check(self, code: str, timeout: float = 120) -> Reply:
        """Execute and fail on an error, showing it."""
        reply = self.execute(code, timeout)
        if reply.content.get("status") != "ok":
            raise AssertionError(f"cell failed: {reply.text}\n{reply.content}")
        return reply

    def _next(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the kernel did not answer in time")
        try:
            msg = self.client.get_iopub_msg(timeout=min(remaining, 1.0))
        except queue.Empty:
            return {"parent_header": {}, "msg_type": "none", "content": {}}
        self._track(msg)
        return msg

    # -- widgets, as a frontend sees them

    def _track(self, msg: dict[str, Any]) -> None:
        content = msg["content"]
        if msg["msg_type"] == "comm_open" and content.get("target_name") == "jupyter.widget":
            self.widgets[content["comm_id"]] = dict(content["data"].get("state", {}))
        elif msg["msg_type"] == "comm_msg" and content["comm_id"] in self.widgets:
            data = content["data"]
            if data.get("method") in ("update", "echo_update"):
                self.widgets[content["comm_id"]].update(data.get("state", {}))
        elif msg["msg_type"] == "comm_close":
            self.widgets.pop(content["comm_id"], None)

    def pump(self, seconds: float = 0.5) -> None:
        """Take in the IOPub messages that arrived (widget updates from the run's thread)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._next(deadline + 1)

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            self.pump(0.5)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def descendants(self, model_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The widget and every widget inside it, depth first."""
        out, stack = [], [model_id]
        while stack:
            mid = stack.pop(0)
            state = self.widgets.get(mid)
            if state is None:
                continue
            out.append((mid, state))
            stack += [c.removeprefix("IPY_MODEL_") for c in state.get("children", [])]
        return out

    def find(self, root: str, **match: Any) -> list[tuple[str, dict[str, Any]]]:
        """Widgets inside ``root`` whose state has every ``match`` item (a callable value is a
        predicate on that field)."""
        def ok(state: dict[str, Any]) -> bool:
            return all((v(state.get(k)) if callable(v) else state.get(k) == v)
                       for k, v in match.items())
        return [(mid, st) for mid, st in self.descendants(root) if ok(st)]

    def texts(self, root: str) -> str:
        """All HTML and label text inside ``root``: what a reader of the panel sees."""
        return "\n".join(str(st.get("value", "")) for _, st in self.descendants(root)
                         if st.get("_model_name") in ("HTMLModel", "LabelModel"))

    def _comm(self, comm_id: str, data: dict[str, Any]) -> None:
        msg = self.client.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.client.shell_channel.send(msg)

    def click(self, comm_id: str) -> None:
        self._comm(comm_id, {"method": "custom", "content": {"event": "click"}})

    def type_text(self, comm_id: str, text: str) -> None:
        self._comm(comm_id, {"method": "update", "state": {"value": text}, "buffer_paths": []})
        self.widgets[comm_id]["value"] = text
