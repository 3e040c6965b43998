"""Plain-text renderings of runs for the terminal (`autopilot runs`, `autopilot show`).

Text read from the store may come from a candidate (exception messages) or an agent: every
piece of it goes through :func:`~autopilot_lab.text.clean` so that no control sequence
reaches the terminal.
"""

from __future__ import annotations

from typing import Any

from autopilot_lab.journal import rank
from autopilot_lab.text import clean, clean_line


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[clean_line(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def render_runs(rows: list[dict]) -> str:
    if not rows:
        return "no runs yet: `autopilot improve MODEL.py:Class --data SPEC` starts one"
    return _table(
        ["run", "objective", "status", "iters", "best", "score", "started"],
        [[r["id"], r["objective"], r["status"], f"{r.get('iterations_done', '')}/"
          f"{r['max_iters']}", r.get("best_iteration") or "-",
          f"{r['best_score']:.3f}" if r.get("best_score") is not None else "-",
          str(r["started_at"])[:19]] for r in rows])


def render_progression(report: dict) -> str:
    """Score progression per check, one row per iteration."""
    its = report["iterations"]
    checks: list[str] = []
    for it in its:
        checks += [c for c in it["checks"] if c not in checks]
    rows = []
    for it in its:
        row = [it["n"], it["agent"]]
        for c in checks:
            v = it["checks"].get(c)
            row.append(("skip" if c in it["skipped"] else "-") if v is None
                       else ("pass " if v["passed"] else "FAIL ") + f"{v['score']:.3f}")
        rows.append(row + [f"{it['score']:.3f}", clean_line(it["summary"])[:60]])
    return _table(["iter", "agent", *checks, "score", "change"], rows)


def render_run(run: dict, iterations: list[dict]) -> str:
    out = [f"run {run['id']}  {run['objective']}  {run['status']}"
           + (f"  ({clean(run['reason'])})" if run.get("reason") else ""),
           f"started {run['started_at']}  finished {run.get('finished_at') or '-'}",
           f"folder {run['folder']}"]
    if run.get("error"):
        out.append(f"error: {clean(run['error'])}")
    if not iterations:
        return "\n".join(out + ["no finished iteration yet"])
    rows, checks = [], []
    for it in iterations:
        for v in it["scorecard"].verdicts:
            if v.check not in checks:
                checks.append(v.check)
    for it in iterations:
        card = it["scorecard"]
        row = [it["n"], it["agent"]]
        for c in checks:
            v = card.verdict(c)
            row.append(("skip" if c in card.skipped else "-") if v is None
                       else ("pass " if v.passed else "FAIL ") + f"{v.score:.3f}")
        rows.append(row + [f"{card.score:.3f}",
                           clean_line(it["candidate"].notes.get("summary", ""))[:60]])
    out += ["", "score progression", _table(["iter", "agent", *checks, "score", "change"],
                                            rows)]
    out += ["", "hints by iteration"]
    for it in iterations:
        hints = it["scorecard"].hints
        out.append(f"  iteration {it['n']}: " + ("no hints" if not hints else ""))
        out += [f"    {h.to_text()}" for h in hints]
    best = max(iterations, key=lambda i: rank(i["score"], sum(
        v.passed for v in i["scorecard"].verdicts), i["n"]))
    cand = best["candidate"]
    out += ["", f"winning candidate: iteration {best['n']} (score {best['score']:.3f})",
            f"  recipe: {clean(cand.recipe.to_dict())}"]
    if cand.init_kwargs:
        out.append(f"  constructor arguments: {clean(cand.init_kwargs)}")
    out.append(f"  code: {run['folder']}/best/{cand.main}")
    return "\n".join(out)


def render_parity(report: dict) -> str:
    """The parity table of a migrate run's best candidate: what matched Keras, by how much."""
    best = report.get("best") or {}
    parity = best.get("parity")
    if not parity:
        return "parity: not reached (see the hints above)"
    rows = [["forward outputs, max abs error", f"{parity['max_abs_error']:.3g}", "<= 1e-4"],
            ["loss on one batch (torch / keras)",
             f"{parity['loss']['torch']:.6g} / {parity['loss']['keras']:.6g}", "equal"],
            ["training steps compared", str(len(parity["dynamics_losses"]["torch"])), "-"]]
    test = report.get("test") or {}
    keras = (test.get("references") or {}).get("Keras")
    if keras and test.get("scored"):
        for name, value in keras.items():
            rows.append([f"test {name} (torch / keras)",
                         f"{test['metrics'].get(name, float('nan')):.4g} / {value:.4g}", "-"])
    return "parity\n" + _table(["measure", "value", "bound"], rows)


def render_failure(n: int, card: Any, run_id: str = "RUN", most: int = 3) -> str:
    """Why a candidate stopped at a gate, for the end of a run's output: the failed gate and
    its first hints (a syntax error's line, a missing class), so the terminal says more than
    "static FAIL". Empty when every gate passed."""
    gate = card.failed_gate
    if gate is None:
        return ""
    verdict = card.verdict(gate)
    hints = sorted(verdict.hints, key=lambda h: h.priority) if verdict else []
    lines = [f"why: iteration {n} failed the {gate} gate"
             + (":" if hints else " (it gave no hint)")]
    lines += [f"  {clean_line(h.to_text(), 400)}" for h in hints[:most]]
    if len(hints) > most:
        lines.append(f"  ... {len(hints) - most} more: `autopilot show {run_id}`")
    return "\n".join(lines)
