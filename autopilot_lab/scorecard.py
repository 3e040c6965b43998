"""Verdicts of single checks, the scorecard of a candidate, and the one score formula.

Score formula (the only place it lives):

    score = gates_passed + quality

``gates_passed`` counts the hard gates the candidate cleared, in ladder order, so a candidate
that fails a hard gate scores below every candidate that passes it (functional correctness is
a gate, not a weight). ``quality`` in [0, 1) is the mean of the scored (non-gate) checks'
scores, each in [0, 1); it only ranks candidates that cleared the same gates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from autopilot_lab.hints import Hint, Keep, sort_hints

QUALITY_CAP = 0.999


@dataclass(frozen=True)
class Verdict:
    """What one check concluded about one candidate.

    ``evidence`` holds the deterministic measurements behind the verdict; ``timing`` holds
    wall-clock facts, kept apart so that the verdict's JSON is byte-identical across runs.
    """

    check: str
    tier: int
    hard: bool
    passed: bool
    score: float
    hints: tuple[Hint, ...] = ()
    keeps: tuple[Keep, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        """``pass``, ``FAIL``, or ``n/a`` for a check with nothing to judge in this candidate
        (its evidence says why under ``not_applicable``); an n/a verdict passes, so that the
        score of a candidate does not depend on which optional files it carries."""
        if self.evidence.get("not_applicable"):
            return "n/a"
        return "pass" if self.passed else "FAIL"

    def to_dict(self, with_timing: bool = False) -> dict[str, Any]:
        d = {
            "check": self.check,
            "tier": self.tier,
            "hard": self.hard,
            "passed": self.passed,
            "score": round(float(self.score), 6),
            "hints": [h.to_dict() for h in self.hints],
            "keeps": [k.to_dict() for k in self.keeps],
            "evidence": self.evidence,
        }
        if with_timing:
            d["timing"] = self.timing
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no timing): byte-identical for the same candidate."""
        return json.dumps(self.to_dict(), sort_keys=True, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        return cls(check=d["check"], tier=d["tier"], hard=d["hard"], passed=d["passed"],
                   score=d["score"], hints=tuple(Hint.from_dict(h) for h in d["hints"]),
                   keeps=tuple(Keep.from_dict(k) for k in d["keeps"]),
                   evidence=d.get("evidence", {}), timing=d.get("timing", {}))


@dataclass(frozen=True)
class Scorecard:
    """All verdicts of one candidate, in ladder order, and what follows from them."""

    verdicts: tuple[Verdict, ...]
    skipped: tuple[str, ...] = ()

    @property
    def gates_passed(self) -> int:
        n = 0
        for v in self.verdicts:
            if v.hard:
                if not v.passed:
                    break
                n += 1
        return n

    @property
    def failed_gate(self) -> str | None:
        for v in self.verdicts:
            if v.hard and not v.passed:
                return v.check
        return None

    @property
    def all_gates_passed(self) -> bool:
        return self.failed_gate is None and not self.skipped

    @property
    def quality(self) -> float:
        scored = [v.score for v in self.verdicts if not v.hard]
        if not scored or self.failed_gate is not None:
            return 0.0
        return min(QUALITY_CAP, max(0.0, sum(scored) / len(scored)))

    @property
    def score(self) -> float:
        return round(self.gates_passed + self.quality, 6)

    @property
    def hints(self) -> list[Hint]:
        return sort_hints([h for v in self.verdicts for h in v.hints])

    @property
    def keeps(self) -> list[Keep]:
        return [k for v in self.verdicts for k in v.keeps]

    @property
    def targets_met(self) -> bool:
        """All gates passed and every scored check says its target is met."""
        return self.all_gates_passed and all(
            v.evidence.get("target_met", True) for v in self.verdicts if not v.hard)

    def verdict(self, check: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.check == check), None)

    def to_dict(self, with_timing: bool = False) -> dict[str, Any]:
        return {"score": self.score, "gates_passed": self.gates_passed,
                "failed_gate": self.failed_gate, "targets_met": self.targets_met,
                "skipped": list(self.skipped),
                "verdicts": [v.to_dict(with_timing) for v in self.verdicts]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scorecard:
        return cls(verdicts=tuple(Verdict.from_dict(v) for v in d["verdicts"]),
                   skipped=tuple(d.get("skipped", ())))


def _json_default(o: Any) -> Any:
    """numpy / torch values in evidence: scalars as numbers, arrays as (nested) lists
    (``tolist`` gives both; ``item`` only allows a single element)."""
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
