"""The LLM prompt, built from data in one place and testable as text.

:func:`prompt_input` gathers what the model needs to see: the objective and its targets, the
reference model when the objective has one, the data as shapes and summary statistics (rows
only when the user allows samples), the current best candidate, the hints P1 first with
observed / expected / suggestion, the user's own notes, the keeps, and a short history. The
user's rejected hints never appear. :func:`build_messages` renders it at a size level: level 0
is everything, each higher level drops older history, minor hints and long sources, for
endpoints whose context is too small.

An objective may add a reference section by defining ``prompt_context(hints) -> dict`` with
any of: ``keras_config`` (dict), ``layers`` (list of dicts with ``name``, ``class``,
``output_shape``), ``failing_layer`` (dict with ``name``, ``class``, ``config`` and, for a
custom layer, ``source``); other keys are shown as JSON.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from autopilot_lab.candidate import (
    LOSSES,
    OPTIMIZERS,
    PREPROCESSING,
    SCHEDULES,
    Candidate,
    Recipe,
)
from autopilot_lab.checks.static import ALLOWED_IMPORTS
from autopilot_lab.hints import Hint, Keep, Priority, sort_hints
from autopilot_lab.journal import Journal

MAX_LEVEL = 3
# per size level: history entries, hint lines in history, minor (P3/P4) hints, chars of a
# file other than the main one (0: name only), chars of a reference item, feature rows
_LIMITS = (
    {"history": 4, "history_hints": True, "minor": 10, "other_file": 20_000, "ref": 6_000,
     "features": 30},
    {"history": 2, "history_hints": False, "minor": 3, "other_file": 20_000, "ref": 6_000,
     "features": 30},
    {"history": 0, "history_hints": False, "minor": 3, "other_file": 4_000, "ref": 1_500,
     "features": 10},
    {"history": 0, "history_hints": False, "minor": 0, "other_file": 0, "ref": 800,
     "features": 0},
)

_FIELD_NOTES = {"optimizer": "|".join(OPTIMIZERS), "loss": "|".join(LOSSES),
                "schedule": "|".join(SCHEDULES), "preprocessing": "|".join(PREPROCESSING),
                "early_stopping": "patience in epochs, 0 = off", "grad_clip": "0 = off"}

ANSWER_SCHEMA: dict[str, Any] = {
    "name": "candidate",
    "strict": False,
    "schema": {
        "type": "object",
        "properties": {
            "files": {"type": "object", "additionalProperties": {"type": "string"},
                      "description": "changed files, each in full: name -> source"},
            "recipe": {"type": "object", "description": "changed recipe fields only"},
            "init_kwargs": {"type": "object", "description": "constructor arguments"},
            "summary": {"type": "string", "description": "one line: what changed and why"},
        },
        "required": ["files", "summary"],
    },
}

SYSTEM = """You are the code-writing agent of Autopilot Lab. You change a PyTorch model and its \
training recipe so that it passes a ladder of automatic checks (static, build, trainability, \
stability, metric) and meets the targets. Every answer is run in a sandbox and scored; what \
falls short comes back to you as typed hints.

Rules:
- Answer the hints in priority order: P1 blocks running or training, fix those first.
- Do not change what the keeps list says passes, unless a P1 hint requires it.
- Model code may import only {allowed} and the candidate's own files. No file, \
network or process access.
- The entry class is an nn.Module; its constructor may take n_features and n_outputs, which \
the harness fills in. forward(x) takes a float tensor (batch, n_features) and returns \
(batch, outputs) floats: logits for classification, predictions for regression. Training, \
the loss and the data loading are done by the harness from the recipe: do not write them.
- Return every file you change in full, never a diff or an excerpt.""".format(
    allowed=", ".join(sorted(ALLOWED_IMPORTS - {"__future__"})))


@dataclass(frozen=True)
class PromptOptions:
    """How to render: the size level (0 = everything) and the answer format to ask for."""

    level: int = 0
    structured: bool = True

    def smaller(self) -> PromptOptions | None:
        """The next size level, or ``None`` when this is the smallest."""
        return replace(self, level=self.level + 1) if self.level < MAX_LEVEL else None


@dataclass(frozen=True)
class Region:
    """Change only this top-level definition of ``file``; the rest stays byte for byte."""

    file: str
    symbol: str
    reason: str


@dataclass(frozen=True)
class PromptInput:
    """Everything the prompt shows, as plain data."""

    objective: dict[str, Any]
    reference: dict[str, Any] | None
    data: dict[str, Any] | None
    best: dict[str, Any] | None
    hints: tuple[Hint, ...]
    keeps: tuple[Keep, ...]
    history: tuple[dict[str, Any], ...]
    region: Region | None = None
    notes: tuple[str, ...] = ()


def prompt_input(objective: Any, journal: Journal, hints: Iterable[Hint], keeps: Iterable[Keep],
                 *, rejected: Iterable[str] = (), region: Region | None = None,
                 samples: int = 0, draft: Candidate | None = None,
                 notes: Iterable[str] = ()) -> PromptInput:
    """Gather the prompt's data. ``rejected`` hint keys are dropped everywhere (the loop
    already drops them from ``hints``; the history needs it too). ``samples`` > 0 adds that
    many training rows; by default the data is shapes and statistics only. ``draft`` stands
    for the best candidate while the journal is empty (shown as not yet scored). ``notes``:
    the user's own free-text hints for the run (``Store.user_notes``)."""
    rejected = set(rejected)
    hints = tuple(h for h in sort_hints(list(hints)) if h.key not in rejected)
    context = getattr(objective, "prompt_context", None)
    reference = context(list(hints)) if callable(context) else None
    task = getattr(objective, "task", None)
    best = journal.best
    c = best.candidate if best is not None else draft
    best_d = None
    if c is not None:
        card = best.scorecard if best is not None else None
        best_d = {"n": best.n if best else None, "score": best.score if best else None,
                  "entry": c.entry, "main": c.main, "files": dict(c.files),
                  "recipe": c.recipe.to_dict(), "init_kwargs": dict(c.init_kwargs),
                  "checks": {v.check: f"{v.label} {v.score:.3g}"
                             for v in card.verdicts} if card else {},
                  "skipped": list(card.skipped) if card else []}
    history = tuple({"n": it.n, "agent": it.agent, "score": it.score,
                     "summary": it.candidate.notes.get("summary", ""),
                     "failed_gate": it.scorecard.failed_gate,
                     "hints": [_short(h) for h in it.scorecard.hints if h.key not in rejected]}
                    for it in journal.iterations)
    return PromptInput(objective=objective.describe(), reference=reference,
                       data=data_profile(task, samples) if hasattr(task, "part") else None,
                       best=best_d, hints=hints, keeps=tuple(keeps), history=history,
                       region=region, notes=tuple(n.strip() for n in notes if n.strip()))


def data_profile(task: Any, samples: int = 0) -> dict[str, Any]:
    """Shapes and per-feature summary statistics of the training part; rows only when
    ``samples`` > 0."""
    X, y = task.part("train")
    X = np.asarray(X, dtype=float)
    names = list(getattr(task, "feature_names", ()) or [f"x{i}" for i in range(X.shape[1])])
    out: dict[str, Any] = {
        "kind": task.kind,
        "splits": {p: list(task.part(p)[0].shape) for p in ("train", "valid", "test")
                   if p in task.split},
        "features": [{"name": names[i], "mean": _r(X[:, i].mean()), "std": _r(X[:, i].std()),
                      "min": _r(X[:, i].min()), "max": _r(X[:, i].max())}
                     for i in range(X.shape[1])],
    }
    if task.kind == "regression":
        y = np.asarray(y, dtype=float)
        out["target"] = {"mean": _r(y.mean()), "std": _r(y.std()), "min": _r(y.min()),
                         "max": _r(y.max())}
    else:
        labels = list(task.classes) if task.classes is not None else None
        values, counts = np.unique(np.asarray(y), return_counts=True)
        out["target"] = {"class_counts": {str(labels[int(v)] if labels else v): int(n)
                                          for v, n in zip(values, counts)}}
    if samples > 0:
        out["samples"] = [{"x": [_r(v) for v in X[i]], "y": _r(y[i])}
                          for i in range(min(samples, len(X)))]
    return out


def build_messages(inp: PromptInput, options: PromptOptions = PromptOptions()
                   ) -> list[dict[str, str]]:
    """The chat messages: the system rules, then one user message of sections."""
    lim = _LIMITS[options.level]
    parts = [_objective(inp.objective)]
    if inp.data:
        parts.append(_data(inp.data, lim["features"]))
    if inp.reference:
        parts.append(_reference(inp.reference, lim["ref"]))
    if inp.best:
        parts.append(_best(inp.best, lim["other_file"]))
    parts.append(_hints(inp.hints, lim["minor"]))
    if inp.notes:
        parts.append("# The user's notes (hints of their own: follow them unless a check "
                     "above contradicts them)\n" + "\n".join(f"- {n}" for n in inp.notes))
    if inp.keeps:
        parts.append("# Keep: these parts pass, do not change them\n"
                     + "\n".join(f"- {k.check}: {k.what}" for k in inp.keeps))
    if lim["history"] and inp.history:
        parts.append(_history(inp.history[-lim["history"]:], lim["history_hints"]))
    parts.append(_task(inp.region))
    parts.append(answer_format(options.structured, inp.region))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": "\n\n".join(parts)}]


def reask_message(hint: Hint, structured: bool) -> dict[str, str]:
    """The second and last try inside one iteration, after an unusable answer."""
    return {"role": "user", "content": (
        "Your answer could not be used.\n" + render_hint(hint) + "\n\n"
        + answer_format(structured, None))}


def render_hint(h: Hint, i: int | None = None) -> str:
    where = f" at {h.where}" if h.where else ""
    head = f"{i}. " if i is not None else ""
    return (f"{head}[{h.priority.name} {h.kind.name}] {h.check}{where}: {h.metric}\n"
            f"   observed: {_text(h.observed)}\n   expected: {_text(h.expected)}\n"
            f"   suggestion: {h.suggestion}")


def answer_format(structured: bool, region: Region | None) -> str:
    fields = ", ".join(f"{f.name} ({_FIELD_NOTES[f.name]})" if f.name in _FIELD_NOTES
                       else f.name for f in dataclasses.fields(Recipe))
    scope = (f"the file {region.file} with only `{region.symbol}` changed (or just the "
             f"definition of `{region.symbol}`)" if region else
             "each file you change, in full (files you do not change may be left out)")
    if structured:
        return ("# Answer format\nAnswer with one JSON object and nothing else:\n"
                '{"files": {"model.py": "<whole file>"}, "recipe": {<changed fields only>}, '
                '"init_kwargs": {<constructor arguments, only to change them>}, '
                '"summary": "<one line: what changed and why>"}\n'
                f"files: {scope}. Recipe fields: {fields}.")
    return ("# Answer format\nAnswer with " + scope + " in a fenced block that names it: "
            "```python model.py\n<whole file>\n```\nTo change the recipe, add a fenced "
            'block ```json\n{"recipe": {<changed fields only>}}\n```\n'
            f"Recipe fields: {fields}. End with one line that says what changed and why.")


# ---- sections ----------------------------------------------------------------------------

def _objective(obj: dict[str, Any]) -> str:
    lines = [f"# Objective: {obj.get('objective')}"]
    task = obj.get("task") or {}
    if task:
        classes = f", {task.get('n_classes')} classes" if task.get("n_classes") else ""
        split = task.get("split") or {}
        lines.append(f"task: {task.get('name')} ({task.get('spec')}), {task.get('kind')}, "
                     f"{task.get('rows')} rows, {task.get('features')} features{classes}; "
                     "split " + ", ".join(f"{k} {v}" for k, v in split.items()))
    target = obj.get("target")
    if isinstance(target, dict):
        lines.append(f"target: {target.get('metric')} {target.get('op')} "
                     f"{_text(target.get('value'))} (asked as `{target.get('text')}`)")
    elif target:
        lines.append(f"target: {target}")
    else:
        lines.append("target: none given; pass every check and score as high as possible")
    base = obj.get("baseline")
    if isinstance(base, dict):
        lines.append(f"baseline: {base.get('model')} {base.get('primary')} = "
                     f"{_text(base.get('value'))}")
    if obj.get("entry"):
        lines.append(f"entry class: {obj['entry']}")
    known = {"objective", "task", "target", "baseline", "entry", "starting_recipe"}
    lines += [f"{k}: {_clip(json.dumps(v, default=str), 600)}" for k, v in obj.items()
              if k not in known and v is not None]
    return "\n".join(lines)


def _data(data: dict[str, Any], max_features: int) -> str:
    splits = ", ".join(f"{k} {tuple(v)}" for k, v in data["splits"].items())
    lines = ["# Data (shapes and summary statistics of the training part)",
             f"{data['kind']}; X shapes: {splits}"]
    feats = data["features"]
    if max_features:
        lines.append("feature: mean / std / min / max")
        lines += [f"  {f['name']}: {f['mean']} / {f['std']} / {f['min']} / {f['max']}"
                  for f in feats[:max_features]]
        if len(feats) > max_features:
            lines.append(f"  ... and {len(feats) - max_features} more features")
    lines.append("target: " + json.dumps(data["target"]))
    if data.get("samples"):
        lines.append("sample rows (x -> y):")
        lines += [f"  {s['x']} -> {s['y']}" for s in data["samples"]]
    return "\n".join(lines)


def _reference(ref: dict[str, Any], limit: int) -> str:
    lines = ["# Reference model"]
    if "keras_config" in ref:
        lines.append("Keras config:\n" + _clip(json.dumps(ref["keras_config"], default=str),
                                               limit))
    if ref.get("layers"):
        lines.append("layers (name, class, output shape):")
        lines += [f"  {la.get('name')}: {la.get('class')} -> {la.get('output_shape')}"
                  for la in ref["layers"]]
    failing = ref.get("failing_layer")
    if failing:
        lines.append(f"failing layer: {failing.get('name')} ({failing.get('class')})")
        if failing.get("config") is not None:
            lines.append("config: " + _clip(json.dumps(failing["config"], default=str), limit))
        if failing.get("source"):
            lines += ["source:", "```python", _clip(failing["source"], limit), "```"]
    for k, v in ref.items():
        if k not in ("keras_config", "layers", "failing_layer"):
            lines.append(f"{k}: {_clip(json.dumps(v, default=str), limit)}")
    return "\n".join(lines)


def _best(best: dict[str, Any], other_file_chars: int) -> str:
    checks = ", ".join(f"{k} {v}" for k, v in best["checks"].items())
    skipped = f"; skipped: {', '.join(best['skipped'])}" if best["skipped"] else ""
    head = (f"# Current best candidate: iteration {best['n']}, score {best['score']}"
            if best["n"] is not None else "# Current candidate (not scored yet)")
    lines = [head, f"checks: {checks or 'none run yet'}{skipped}",
             f"entry class: {best['entry']} in {best['main']}",
             f"constructor arguments: {json.dumps(best['init_kwargs'])}",
             f"recipe: {json.dumps(best['recipe'])}"]
    for name, text in best["files"].items():
        if name == best["main"]:
            lines += [f"## {name}", "```python", text.rstrip(), "```"]
        elif other_file_chars:
            lines += [f"## {name}", "```python", _clip(text.rstrip(), other_file_chars), "```"]
        else:
            lines.append(f"## {name} (not shown; keep it as it is)")
    return "\n".join(lines)


def _hints(hints: tuple[Hint, ...], max_minor: int) -> str:
    major = [h for h in hints if h.priority <= Priority.P2]
    minor = [h for h in hints if h.priority > Priority.P2]
    shown = major + minor[:max_minor]
    if not shown:
        return "# Hints\n(no hints: every check passed; improve the score)"
    lines = ["# Hints, most urgent first: fix these"]
    lines += [render_hint(h, i) for i, h in enumerate(shown, 1)]
    if len(minor) > max_minor:
        lines.append(f"({len(minor) - max_minor} minor hints not shown)")
    return "\n".join(lines)


def _history(history: tuple[dict[str, Any], ...], with_hints: bool) -> str:
    lines = ["# Earlier iterations"]
    for it in history:
        gate = f", failed gate {it['failed_gate']}" if it["failed_gate"] else ""
        lines.append(f"- iteration {it['n']} ({it['agent']}): score {it['score']}{gate}; "
                     f"{it['summary'] or 'no summary'}")
        if with_hints and it["hints"]:
            lines.append("  hints: " + "; ".join(it["hints"][:5]))
    return "\n".join(lines)


def _task(region: Region | None) -> str:
    if region:
        return (f"# Your task\nChange only `{region.symbol}` in {region.file}: {region.reason}\n"
                "Implement it as an nn.Module. Everything else in the file stays as it is.")
    return ("# Your task\nChange the model code and/or the recipe so that the most urgent "
            "hints go away, without breaking what the keeps list. Prefer the smallest change "
            "that answers the hints; do not repeat an earlier iteration.")


def _short(h: Hint) -> str:
    where = f" at {h.where}" if h.where else ""
    return f"{h.priority.name} {h.kind.name}{where}"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... ({len(text) - limit} more characters not shown)"


def _r(value: Any) -> float:
    return float(f"{float(value):.4g}")

