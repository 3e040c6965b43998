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


UNARY = {"Relu": "torch.relu({x})", "Sigmoid": "torch.sigmoid({x})", "Tanh": "torch.tanh({x})",
         "Exp": "torch.exp({x})", "Log": "torch.log({x})", "Sqrt": "torch.sqrt({x})",
         "Absolute": "torch.abs({x})", "Negative": "-{x}", "Square": "torch.square({x})",
         "Softplus": "F.softplus({x})", "Silu": "F.silu({x})"}


@register(*(f"ops.{k}" for k in UNARY), "ops.Gelu", family="keras.ops",
          torch="torch / F elementwise functions",
          notes="gelu with Keras' default approximate=True (tanh form) or exact")
def ops_unary(b: Builder, node: GraphNode) -> None:
    name = type(node.layer).__name__
    if len(node.args) != 1 or not isinstance(node.args[0], TensorRef):
        raise Unsupported(f"keras.ops {name} with unexpected arguments")
    x = b.value(node.args[0])
    if name == "Gelu":
        approximate = getattr(node.layer, "approximate", True)
        expr = f'F.gelu({x.var}, approximate="tanh")' if approximate else f"F.gelu({x.var})"
    else:
        expr = UNARY[name].format(x=x.var)
    if expr.startswith("F."):
        b.use("F")
    b.map_functional(node.layer)
    b.assign(expr, ref=node.outputs[0], layout=x.layout, reuse=x, hint=node.layer.name)


REDUCTIONS = {"Mean": "{x}.mean({dims})", "Sum": "{x}.sum({dims})",
              "Max": "torch.amax({x}, {dims})", "Min": "torch.amin({x}, {dims})",
              "Any": "torch.any({x}, {dims})", "All": "torch.all({x}, {dims})"}


@register(*(f"ops.{k}" for k in REDUCTIONS), family="keras.ops",
          torch="mean / sum / amax / amin / any / all", notes="axis (any, or all), keepdims")
def ops_reduce(b: Builder, node: GraphNode) -> None:
    op, name = node.layer, type(node.layer).__name__
    if len(node.args) != 1 or not isinstance(node.args[0], TensorRef):
        raise Unsupported(f"keras.ops {name} with unexpected arguments")
    if getattr(op, "initial", None) is not None:
        raise Unsupported(f"keras.ops {name} with an initial value")
    rank = len(node.args[0].shape) + 1
    axis = getattr(op, "axis", None)
    axes = range(rank) if axis is None else (axis if isinstance(axis, (list, tuple))
                                            else [axis])
    dims = tuple(sorted(int(a) % rank for a in axes))
    keep = bool(getattr(op, "keepdims", False))
    x = b.value(node.args[0], "last")  # Keras' own layout, so Keras' axes apply as they are
    args = f"dim={dims}" + (", keepdim=True" if keep else "")
    b.map_functional(op)
    b.assign(REDUCTIONS[name].format(x=x.var, dims=args), ref=node.outputs[0], layout="last",
             hint=op.name)


TORCH_DTYPES = {"float32": "torch.float32", "float64": "torch.float64",
                "float16": "torch.float16", "bfloat16": "torch.bfloat16",
                "int32": "torch.int32", "int64": "torch.int64", "bool": "torch.bool"}


@register("ops.Cast", "ops.ExpandDims", "ops.Squeeze", family="keras.ops",
          torch=".to(dtype) / unsqueeze / squeeze", notes="Keras' axes, in Keras' layout")
def ops_shape_and_type(b: Builder, node: GraphNode) -> None:
    op, name = node.layer, type(node.layer).__name__
    if len(node.args) != 1 or not isinstance(node.args[0], TensorRef):
        raise Unsupported(f"keras.ops {name} with unexpected arguments")
    if name == "Cast":
        dtype = str(getattr(op, "dtype", ""))
        if dtype not in TORCH_DTYPES:
            raise Unsupported(f"keras.ops.cast to {dtype!r}")
        x = b.value(node.args[0])
        expr, layout = f"{x.var}.to({TORCH_DTYPES[dtype]})", x.layout
    else:
        x, layout = b.value(node.args[0], "last"), "last"  # Keras' axes apply as they are
        rank = len(node.args[0].shape) + 1
        axis = getattr(op, "axis", None)
        if name == "ExpandDims":
            if isinstance(axis, (list, tuple)):
                raise Unsupported("keras.ops.expand_dims over several axes")
            expr = f"{x.var}.unsqueeze({int(axis) % (rank + 1)})"
        elif axis is None:
            raise Unsupported("keras.ops.squeeze without an axis (the batch axis could go)")
        else:
            axes = tuple(sorted(int(a) % rank for a in (axis if isinstance(axis, (list, tuple))
                                                        else [axis])))
            expr = f"{x.var}.squeeze({axes[0] if len(axes) == 1 else axes})"
    b.map_functional(op)
    b.assign(expr, ref=node.outputs[0], layout=layout, hint=op.name)
