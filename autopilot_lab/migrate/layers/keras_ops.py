"""Rules for keras.ops calls recorded in a functional graph (`x + 3.0`, `x != 0`): the
binary arithmetic and comparison operations."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..keras_model import GraphNode, TensorRef
from ..translator import Builder, Unsupported
from .common import merge_inputs, num
from .registry import register


def _scalar(v: Any) -> str | None:
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return num(v)
    return None


@register(
    "ops.Add",
    "ops.Subtract",
    "ops.Multiply",
    "ops.TrueDivide",
    "ops.Divide",
    family="keras.ops",
    torch="+ - * /",
    notes="tensor-tensor or tensor-scalar",
)
def ops_binary(b: Builder, node: GraphNode) -> None:
    sym = {"Add": "+", "Subtract": "-", "Multiply": "*", "TrueDivide": "/", "Divide": "/"}[
        type(node.layer).__name__
    ]
    if len(node.args) != 2 or node.kwargs:
        raise Unsupported("keras.ops call with unexpected arguments")
    terms = []
    tensors = [a for a in node.args if isinstance(a, TensorRef)]
    if len(tensors) == 2:
        vals = merge_inputs(b, node)
        terms = [v.var for v in vals]
        if node.args[0].key == node.args[1].key:
            terms = [vals[0].var, vals[0].var]
        layout, first = vals[0].layout, vals
    else:
        first = b.value(tensors[0])
        layout = first.layout
        for a in node.args:
            if isinstance(a, TensorRef):
                terms.append(first.var)
            else:
                s = _scalar(a)
                if s is None:
                    raise Unsupported(
                        f"keras.ops {type(node.layer).__name__} with a constant array operand"
                    )
                terms.append(s)
    b.map_functional(node.layer)
    b.assign(
        f"{terms[0]} {sym} {terms[1]}",
        ref=node.outputs[0],
        layout=layout,
        reuse=first,
        hint=node.layer.name,
    )


@register(
    "ops.NotEqual",
    "ops.Equal",
    "ops.Greater",
    "ops.GreaterEqual",
    "ops.Less",
    "ops.LessEqual",
    family="keras.ops",
    torch="!= == > >= < <=",
    notes="e.g. the mask that Embedding(mask_zero=True) records",
)
def ops_compare(b: Builder, node: GraphNode) -> None:
    sym = {
        "NotEqual": "!=",
        "Equal": "==",
        "Greater": ">",
        "GreaterEqual": ">=",
        "Less": "<",
        "LessEqual": "<=",
    }[type(node.layer).__name__]
    if len(node.args) != 2 or not isinstance(node.args[0], TensorRef):
        raise Unsupported("comparison with unexpected arguments")
    x = b.value(node.args[0])
    other = node.args[1]
    rhs = b.value(other, x.layout).var if isinstance(other, TensorRef) else _scalar(other)
    if rhs is None:
        raise Unsupported("comparison with a constant array")
    b.map_functional(node.layer)
    b.assign(f"{x.var} {sym} {rhs}", ref=node.outputs[0], layout=x.layout, hint=node.layer.name)
