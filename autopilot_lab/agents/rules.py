"""The offline, deterministic agent: the objective's first draft, then playbook repairs.

Strategy: start from the best candidate so far (the latest of equals, so repairs compound);
answer the most urgent priority level present in its hints (P1 before anything else: fix what
blocks before tuning), one repair per hint kind; never a repair that this lineage applied
without making its hint go away, nor one already tried from the same parent; never touching
what the keeps protect (repairs change the recipe or constructor arguments, not working code).
An objective may narrow the playbook (``objective.repairs``: the names it allows).
"""

from __future__ import annotations

from autopilot_lab.agents.base import Agent, NoProposal
from autopilot_lab.agents.playbook import repairs_for
from autopilot_lab.candidate import Candidate
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.journal import Journal

PER_PLACE = frozenset({HintKind.IO_MISMATCH, HintKind.NO_GRADIENT})


class RulesAgent(Agent):
    name = "rules"

    def propose(self, objective, journal: Journal, hints: list[Hint],
                keeps: list[Keep]) -> Candidate:
        if not journal.iterations:
            draft = objective.initial_candidate()
            return draft.replace(notes={**draft.notes, "agent": self.name,
                                        "summary": "first draft: " + objective.draft_summary()})
        base = journal.frontier  # the loop hands us the hints and keeps of this iteration
        tried = _tried(journal)
        futile = _futile(journal, base.n)
        candidate, applied = base.candidate, []
        seen = set()
        top = min((h.priority for h in hints), default=None)
        allowed = getattr(objective, "repairs", None)  # an objective may narrow the playbook
        for hint in hints:
            # tuning hints: one repair per kind; hints that name a place: one per place
            slot = hint.key if hint.kind in PER_PLACE else hint.kind
            if hint.priority != top or slot in seen:
                continue
            for repair in repairs_for(hint.kind):
                if allowed is not None and repair.name not in allowed:
                    continue
                if (repair.name, base.candidate.digest()) in tried or repair.name in futile:
                    continue
                change = repair.apply(candidate, hint, objective)
                if change is None:
                    continue
                candidate, what = change
                applied.append({"repair": repair.name, "hint": hint.kind.name,
                                "hint_key": hint.key, "change": what})
                seen.add(slot)
                break
        if not applied:
            kinds = sorted({h.kind.name for h in hints if h.priority == top})
            held_back = allowed is not None and any(
                r.name not in allowed for h in hints if h.priority == top
                for r in repairs_for(h.kind))
            narrowed = (f" ({getattr(objective, 'name', 'this objective')} allows only "
                        f"{', '.join(sorted(allowed))}: "
                        f"{getattr(objective, 'repairs_reason', '')})" if held_back else "")
            raise NoProposal(
                "the rules playbook has no untried repair for " + (", ".join(kinds) or
                                                                   "the remaining hints")
                + narrowed + "; use --agent llm or auto for code-level changes")
        summary = "; ".join(f"{a['repair']} for {a['hint']}: {a['change']}" for a in applied)
        return candidate.replace(parent=base.n, notes={"agent": self.name, "repairs": applied,
                                                       "summary": summary})


def _futile(journal: Journal, base_n: int) -> set[str]:
    """Repairs in the base's lineage after which the hint they answered was still there."""
    out = set()
    for it in journal.lineage(base_n):
        still = {h.key for h in it.scorecard.hints}
        out |= {a["repair"] for a in it.candidate.notes.get("repairs", [])
                if a["hint_key"] in still}
    return out


def _tried(journal: Journal) -> set[tuple[str, str]]:
    """(repair, parent digest) pairs already applied from this same parent."""
    out = set()
    for it in journal.iterations:
        parent = it.candidate.parent
        if parent is None:
            continue
        digest = journal.get(parent).candidate.digest()
        for a in it.candidate.notes.get("repairs", []):
            out.add((a["repair"], digest))
    return out
