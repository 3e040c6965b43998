"""`replay:<run>`: run again the agent of a recorded run, answered from the stored responses.

No request leaves the machine: the agent of the recorded run (``llm``, ``auto`` or ``rules``)
is rebuilt with the recorded client settings and a transport that hands back, iteration by
iteration and in order, the recorded answers and failures (429s, 5xx, timeouts, cut-off
answers...), without waiting. Since the checks are deterministic, the replayed run reproduces
the recorded iterations and scores exactly; a prompt that differs from the recorded one (the
prompt code changed since) is logged, and the recorded answer is used all the same. A replay
records no exchanges of its own: nothing was exchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import defaultdict, deque
from typing import Any

from autopilot_lab.agents.auto import AutoAgent
from autopilot_lab.agents.base import Agent
from autopilot_lab.agents.llm import LLMAgent
from autopilot_lab.agents.llm_client import EndpointDown, EndpointError, LLMConfig, Reply
from autopilot_lab.agents.rules import RulesAgent
from autopilot_lab.candidate import Candidate
from autopilot_lab.hints import Hint, Keep
from autopilot_lab.journal import Journal

log = logging.getLogger(__name__)
PREFIX = "replay:"


class ReplayTransport:
    """The recorded exchanges of a run, served per iteration in their recorded order."""

    def __init__(self, exchanges: list[dict[str, Any]], source: str):
        self.source = source
        self._queues: dict[int, deque] = defaultdict(deque)
        for row in exchanges:
            self._queues[row["iteration"]].append(row)
        self._models = sorted({row["model"] for row in exchanges})

    def send(self, body: dict[str, Any], *, iteration: int, timeout_s: float) -> Reply:
        queue = self._queues.get(iteration)
        if not queue:
            raise EndpointDown(f"run {self.source} has no more recorded LLM answers for "
                               f"iteration {iteration}")
        row = queue.popleft()
        if row["request"]["body"].get("messages") != body.get("messages"):
            log.warning("replay of %s, iteration %d: the prompt differs from the recorded one; "
                        "using the recorded answer", self.source, iteration)
        if row["status"] == "ok":
            return Reply.from_stored(row)
        err = EndpointError.from_dict(row["response"]["error"])
        err.latency_s = row["latency_s"]
        raise err

    def models(self, timeout_s: float) -> list[str]:
        return self._models


class ReplayAgent(Agent):
    """The agent of run ``source``, answered from its stored exchanges."""

    name = "replay"

    def __init__(self, source: str, store: Any):
        seen = {source}
        row = store.get_run(source)
        while row["agent"].startswith(PREFIX):  # a replay of a replay replays the original
            source = row["agent"][len(PREFIX):]
            if source in seen:
                raise ValueError(f"run {source} replays itself")
            seen.add(source)
            row = store.get_run(source)
        self.source, self.recorded_agent = source, row["agent"]
        exchanges = store.llm_exchanges(source)
        self.inner = self._agent(row["agent"], exchanges)

    def _agent(self, name: str, exchanges: list[dict[str, Any]]) -> Agent:
        if name == "rules":
            return RulesAgent()
        if name not in ("llm", "auto"):
            raise ValueError(f"run {self.source} was made by agent {name!r}, which cannot be "
                             "replayed; replayable: rules, llm, auto")
        first = exchanges[0] if exchanges else None
        known = {f.name for f in dataclasses.fields(LLMConfig)}
        settings = {k: v for k, v in (first["request"]["settings"] if first else {}).items()
                    if k in known}
        config = LLMConfig(base_url=first["base_url"] if first else "replay",
                           model=first["model"] if first else "replay", **settings)
        llm = LLMAgent(config, transport=ReplayTransport(exchanges, self.source),
                       sleep=lambda _s: None)
        return AutoAgent(llm) if name == "auto" else llm

    def propose(self, objective: Any, journal: Journal, hints: list[Hint],
                keeps: list[Keep]) -> Candidate:
        candidate = self.inner.propose(objective, journal, hints, keeps)
        notes = {**candidate.notes, "replay_of": self.source}
        if "llm" in notes:  # the recorded run spent it, not this one
            notes["recorded_llm"] = notes.pop("llm")
        return candidate.replace(notes=notes)


def replay_run(run_id: str, *, store: Any = None, home: str | os.PathLike | None = None,
               max_iters: int | None = None) -> Any:
    """Replay a recorded run on its own objective (rebuilt from the stored spec); returns the
    new run's RunResult."""
    from autopilot_lab import api
    from autopilot_lab.objectives import objective_from_spec
    from autopilot_lab.store import Store

    store = store or Store(home)
    row = store.get_run(run_id)
    return api.run(objective_from_spec(row["spec"]), agent=PREFIX + run_id, store=store,
                   max_iters=max_iters or row["max_iters"])
