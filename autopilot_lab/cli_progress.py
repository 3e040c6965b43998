"""A terminal progress bar that subscribes to the loop's events (one step per check)."""

from __future__ import annotations

import sys

from tqdm import tqdm

from autopilot_lab.events import Event

CHECKS_PER_ITERATION = 5


class Progress:
    """tqdm over iterations x checks; the description says what runs now."""

    def __init__(self, max_iters: int, enabled: bool = True, start: int = 0,
                 checks_per_iteration: int = CHECKS_PER_ITERATION):
        self.enabled = enabled and max_iters > 0
        self.per = checks_per_iteration
        self.total, self.start = max_iters * self.per, start * self.per
        self.bar: tqdm | None = None  # drawn at the run's first event, not before validation
        self.done_in_iteration = 0

    def __call__(self, event: Event) -> None:
        d = event.data
        if self.bar is None:
            self.bar = tqdm(total=self.total, initial=self.start, unit="check", file=sys.stderr,
                            disable=not self.enabled, dynamic_ncols=True,
                            bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}]")
        if event.type == "iteration_started":
            self.done_in_iteration = 0
            self.bar.set_description(f"iteration {d['iteration']}")
        elif event.type == "check_started":
            self.bar.set_description(f"iteration {d['iteration']}: {d['check']}")
        elif event.type == "check_finished":
            self.done_in_iteration += 1
            self.bar.update(1)
        elif event.type == "iteration_finished":
            # checks skipped after a failed gate still count as done
            self.bar.update(max(0, self.per - self.done_in_iteration))
            self.bar.set_postfix_str(f"score {d['score']:.3f} best {d['best_score']:.3f}")
        elif event.type == "run_finished":
            self.bar.set_description(f"{d['status']}: {d['reason']}"[:60])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
