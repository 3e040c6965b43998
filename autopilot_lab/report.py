"""The run report: a JSON document and its readable markdown rendering.

It says, per iteration, what each check scored and which hints it raised, which repair
answered which hint and whether the hint was gone afterwards (the chain), and what won.
The markdown is read in terminals too: the text in it that a candidate or an agent wrote goes
through :func:`~autopilot_lab.text.clean` (the JSON escapes control characters itself).
"""

from __future__ import annotations

import json
from typing import Any

from autopilot_lab.journal import Journal
from autopilot_lab.sandbox import Sandbox
from autopilot_lab.text import clean, clean_line


def build_report(run_id: str, objective, journal: Journal, status: str,
                 reason: str, llm_totals: dict[str, Any] | None = None,
                 test: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report; ``llm_totals`` (the store's, which also counts the exchanges of a proposal
    that never came) replaces the sum of the iterations' LLM usage when given; ``test`` is
    the run's one test scoring (``evaluation.final_test``): the only test figures in it."""
    iterations = []
    for it in journal.iterations:
        card = it.scorecard
        iterations.append({
            "n": it.n, "agent": it.agent, "parent": it.candidate.parent, "score": card.score,
            "gates_passed": card.gates_passed, "failed_gate": card.failed_gate,
            "targets_met": card.targets_met,
            "checks": {v.check: {"passed": v.passed, "label": v.label, "score": v.score,
                                 "hard": v.hard, "seconds": v.timing.get("seconds")}
                       for v in card.verdicts},
            "skipped": list(card.skipped),
            "hints": [h.to_dict() for h in card.hints],
            "summary": it.candidate.notes.get("summary", ""),
            "why": _why(it.candidate.notes),
            "llm": it.candidate.notes.get("llm"),
            "repairs": it.candidate.notes.get("repairs", []),
            "recipe": it.candidate.recipe.to_dict(),
        })
    best = journal.best
    out: dict[str, Any] = {
        "run_id": run_id, "status": status, "reason": reason,
        "objective": objective.describe(), "iterations": iterations,
        "chain": _chain(journal), "best": None,
        "llm": llm_totals if llm_totals is not None else _llm_sum(iterations),
        "sandbox_missing": Sandbox.missing_layers(),
        "test": test,
    }
    if best:
        metric = best.scorecard.verdict("metric")
        out["best"] = {"iteration": best.n, "score": best.score,
                       "targets_met": best.scorecard.targets_met,
                       "recipe": best.candidate.recipe.to_dict(),
                       "init_kwargs": best.candidate.init_kwargs,
                       "metrics": metric.evidence.get("metrics") if metric else None,
                       "files": best.candidate.files, "entry": best.candidate.entry}
        parity = best.scorecard.verdict("parity")
        if parity is not None and parity.passed:
            out["best"]["parity"] = parity.evidence
    return out


def _why(notes: dict[str, Any]) -> str:
    """Why the agent produced this candidate: its own word, else what its repairs say."""
    if notes.get("why"):
        return notes["why"]
    repairs = notes.get("repairs") or []
    if repairs:
        return "playbook repairs for " + ", ".join(sorted({r["hint"] for r in repairs}))
    return ""


def _llm_sum(iterations: list[dict[str, Any]]) -> dict[str, Any] | None:
    """LLM requests, tokens, cost and latency summed over the iterations' notes."""
    used = [it["llm"] for it in iterations if it["llm"]]
    if not used:
        return None
    costs = [u["cost_usd"] for u in used if u.get("cost_usd") is not None]
    return {"requests": sum(u["requests"] for u in used),
            "failed": sum(u["failed"] for u in used),
            "prompt_tokens": sum(u["prompt_tokens"] for u in used),
            "completion_tokens": sum(u["completion_tokens"] for u in used),
            "cost_usd": round(sum(costs), 8) if costs else None,
            "latency_s": round(sum(u["latency_s"] for u in used), 4)}


def _chain(journal: Journal) -> list[dict[str, Any]]:
    """Each repair, the hint it answered, and whether that hint kind was gone afterwards."""
    chain = []
    for it in journal.iterations:
        after = {h.kind.name for h in it.scorecard.hints}
        for rep in it.candidate.notes.get("repairs", []):
            chain.append({"iteration": it.n, "from_iteration": it.candidate.parent,
                          "hint": rep["hint"], "repair": rep["repair"], "change": rep["change"],
                          "resolved": rep["hint"] not in after})
    return chain


def _usd(cost: float | None) -> str:
    return "n/a (no price for the model)" if cost is None else f"${cost:.4f}"


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, default=str)


def to_markdown(report: dict[str, Any]) -> str:
    obj = report["objective"]
    lines = [f"# Autopilot run {report['run_id']}", "",
             f"- objective: **{obj.get('objective')}**",
             f"- status: **{report['status']}** ({report['reason']})"]
    task = obj.get("task") or {}
    if task:
        lines.append(f"- data: `{task.get('spec')}` ({task.get('kind')}, {task.get('rows')} "
                     f"rows, {task.get('features')} features)")
    target = obj.get("target")
    if isinstance(target, dict) and target.get("value") is not None:
        lines.append(f"- target: `{target.get('text')}` -> {target.get('metric')} "
                     f"{target.get('op')} {target.get('value'):.4g}")
    elif isinstance(target, dict):
        lines.append(f"- target: none (the {target.get('metric')} is reported, not required)")
    base = obj.get("baseline")
    if base:
        lines.append(f"- baseline: {base.get('model')} {base.get('primary')} = "
                     f"{base.get('value'):.4g}")
    missing = report.get("sandbox_missing")
    if missing is not None:
        lines.append("- sandbox: every isolation layer active" if not missing else
                     "- sandbox: missing layers: " + "; ".join(
                         f"{k} ({clean_line(v)})" for k, v in sorted(missing.items())))
    best = report.get("best")
    if best:
        lines.append(f"- best: iteration {best['iteration']}, score {best['score']}, "
                     f"targets met: {best['targets_met']}")
    checks = []
    for it in report["iterations"]:
        for c in it["checks"]:
            if c not in checks:
                checks.append(c)
    lines += ["", "## Score progression", "",
              "| iteration | agent | " + " | ".join(checks) + " | score |",
              "| --- | --- | " + " | ".join("---" for _ in checks) + " | --- |"]
    for it in report["iterations"]:
        cells = []
        for c in checks:
            v = it["checks"].get(c)
            if v is None:
                cells.append("skipped" if c in it["skipped"] else "-")
            else:
                cells.append(v.get("label", "pass" if v["passed"] else "FAIL")
                             + f" {v['score']:.3g}")
        lines.append(f"| {it['n']} | {clean_line(it['agent'])} | " + " | ".join(cells)
                     + f" | {it['score']} |")
    lines += ["", "## Agents (which agent produced each iteration, and why)", "",
              "| iteration | agent | why | LLM requests | tokens in / out | cost (USD) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for it in report["iterations"]:
        u = it.get("llm") or {}
        usage = (f"{u['requests']} | {u['prompt_tokens']} / {u['completion_tokens']} | "
                 f"{_usd(u.get('cost_usd'))}") if u else "- | - | -"
        why = clean_line(it.get("why") or "-").replace("|", "\\|")
        lines.append(f"| {it['n']} | {clean_line(it['agent'])} | {why} | {usage} |")
    total = report.get("llm")
    if total:
        lines += ["", "## LLM usage", "",
                  f"- requests: {total['requests']} ({total['failed']} failed)",
                  f"- tokens: {total['prompt_tokens']} prompt, {total['completion_tokens']} "
                  "completion",
                  f"- cost: {_usd(total.get('cost_usd'))}",
                  f"- time waiting for answers: {total['latency_s']:.1f} s"]
    if report["chain"]:
        lines += ["", "## Repairs (which repair answered which hint)", "",
                  "| iteration | from | hint | repair | change | hint gone |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for c in report["chain"]:
            lines.append(f"| {c['iteration']} | {c['from_iteration']} | "
                         f"{clean_line(c['hint'])} | {clean_line(c['repair'])} | "
                         f"{clean_line(c['change'])} | {'yes' if c['resolved'] else 'no'} |")
    lines += ["", "## Hints by iteration"]
    for it in report["iterations"]:
        summary = clean_line(it["summary"])
        lines += ["", f"### Iteration {it['n']}" + (f": {summary}" if summary else "")]
        if not it["hints"]:
            lines.append("- no hints")
        for h in it["hints"]:
            where = f" at `{clean(h['where'])}`" if h["where"] else ""
            lines.append(f"- **{h['priority']} {h['kind']}** ({clean(h['check'])}{where}): "
                         f"{clean(h['metric'])} observed `{clean(h['observed'], None)}`, "
                         f"expected `{clean(h['expected'], None)}`. {clean(h['suggestion'])}")
    if best:
        parity = best.get("parity")
        if parity:
            test = report.get("test") or {}
            keras = (test.get("references") or {}).get("Keras") or {}
            ours = test.get("metrics") or {}
            lines += ["", "## Parity with Keras", "", "| measure | PyTorch | Keras |",
                      "| --- | --- | --- |",
                      f"| forward outputs, max abs error | {parity['max_abs_error']:.3g} | - |",
                      f"| loss on one batch | {parity['loss']['torch']:.6g} | "
                      f"{parity['loss']['keras']:.6g} |",
                      f"| loss after {len(parity['dynamics_losses']['torch'])} training "
                      f"steps | {parity['dynamics_losses']['torch'][-1]:.6g} | "
                      f"{parity['dynamics_losses']['keras'][-1]:.6g} |"]
            lines += [f"| test {k} | {ours.get(k, float('nan')):.4g} | {v:.4g} |"
                      for k, v in keras.items()]
        lines += _test_section(report.get("test"))
        lines += ["", "## Winning candidate", "", f"Recipe: `{json.dumps(best['recipe'])}`"]
        if best["init_kwargs"]:
            lines.append(f"Constructor arguments: `{json.dumps(best['init_kwargs'])}`")
        if best.get("metrics"):
            lines += ["", "| split | " + " | ".join(next(iter(best["metrics"].values()))) + " |",
                      "| --- |" + " --- |" * len(next(iter(best["metrics"].values())))]
            for split, ms in best["metrics"].items():
                lines.append(f"| {split} | " + " | ".join(f"{v:.4g}" if isinstance(v, float)
                                                           else str(v) for v in ms.values())
                             + " |")
        for fname, text in best["files"].items():
            lines += ["", f"`{clean_line(fname)}`:", "", "```python",
                      clean(text, limit=None).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _test_section(test: dict[str, Any] | None) -> list[str]:
    """The run's one test scoring: the chosen candidate beside the references, and whether
    test confirms what valid decided."""
    if not test:
        return []
    lines = ["", "## Test (scored once, for the candidate chosen on valid)", "",
             f"- {clean_line(test.get('note', ''))}"]
    if not test.get("scored"):
        return lines
    refs = test.get("references") or {}
    names = list(test["metrics"])
    lines += ["", "| model | " + " | ".join(names) + " |",
              "| --- |" + " --- |" * len(names),
              f"| chosen (iteration {test['iteration']}) | "
              + " | ".join(f"{test['metrics'][k]:.4g}" for k in names) + " |"]
    for ref, ms in refs.items():
        lines.append(f"| {clean_line(ref)} | " + " | ".join(
            f"{ms[k]:.4g}" if isinstance(ms.get(k), float) else "-" for k in names) + " |")
    return lines
