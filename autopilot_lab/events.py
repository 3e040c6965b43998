"""A tiny publish/subscribe bus: the loop publishes, the store, progress bars and widgets
subscribe. The loop knows none of its subscribers.

Event types and their ``data``:

- ``run_started``: ``{"objective": str, "spec": dict, "agent": str, "max_iters": int}``
- ``iteration_started``: ``{"iteration": int}``
- ``candidate_proposed``: ``{"iteration": int, "candidate": dict, "agent": str}``
- ``check_started``: ``{"iteration": int, "check": str, "tier": int}``
- ``check_finished``: ``{"iteration": int, "verdict": dict}`` (with timing)
- ``iteration_finished``: ``{"iteration": int, "scorecard": dict, "score": float,
  "best_iteration": int, "best_score": float}``
- ``run_finished``: ``{"status": "finished" | "stopped", "best_iteration": int | None,
  "best_score": float | None, "reason": str}``
- ``run_failed``: ``{"error": str}``: a failure of ours, not of a candidate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "run_started", "iteration_started", "candidate_proposed", "check_started",
    "check_finished", "iteration_finished", "run_finished", "run_failed",
)


@dataclass(frozen=True)
class Event:
    type: str
    run_id: str
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}; known: {EVENT_TYPES}")


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers each event to every subscriber, in subscription order, synchronously.

    A subscriber marked ``critical`` (the store) propagates its exceptions: losing a record
    must stop the run. Others (progress bars, widgets) are logged and ignored.
    """

    def __init__(self) -> None:
        self._subs: list[tuple[Subscriber, bool]] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Subscriber, critical: bool = False) -> Callable[[], None]:
        with self._lock:
            self._subs.append((fn, critical))

        def unsubscribe() -> None:
            with self._lock:
                self._subs = [(f, c) for f, c in self._subs if f is not fn]

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs)
        for fn, critical in subs:
            try:
                fn(event)
            except Exception:
                if critical:
                    raise
                log.exception("event subscriber %r failed on %s", fn, event.type)
