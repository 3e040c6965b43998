"""Tier 0 (migrate): layers the translator could not translate are still stubs.

A stub is a class named ``Untranslated<Layer>`` whose ``forward`` raises NotImplementedError;
each one is an UNSUPPORTED_LAYER P1 hint naming the Keras layer and why, so the next agent
implements exactly that region. Runs no candidate code.
"""

from __future__ import annotations

import ast

from autopilot_lab.candidate import Candidate
from autopilot_lab.checks.base import Check, CheckContext
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.scorecard import Verdict

STUB_PREFIX = "Untranslated"


class UnsupportedCheck(Check):
    name = "unsupported"
    tier = 0
    hard = True

    def evaluate(self, candidate: Candidate, ctx: CheckContext) -> Verdict:
        reasons = {u["stub"]: u for u in (ctx.reference or {}).get("unsupported", [])}
        stubs = _stubs(candidate.source)
        hints = []
        for cls_name, line in stubs:
            info = reasons.get(cls_name, {})
            hints.append(Hint(
                HintKind.UNSUPPORTED_LAYER, self.name, "untranslated layer",
                f"{info.get('name', cls_name)} ({info.get('cls', 'custom layer')})",
                "an nn.Module that computes it",
                f"implement {cls_name}.forward as the Keras layer computes it"
                + (f" ({info['reason']})" if info.get("reason") else "")
                + "; its docstring holds the Keras config and source",
                where=f"{candidate.main}:{line}"))
        keeps = [] if hints else [Keep(self.name, "every Keras layer has a translation")]
        return self.verdict(not hints, 0.0 if hints else 1.0, hints, keeps,
                            evidence={"stubs": [s for s, _ in stubs]})


def _stubs(source: str) -> list[tuple[str, int]]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # the static check reports it
    out = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith(STUB_PREFIX):
            forward = next((f for f in node.body if isinstance(f, ast.FunctionDef)
                            and f.name == "forward"), None)
            if forward and any(isinstance(n, ast.Raise) and "NotImplementedError" in
                               ast.unparse(n) for n in ast.walk(forward)):
                out.append((node.name, node.lineno))
    return out
