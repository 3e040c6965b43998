"""Tier 0: parses, imports only what model code may use, defines an nn.Module with forward,
and ruff's view of its style. Runs no candidate code (ruff only reads the text)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from autopilot_lab.candidate import Candidate
from autopilot_lab.checks.base import Check, CheckContext
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.scorecard import Verdict

# Top-level modules model code may import. Everything else (os, sys, subprocess, socket,
# ctypes, ...) is refused here, and the sandbox contains whatever slips past.
ALLOWED_IMPORTS = frozenset({
    "torch", "numpy", "math", "typing", "collections", "functools", "itertools",
    "dataclasses", "enum", "abc", "__future__", "operator", "numbers", "copy",
})
# train.py, the training script exported with a migration, is a command-line program: it
# also reads its arguments (the sandbox contains whatever it does with them)
SCRIPT_IMPORTS = {"train.py": frozenset({"sys"})}
RUFF_RULES = "E,F,W,B"
MAX_STYLE_HINTS = 10


class StaticCheck(Check):
    name = "static"
    tier = 0
    hard = True

    def evaluate(self, candidate: Candidate, ctx: CheckContext | None = None) -> Verdict:
        hints: list[Hint] = []
        trees: dict[str, ast.Module] = {}
        for fname, text in sorted(candidate.files.items()):
            if not fname.endswith(".py"):
                continue
            try:
                trees[fname] = ast.parse(text, filename=fname)
            except SyntaxError as e:
                hints.append(Hint(HintKind.SYNTAX_ERROR, self.name, "parse",
                                  f"SyntaxError: {e.msg}", "valid Python",
                                  f"fix the syntax at {fname}:{e.lineno}"
                                  + (f" ({e.text.strip()!r})" if e.text else ""),
                                  where=f"{fname}:{e.lineno}"))
        if hints:
            return self.verdict(False, 0.0, hints, evidence={"parsed": False})
        local = {f[:-3] for f in candidate.files if f.endswith(".py")}
        for fname, tree in trees.items():
            hints += _import_hints(fname, tree, local, self.name)
        structure, keeps = _structure(candidate, trees[candidate.main], self.name)
        hints += structure
        gate_ok = not hints
        style = _ruff_hints(candidate, self.name)
        if gate_ok:
            keeps.append(Keep(self.name, "parses, imports only allowed modules"))
        if gate_ok and not style:
            keeps.append(Keep(self.name, "ruff-clean"))
        return self.verdict(gate_ok, 1.0 if gate_ok else 0.0, hints + style, keeps,
                            evidence={"parsed": True, "style_findings": len(style)})


def _import_hints(fname: str, tree: ast.Module, local: set[str], check: str) -> list[Hint]:
    hints = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for full in names:
            top = full.split(".")[0]
            if top not in ALLOWED_IMPORTS and top not in local and \
                    top not in SCRIPT_IMPORTS.get(fname, ()):
                hints.append(Hint(
                    HintKind.IMPORT_ERROR, check, "import", full,
                    f"one of {sorted(ALLOWED_IMPORTS)} or a file of the candidate",
                    f"remove 'import {full}': model code may not use it",
                    where=f"{fname}:{node.lineno}"))
    return hints


def _structure(candidate: Candidate, tree: ast.Module, check: str) -> tuple[list[Hint], list]:
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    entry = classes.get(candidate.entry)
    where = f"{candidate.main}"
    if entry is None:
        return [Hint(HintKind.STRUCTURE, check, "entry class", "missing",
                     f"class {candidate.entry}(nn.Module)",
                     f"define class {candidate.entry} in {candidate.main}; classes found: "
                     f"{sorted(classes) or 'none'}", where=where)], []
    if not _is_module(entry, classes):
        return [Hint(HintKind.STRUCTURE, check, "base class",
                     [ast.unparse(b) for b in entry.bases] or "object", "torch.nn.Module",
                     f"make {candidate.entry} a subclass of torch.nn.Module",
                     where=f"{where}:{entry.lineno}")], []
    if not _has_method(entry, classes, "forward"):
        return [Hint(HintKind.STRUCTURE, check, "forward", "missing", "def forward(self, x)",
                     f"define forward() on {candidate.entry}",
                     where=f"{where}:{entry.lineno}")], []
    return [], [Keep(check, f"{candidate.entry} is an nn.Module with forward()")]


def _is_module(cls: ast.ClassDef, classes: dict[str, ast.ClassDef], depth: int = 0) -> bool:
    for base in cls.bases:
        text = ast.unparse(base)
        if text.split(".")[-1] == "Module" and text.split(".")[0] in ("nn", "torch", "Module"):
            return True
        if text in classes and depth < 10 and _is_module(classes[text], classes, depth + 1):
            return True
    return False


def _has_method(cls: ast.ClassDef, classes: dict[str, ast.ClassDef], name: str) -> bool:
    if any(isinstance(n, ast.FunctionDef) and n.name == name for n in cls.body):
        return True
    return any(ast.unparse(b) in classes and _has_method(classes[ast.unparse(b)], classes, name)
               for b in cls.bases)


def ruff_findings(text: str, filename: str = "model.py") -> list[dict[str, Any]]:
    """ruff's JSON findings for ``text`` with the rules we hold model code to."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    proc = subprocess.run(
        [ruff, "check", "--isolated", "--line-length", "100", "--select", RUFF_RULES,
         "--output-format", "json", "--stdin-filename", filename, "-"],
        input=text, capture_output=True, text=True, timeout=60)
    try:
        return json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        return []


def _ruff_hints(candidate: Candidate, check: str) -> list[Hint]:
    hints = []
    for fname, text in sorted(candidate.files.items()):
        if not fname.endswith(".py"):
            continue
        for f in ruff_findings(text, fname)[:MAX_STYLE_HINTS]:
            row = f.get("location", {}).get("row")
            hints.append(Hint(HintKind.STYLE, check, f"ruff {f.get('code')}", f.get("message"),
                              "no finding", f"apply ruff rule {f.get('code')}",
                              where=f"{fname}:{row}"))
    return hints
