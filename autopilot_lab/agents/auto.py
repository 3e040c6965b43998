"""`auto`: the rules first, the LLM for what the rules cannot answer.

The LLM is asked when a hint at the most urgent priority present is an UNSUPPORTED_LAYER
(new code is needed), is of a kind with no playbook repair, or has persisted through the last
two iterations (the repairs did not make it go away), and when the playbook has no untried
repair left. Everything else goes to the offline, free, deterministic rules. Each candidate's
notes say which agent produced it (``agent``) and why (``why``).
"""

from __future__ import annotations

from typing import Any

from autopilot_lab.agents.base import Agent, NoProposal
from autopilot_lab.agents.llm import LLMAgent
from autopilot_lab.agents.playbook import repairs_for
from autopilot_lab.agents.rules import RulesAgent
from autopilot_lab.candidate import Candidate
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.journal import Journal


class AutoAgent(Agent):
    name = "auto"

    def __init__(self, llm: LLMAgent | None = None, *, store: Any = None,
                 run_id: str | None = None):
        self.rules = RulesAgent()
        self.llm = llm or LLMAgent(store=store, run_id=run_id, label=self.name)

    def propose(self, objective: Any, journal: Journal, hints: list[Hint],
                keeps: list[Keep]) -> Candidate:
        if not journal.iterations:
            return _why(self.rules.propose(objective, journal, hints, keeps),
                        "first iteration: the objective's own draft")
        reason = llm_reason(journal, hints)
        if reason is None:
            try:
                candidate = self.rules.propose(objective, journal, hints, keeps)
            except NoProposal:
                reason = "the rules playbook has no untried repair left for the top hints"
            else:
                repaired = sorted({r["hint"] for r in candidate.notes.get("repairs", [])})
                return _why(candidate, f"a playbook repair answers {', '.join(repaired)}")
        try:
            return self.llm.propose_for(objective, journal, hints, keeps, why=reason)
        except NoProposal as e:
            try:
                candidate = self.rules.propose(objective, journal, hints, keeps)
            except NoProposal:
                raise e from None
            return _why(candidate, f"{reason}, but the LLM gave nothing ({e}); a playbook "
                                   "repair instead")


def llm_reason(journal: Journal, hints: list[Hint]) -> str | None:
    """Why the LLM must answer these hints, or ``None`` when the rules may try first."""
    top = min((h.priority for h in hints), default=None)
    urgent = [h for h in hints if h.priority == top]
    unsupported = [h for h in urgent if h.kind is HintKind.UNSUPPORTED_LAYER]
    if unsupported:
        where = ", ".join(h.where or h.metric for h in unsupported)
        return f"UNSUPPORTED_LAYER ({where}) needs new code"
    no_repair = sorted({h.kind.name for h in urgent if not repairs_for(h.kind)})
    if no_repair:
        return f"no playbook repair answers {', '.join(no_repair)}"
    if len(journal) >= 2:
        before = [{h.key for h in it.scorecard.hints} for it in journal.iterations[-2:]]
        stuck = [h for h in urgent if all(h.key in keys for keys in before)]
        if stuck:
            names = ", ".join(f"{h.kind.name}" + (f" at {h.where}" if h.where else "")
                              for h in stuck)
            return f"{names} persisted through the last two iterations"
    return None


def _why(candidate: Candidate, why: str) -> Candidate:
    return candidate.replace(notes={**candidate.notes, "why": why})
