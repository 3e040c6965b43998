"""Agents propose candidates: `rules` (offline, deterministic), `llm` (any OpenAI-compatible
endpoint), `auto` (rules first, the LLM for what they cannot answer) and `replay:<run>` (a
recorded run's agent, answered from its stored responses)."""

from __future__ import annotations

from autopilot_lab.agents.auto import AutoAgent
from autopilot_lab.agents.base import Agent, NoProposal
from autopilot_lab.agents.llm import LLMAgent
from autopilot_lab.agents.replay import PREFIX as REPLAY_PREFIX
from autopilot_lab.agents.replay import ReplayAgent
from autopilot_lab.agents.rules import RulesAgent

AGENTS: dict[str, type[Agent]] = {"rules": RulesAgent, "llm": LLMAgent, "auto": AutoAgent}

__all__ = ["AGENTS", "Agent", "NoProposal", "make_agent"]


def make_agent(name: str, *, store=None, run_id: str | None = None) -> Agent:
    """The agent called ``name``; ``store`` and ``run_id`` let agents that talk to a service
    record their exchanges with the run (``replay:<run>`` reads them back)."""
    if name.startswith(REPLAY_PREFIX):
        if store is None:
            raise ValueError(f"agent {name!r} reads the recorded run from the store; none given")
        return ReplayAgent(name[len(REPLAY_PREFIX):], store)
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; available: {sorted(AGENTS)} or "
                         f"{REPLAY_PREFIX}<run id>")
    if name in ("llm", "auto"):
        return AGENTS[name](store=store, run_id=run_id)
    return AGENTS[name]()
