"""The harness's side of a question to the parent during a sandboxed job.

Some decisions need data the sandbox must never hold: whether an epoch is the best so far
and whether to stop early are decided on the validation loss, which needs the validation
labels. So the harness sends the measurement (the outputs on the held-out inputs) and waits
for the decision: ``ask(payload, {...}) -> {...}``. The question travels as a JSON line
``{"ask": ...}`` on the private result pipe, the answer as one JSON line on a reply pipe
(``payload["_channel"]``, filled in by ``_sandbox_child.py``). The parent answers only
questions it validates and never sends back a label or a loss, only the decision.
"""

from __future__ import annotations

import json
import os
from typing import Any

MAX_REPLY_BYTES = 1 << 16


class NoChannel(RuntimeError):
    """The job runs without a parent to ask (not in a sandbox started with ``on_ask``)."""


def ask(payload: dict[str, Any], question: dict[str, Any]) -> dict[str, Any]:
    """Send ``question`` to the parent and return its answer (a dict)."""
    channel = payload.get("_channel")
    if not channel:
        raise NoChannel("this job needs the parent's answers (Sandbox.run(on_ask=...))")
    # a line of its own, as the harness writes them (see _sandbox_child._send)
    line = b"\n" + json.dumps({"ask": question}, separators=(",", ":")).encode() + b"\n"
    view = memoryview(line)
    while view:
        view = view[os.write(channel["status_fd"], view):]
    reply = bytearray()
    while not reply.endswith(b"\n"):
        chunk = os.read(channel["reply_fd"], 4096)
        if not chunk or len(reply) > MAX_REPLY_BYTES:
            raise RuntimeError("the parent closed the reply channel")
        reply += chunk
    answer = json.loads(reply)
    if not isinstance(answer, dict):
        raise RuntimeError(f"the parent's answer is not an object: {answer!r}")
    if "refused" in answer:
        raise RuntimeError(f"the parent refused the question: {answer['refused']}")
    return answer
