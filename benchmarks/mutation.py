"""Mutation testing: how many small, realistic bugs planted in the core the tests catch.

Each module of ``MODULES`` is mutated by cosmic-ray, one mutant at a time, and the tests that
cover it (``MODULES[module]``) are run against each mutant: a mutant the tests fail on is
killed, one they pass on survived. cosmic-ray mutates the file in place, so this runs it in a
copy of the checkout (tracked files plus the working tree's changes), never in the tree you
edit; the sandbox's children import the copy too (the sandbox finds its package beside the
imported ``autopilot_lab``). Writes ``benchmarks/results/mutation.json`` (rows ``modules``:
mutants, killed, survived, timeout, incompetent, score; a ``summary``) and ``mutation.md``
with every surviving mutant's diff, the list that ``docs/testing.md`` answers.

    python -m benchmarks.mutation                      # every module (an hour or more here)
    python -m benchmarks.mutation --modules autopilot_lab/journal.py
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import results_io

ROOT = Path(__file__).resolve().parents[1]

# module -> the tests that state its behaviour (run against each of its mutants)
MODULES: dict[str, list[str]] = {
    "autopilot_lab/journal.py": ["tests/test_journal.py"],
    "autopilot_lab/scorecard.py": ["tests/test_journal.py"],
    "autopilot_lab/hints.py": ["tests/test_hints.py"],
    "autopilot_lab/text.py": ["tests/test_candidate_text.py"],
    "autopilot_lab/metrics.py": ["tests/test_metrics.py"],
    "autopilot_lab/checks/parity.py": ["tests/migrate/test_parity_mistakes.py",
                                       "tests/migrate/test_correct_migrations.py"],
    "autopilot_lab/checks/stability.py": ["tests/test_stability_findings.py"],
    "autopilot_lab/sandbox.py": ["tests/test_sandbox.py"],
    "autopilot_lab/data.py": ["tests/test_data.py"],
    "autopilot_lab/store.py": ["tests/test_store.py"],
}
TIMEOUT_FACTOR = 3.0  # a mutant's tests may take this many times the baseline, plus 30 s


def _copy_checkout(dest: Path) -> None:
    """The tracked files as they are in the working tree (edits included), nothing else."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def _env(copy: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}


def _module(copy: Path, module: str, tests: list[str]) -> dict[str, Any]:
    pytest = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.monotonic()
    base = subprocess.run(pytest, cwd=copy, capture_output=True, text=True, env=_env(copy))
    baseline_s = time.monotonic() - start
    if base.returncode != 0:
        return {"name": module, "error": "the tests fail without any mutant: "
                + base.stdout.strip().splitlines()[-1] if base.stdout.strip() else "?"}
    config = copy / f".mutation-{Path(module).stem}.toml"
    session = copy / f".mutation-{Path(module).stem}.sqlite"
    timeout = TIMEOUT_FACTOR * baseline_s + 30
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(module)}\n"
        f"timeout = {timeout:.0f}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(' '.join(pytest))}\n\n"
        "[cosmic-ray.distributor]\nname = \"local\"\n")
    cr = str(Path(sys.executable).with_name("cosmic-ray"))
    subprocess.run([cr, "init", str(config), str(session)], cwd=copy, check=True,
                   capture_output=True, env=_env(copy))
    subprocess.run([cr, "exec", str(config), str(session)], cwd=copy, check=True,
                   capture_output=True, env=_env(copy))
    return {"name": module, "tests": tests, "baseline_seconds": round(baseline_s, 1),
            **_tally(session, (copy / module).read_text())}


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions, as (line, column), of every type annotation in ``source``.
    Under ``from __future__ import annotations`` (every module of ours) an annotation is a
    string never evaluated: a mutant inside one (``X | None`` -> ``X + None``) changes nothing
    a test could see. Such mutants are counted as equivalent, not as survivors."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        found = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            found.append(node.returns)
        elif isinstance(node, ast.arg) and node.annotation:
            found.append(node.annotation)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
        spans += [((a.lineno, a.col_offset), (a.end_lineno or a.lineno, a.end_col_offset or 0))
                  for a in found]
    return spans


def _in_annotation(pos: tuple[int, int], spans: list) -> bool:
    return any(start <= tuple(pos) <= end for start, end in spans)


def _tally(session: Path, source: str) -> dict[str, Any]:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    counts = {"mutants": 0, "killed": 0, "survived": 0, "timeout": 0, "incompetent": 0,
              "equivalent": 0}
    survivors = []
    spans = annotation_spans(source)
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            counts["mutants"] += 1
            if _in_annotation(item.mutations[0].start_pos, spans):
                counts["equivalent"] += 1
            elif result.worker_outcome == WorkerOutcome.ABNORMAL:
                counts["timeout"] += 1  # the test command ran past its timeout: caught
            elif result.test_outcome == TestOutcome.KILLED:
                counts["killed"] += 1
            elif result.test_outcome == TestOutcome.SURVIVED:
                counts["survived"] += 1
                m = item.mutations[0]
                survivors.append({"line": m.start_pos[0], "operator": m.operator_name,
                                  "diff": (result.diff or "").strip()[-600:]})
            else:
                counts["incompetent"] += 1
    caught = counts["killed"] + counts["timeout"]
    judged = caught + counts["survived"]
    return {**counts, "score": round(caught / judged, 4) if judged else None,
            "survivors": survivors}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modules", help="comma-separated module paths (default: all of MODULES)")
    args = p.parse_args(argv)
    modules = args.modules.split(",") if args.modules else list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        p.error(f"no tests are assigned to {', '.join(unknown)}; known: {', '.join(MODULES)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="autopilot-mutation-") as tmp:
        copy = Path(tmp)
        _copy_checkout(copy)
        for module in modules:
            print(f"{module}: mutating ...", flush=True)
            row = _module(copy, module, MODULES[module])
            rows.append(row)
            print(f"{module}: {row.get('killed', 0) + row.get('timeout', 0)} of "
                  f"{row.get('mutants', 0)} caught, {row.get('survived', 0)} survived "
                  f"(score {row.get('score')})" if "error" not in row else row["error"],
                  flush=True)
    # one results file for the whole core: a run of some modules replaces their rows only
    earlier = results_io.RESULTS / "mutation.json"
    if earlier.is_file():
        kept = [r for r in json.loads(earlier.read_text()).get("modules", [])
                if r.get("name") not in modules and r.get("name") in MODULES]
        rows = sorted(kept + rows, key=lambda r: list(MODULES).index(r["name"]))
    judged = [r for r in rows if r.get("score") is not None]
    caught = sum(r["killed"] + r["timeout"] for r in judged)
    total = sum(r["killed"] + r["timeout"] + r["survived"] for r in judged)
    summary = {"score": round(caught / total, 4) if total else None, "modules": len(rows),
               "lowest": min((r["score"] for r in judged), default=None),
               "tool": f"cosmic-ray {importlib.metadata.version('cosmic-ray')}"}
    md = ["# Mutation testing (cosmic-ray)", "",
          f"Overall score: {summary['score']} ({caught} of {total} mutants caught); lowest "
          f"module: {summary['lowest']}.", "",
          "Equivalent: mutants inside type annotations, never evaluated under `from __future__ "
          "import annotations` (not in the score).", "",
          "| module | mutants | killed | timeout | survived | equivalent | incompetent | score "
          "| tests |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['name']} | {r.get('mutants', '-')} | {r.get('killed', '-')} | "
           f"{r.get('timeout', '-')} | {r.get('survived', '-')} | {r.get('equivalent', '-')} | "
           f"{r.get('incompetent', '-')} | {r.get('score', r.get('error'))} | "
           f"{', '.join(r.get('tests', []))} |" for r in rows]
    for r in rows:
        for s in r.get("survivors", []):
            md += ["", f"### survived: {r['name']}:{s['line']} ({s['operator']})", "",
                   "```diff", s["diff"], "```"]
    jpath, mpath = results_io.write("mutation", {"modules": rows, "summary": summary},
                                    "\n".join(md))
    print(f"wrote {jpath} and {mpath}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
