"""Agents propose candidates: `rules` (offline, deterministic) today; `llm` and `auto` later."""

from __future__ import annotations

from autopilot_lab.agents.base import Agent, NoProposal
from autopilot_lab.agents.rules import RulesAgent

AGENTS: dict[str, type[Agent]] = {"rules": RulesAgent}

__all__ = ["AGENTS", "Agent", "NoProposal", "make_agent"]


def make_agent(name: str) -> Agent:
    try:
        return AGENTS[name]()
    except KeyError:
        raise ValueError(f"unknown agent {name!r}; available: {sorted(AGENTS)}") from None
