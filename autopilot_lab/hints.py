"""Typed, prioritized feedback: the one vocabulary checks speak and agents read.

Every shortfall a check finds becomes a :class:`Hint` whose ``kind`` comes from
:class:`HintKind`; every thing a check found right becomes a :class:`Keep`. The enum holds,
for each kind, what raises it, its usual priority and the repairs that answer it, so the
catalogue in ``docs/hints.md`` is generated from it (``python -m autopilot_lab.hints``) and
never drifts from the code.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from autopilot_lab.text import clean


class Priority(enum.IntEnum):
    """P1 blocks running or training; P2 wrong results; P3 short of target; P4 minor."""

    P1 = 1
    P2 = 2
    P3 = 3
    P4 = 4


@dataclass(frozen=True)
class _KindInfo:
    priority: Priority
    raised_by: str
    meaning: str
    repairs: tuple[str, ...]


class HintKind(enum.Enum):
    """Every kind of shortfall the ladder can report, with its catalogue entry."""

    SYNTAX_ERROR = _KindInfo(
        Priority.P1, "static", "The source does not parse as Python.",
        ("fix the syntax at the reported line",))
    IMPORT_ERROR = _KindInfo(
        Priority.P1, "static, build",
        "The source imports a module that is not allowed in model code, or that is missing.",
        ("use only torch, numpy and the standard math/typing modules in model code",))
    STRUCTURE = _KindInfo(
        Priority.P1, "static",
        "The named class is missing, is not an nn.Module subclass, or has no forward().",
        ("define the class as a subclass of torch.nn.Module with __init__ and forward",))
    STYLE = _KindInfo(
        Priority.P4, "static", "ruff reports a style or lint issue (not a gate).",
        ("apply the ruff rule named in the hint",))
    RUNTIME_ERROR = _KindInfo(
        Priority.P1, "build, trainability, stability, metric",
        "Candidate code raised an exception, crashed, or was killed by a limit.",
        ("fix the exception at the reported place",
         "for a timeout: make the model cheaper or remove the endless loop"))
    TAMPERING = _KindInfo(
        Priority.P1, "every sandboxed check",
        "The sandbox's report broke the measurement protocol: a forged, duplicated, malformed "
        "or out-of-place message, or measurements of the wrong type or shape. The candidate "
        "is rejected; the parent judges only measurements it can validate.",
        ("do not write to the harness's result pipe or patch the harness; return outputs "
         "from forward() only",))
    RESOURCE_LIMIT = _KindInfo(
        Priority.P1, "sandbox",
        "The candidate ran out of memory, time, processes, file size or output.",
        ("shrink the model or the batch size", "remove process spawning and file writes"))
    SHAPE_MISMATCH = _KindInfo(
        Priority.P1, "build",
        "forward() returned a tensor whose shape is not (batch, outputs).",
        ("make the last layer produce one column per output",))
    DTYPE_MISMATCH = _KindInfo(
        Priority.P1, "build", "forward() returned a non-floating tensor or not a tensor.",
        ("return a floating point tensor from forward()",))
    IO_MISMATCH = _KindInfo(
        Priority.P2, "parity",
        "The candidate's outputs differ from the reference model's on the same inputs.",
        ("correct the first diverging layer named in the hint",))
    NO_GRADIENT = _KindInfo(
        Priority.P1, "trainability",
        "A parameter receives no gradient (None or all zeros): it cannot learn.",
        ("use the parameter in forward()", "remove .detach() / torch.no_grad() from the path"))
    DEAD_UNITS = _KindInfo(
        Priority.P3, "trainability", "Most units of an activation never fire.",
        ("lower the learning rate", "standardize inputs"))
    EXPLODING_GRADIENT = _KindInfo(
        Priority.P1, "trainability", "The gradient norm grows past a safe bound.",
        ("clip gradients", "lower the learning rate"))
    NAN_LOSS = _KindInfo(
        Priority.P1, "trainability, metric", "The training loss became NaN or infinite.",
        ("lower the learning rate", "clip gradients"))
    NOT_LEARNING = _KindInfo(
        Priority.P1, "trainability", "The training loss does not fall over the probe steps.",
        ("standardize inputs", "raise the learning rate"))
    NUMERICAL_INSTABILITY = _KindInfo(
        Priority.P2, "stability",
        "Outputs drift between float32 and float64, overflow on extreme inputs, or depend "
        "on the other rows of the batch in eval mode.",
        ("standardize inputs", "avoid exp/log on unbounded values",
         "use numerically stable ops (logsumexp, log_softmax)"))
    NONDETERMINISM = _KindInfo(
        Priority.P2, "stability",
        "The same inputs give different outputs in eval mode: noise or sampling at inference.",
        ("remove randomness from forward() in eval mode",))
    PRECISION_LOSS = _KindInfo(
        Priority.P2, "stability",
        "forward() rounds through half precision (float16/bfloat16) or cannot run in float64: "
        "a fixed-dtype cast silently loses precision.",
        ("remove fixed-dtype casts from forward()", "keep intermediates in the input's dtype"))
    METRIC_GAP = _KindInfo(
        Priority.P3, "metric", "The task metric falls short of the target.",
        ("train longer", "raise capacity", "tune the learning rate"))
    OVERFITTING = _KindInfo(
        Priority.P3, "metric", "The training metric is far better than the validation metric.",
        ("add weight decay", "add dropout", "stop early on the validation loss"))
    THROUGHPUT_GAP = _KindInfo(
        Priority.P3, "throughput", "Training throughput falls short of the baseline.",
        ("raise the batch size",))
    UNSUPPORTED_LAYER = _KindInfo(
        Priority.P1, "translate", "A layer of the reference model has no known translation.",
        ("implement the layer as an nn.Module",))
    FORMAT = _KindInfo(
        Priority.P1, "agent", "The agent's answer had no usable code.",
        ("answer with whole files in fenced code blocks",))

    @property
    def info(self) -> _KindInfo:
        return self.value

    @property
    def default_priority(self) -> Priority:
        return self.value.priority


_TEXT_LIMITS = {"check": 200, "metric": 200, "observed": 500, "expected": 500,
                "suggestion": 500, "where": 200}


@dataclass(frozen=True)
class Hint:
    """One actionable shortfall: what was measured, what was expected, what to do."""

    kind: HintKind
    check: str
    metric: str
    observed: Any
    expected: Any
    suggestion: str
    where: str = ""
    priority: Priority | None = None

    def __post_init__(self) -> None:
        # observed, suggestion and where often carry a candidate's exception message: strip
        # terminal control sequences and bound them here, before they reach the store,
        # a prompt or a screen
        for name, limit in _TEXT_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, clean(value, limit))
        if self.priority is None:
            object.__setattr__(self, "priority", self.kind.default_priority)

    @property
    def key(self) -> str:
        """Stable identity across iterations: same kind, check, metric and place."""
        return f"{self.kind.name}:{self.check}:{self.metric}:{self.where}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.name,
            "priority": self.priority.name,
            "check": self.check,
            "metric": self.metric,
            "observed": self.observed,
            "expected": self.expected,
            "suggestion": self.suggestion,
            "where": self.where,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hint:
        return cls(kind=HintKind[d["kind"]], priority=Priority[d["priority"]],
                   check=d["check"], metric=d["metric"], observed=d["observed"],
                   expected=d["expected"], suggestion=d["suggestion"], where=d.get("where", ""))

    def to_text(self) -> str:
        where = f" at {self.where}" if self.where else ""
        return (f"[{self.priority.name} {self.kind.name}] {self.check}{where}: "
                f"{self.metric} observed {_fmt(self.observed)}, expected {_fmt(self.expected)}. "
                f"Suggestion: {self.suggestion}")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class Keep:
    """Something a check found right: the agent must preserve it."""

    check: str
    what: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Keep:
        return cls(check=d["check"], what=d["what"], evidence=d.get("evidence", {}))

    def to_text(self) -> str:
        return f"[KEEP] {self.check}: {self.what}"


def sort_hints(hints: list[Hint]) -> list[Hint]:
    """P1 first; ties keep the ladder's order (stable sort)."""
    return sorted(hints, key=lambda h: h.priority)


def render_hints(hints: list[Hint], keeps: list[Keep] = ()) -> str:
    """Plain text for people and for an LLM prompt: hints P1 first, then the keeps."""
    lines = [h.to_text() for h in sort_hints(list(hints))]
    lines += [k.to_text() for k in keeps]
    return "\n".join(lines) if lines else "(no hints)"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return clean(value, limit=None)


def catalogue_markdown(repairs_by_kind: dict[str, list[str]] | None = None) -> str:
    """The user-facing catalogue of hint kinds; ``repairs_by_kind`` adds the playbook's
    repair names so the page also says which automatic repair answers each kind."""
    repairs_by_kind = repairs_by_kind or {}
    out = [
        "# Hint catalogue",
        "",
        "Generated from `autopilot_lab.hints.HintKind` by `python -m autopilot_lab.hints`;",
        "do not edit by hand. Priorities: P1 blocks running or training, P2 wrong results,",
        "P3 metric or speed short of target, P4 style and minor.",
        "",
        "| kind | usual priority | raised by | meaning | what answers it | playbook repairs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind in HintKind:
        info = kind.info
        playbook = ", ".join(f"`{r}`" for r in repairs_by_kind.get(kind.name, [])) or "-"
        out.append(f"| `{kind.name}` | {info.priority.name} | {info.raised_by} | {info.meaning} "
                   f"| {'; '.join(info.repairs)} | {playbook} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover - exercised by tests through the function
    from autopilot_lab.agents.playbook import repairs_by_kind

    print(catalogue_markdown(repairs_by_kind()), end="")
