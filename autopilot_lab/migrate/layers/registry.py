"""The rule registry: `@register` maps Keras class names to rule functions.

The translator asks `rule_for(layer)` for each layer call; a layer with no rule (or one whose
input carries a mask it cannot honour) becomes a stub, and `missing_reason` says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..keras_model import GraphNode
from ..translator import Builder

Rule = Callable[[Builder, GraphNode], None]


@dataclass(frozen=True)
class RuleInfo:
    key: str
    family: str
    torch: str
    notes: str
    fn: Rule


RULES: dict[str, RuleInfo] = {}


def register(*keys: str, family: str, torch: str, notes: str = "") -> Callable[[Rule], Rule]:
    """Register `fn` as the rule for Keras classes `keys` ("ops.X" for keras.ops operations)."""

    def deco(fn: Rule) -> Rule:
        for key in keys:
            RULES[key] = RuleInfo(key, family, torch, notes, fn)
        return fn

    return deco


def _key(layer: Any) -> str | None:
    cls = type(layer)
    module = cls.__module__ or ""
    if not module.startswith("keras"):
        return None
    if module.startswith("keras.src.ops"):
        return f"ops.{cls.__name__}"
    return cls.__name__


def rule_for(layer: Any) -> Rule | None:
    key = _key(layer)
    info = RULES.get(key) if key else None
    return info.fn if info else None


def missing_reason(layer: Any) -> str:
    cls = type(layer)
    name = cls.__name__
    if name == "Lambda":
        fn = getattr(layer, "function", None)
        fname = getattr(fn, "__name__", "?")
        return (
            f"Lambda layer runs arbitrary Python ({fname}); write its torch equivalent in the "
            f"stub's forward"
        )
    if not (cls.__module__ or "").startswith("keras"):
        bases = [b.__name__ for b in cls.__mro__[1:] if (b.__module__ or "").startswith("keras")]
        base = bases[0] if bases else "Layer"
        if base in RULES:
            return (
                f"custom class {name} (module {cls.__module__}) subclasses keras {base}; its "
                f"call() may differ from {base}'s, so no rule is applied"
            )
        return (
            f"custom layer class {name} (module {cls.__module__}): its call() is user code with "
            f"no translation rule"
        )
    what = "operation" if (cls.__module__ or "").startswith("keras.src.ops") else "layer"
    return f"no translation rule for the Keras {what} {name} yet"


_MASK_SENSITIVE = {
    "LSTM",
    "GRU",
    "SimpleRNN",
    "Bidirectional",
    "MultiHeadAttention",
    "Attention",
    "AdditiveAttention",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "TimeDistributed",
    "RNN",
}


def mask_sensitive(layer: Any) -> bool:
    """Layers whose values depend on a Keras mask carried by their input."""
    return type(layer).__name__ in _MASK_SENSITIVE
