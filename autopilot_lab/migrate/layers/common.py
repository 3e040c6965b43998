"""Helpers shared by the rule families: config and literal formatting, initializers,
activations, and the emit patterns several rules repeat (a passthrough, a one-module call,
merge inputs in one layout).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import weights as W
from ..keras_model import GraphNode, TensorRef
from ..translator import Builder, Unsupported, Value, camel, snake


def cfg(layer: Any) -> dict:
    return layer.get_config()


def num(v: Any) -> str:
    """A float literal: the shortest text that round-trips the value as float32."""
    v = float(v)
    if math.isinf(v):
        return 'float("inf")' if v > 0 else 'float("-inf")'
    s32 = str(np.float32(v))
    s = (
        s32
        if float(np.float32(s32)) == float(np.float32(v)) and len(s32) < len(repr(v))
        else repr(v)
    )
    if "." not in s and "e" not in s and "inf" not in s and "nan" not in s:
        s += ".0"
    return s


def ints(t: Any) -> str:
    """`3` for (3, 3), `(1, 2)` for (1, 2)."""
    t = tuple(int(i) for i in (t if isinstance(t, (list, tuple)) else (t,)))
    if len(set(t)) == 1:
        return str(t[0])
    return str(t)


def tup(t: Any, n: int) -> tuple:
    if isinstance(t, (list, tuple)):
        return tuple(t)
    return (t,) * n


def _init_cfg(c: Any) -> tuple[str, dict]:
    if c is None:
        return "None", {}
    if isinstance(c, str):
        return camel(c), {}
    if isinstance(c, dict):
        return c.get("class_name", "?"), c.get("config", {}) or {}
    return type(c).__name__, getattr(c, "get_config", dict)()


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _flatten(item)]
    return [value]


def init_line(init: Any, target: str, keras_shape: tuple) -> str | None:
    """An nn.init line reproducing a Keras initializer on a weight of Keras shape `keras_shape`."""
    name, c = _init_cfg(init)
    shape = tuple(keras_shape)
    where = f"  # {snake(name)} on Keras' {shape} kernel" if len(shape) > 1 else ""
    scales = {
        "GlorotUniform": (1.0, "fan_avg", "uniform"),
        "GlorotNormal": (1.0, "fan_avg", "truncated_normal"),
        "HeNormal": (2.0, "fan_in", "truncated_normal"),
        "HeUniform": (2.0, "fan_in", "uniform"),
        "LecunNormal": (1.0, "fan_in", "truncated_normal"),
        "LecunUniform": (1.0, "fan_in", "uniform"),
    }
    if name in scales or name == "VarianceScaling":
        scale, mode, dist = scales.get(name) or (
            c.get("scale", 1.0),
            c.get("mode", "fan_in"),
            c.get("distribution", "truncated_normal"),
        )
        fan_in, fan_out = W.keras_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out}.get(mode, (fan_in + fan_out) / 2)
        scale = scale / max(1.0, n)
        if dist == "uniform":
            lim = math.sqrt(3.0 * scale)
            return f"nn.init.uniform_({target}, -{lim:.6g}, {lim:.6g}){where}"
        if dist == "untruncated_normal":
            return f"nn.init.normal_({target}, std={math.sqrt(scale):.6g}){where}"
        std = math.sqrt(scale) / 0.87962566103423978
        return f"nn.init.trunc_normal_({target}, std={std:.6g}, a={-2 * std:.6g}, b={2 * std:.6g})"
    if name == "Zeros":
        return f"nn.init.zeros_({target})"
    if name == "Ones":
        return f"nn.init.ones_({target})"
    if name == "Constant":
        value = c.get("value", 0.0)
        if isinstance(value, (list, tuple)):  # one value per element (a bias, say)
            flat = [v for v in _flatten(value)]
            if len(flat) == 1:
                return f"nn.init.constant_({target}, {num(flat[0])})"
            if len(shape) <= 1 and len(flat) == math.prod(shape):
                values = ", ".join(num(v) for v in flat)
                return f"with torch.no_grad(): {target}.copy_(torch.tensor([{values}]))"
            return None  # a kernel's per-element constants: Keras' layout, not torch's
        return f"nn.init.constant_({target}, {num(value)})"
    if name == "RandomUniform":
        lo, hi = num(c.get("minval", -0.05)), num(c.get("maxval", 0.05))
        return f"nn.init.uniform_({target}, {lo}, {hi})"
    if name == "RandomNormal":
        return f"nn.init.normal_({target}, {num(c.get('mean', 0.0))}, {num(c.get('stddev', 0.05))})"
    if name == "TruncatedNormal":
        m, s = float(c.get("mean", 0.0)), float(c.get("stddev", 0.05))
        lo, hi = num(m - 2 * s), num(m + 2 * s)
        return f"nn.init.trunc_normal_({target}, {num(m)}, {num(s)}, {lo}, {hi})"
    if name == "Orthogonal":
        return f"nn.init.orthogonal_({target}, gain={num(c.get('gain', 1.0))})"
    return None


def init_weight(
    b: Builder,
    layer: Any,
    init: Any,
    target: str,
    keras_shape: tuple,
    torch_shape: tuple,
    *,
    default: str = "GlorotUniform",
) -> None:
    """Emit an explicit init line unless torch's default loop already matches Keras'."""
    name, _ = _init_cfg(init)
    if name == default == "GlorotUniform":
        if sum(W.keras_fans(keras_shape)) == sum(W.torch_fans(torch_shape)):
            return
    elif name == default:
        return
    line = init_line(init, target, keras_shape)
    if line is None:
        b.note(
            f"{layer.name}: initializer {name} not reproduced; torch's init is used for {target}"
        )
    else:
        b.init_line(line)


def arr(v: Any) -> np.ndarray:
    return W.as_array(v)


# name -> (functional template, module constructor or None)
ACTIVATIONS: dict[str, tuple[str, str | None]] = {
    "relu": ("F.relu({x})", "nn.ReLU()"),
    "relu6": ("F.relu6({x})", "nn.ReLU6()"),
    "leaky_relu": ("F.leaky_relu({x}, 0.2)", "nn.LeakyReLU(0.2)"),
    "elu": ("F.elu({x})", "nn.ELU()"),
    "selu": ("F.selu({x})", "nn.SELU()"),
    "celu": ("F.celu({x})", "nn.CELU()"),
    "gelu": ("F.gelu({x})", "nn.GELU()"),
    "sigmoid": ("torch.sigmoid({x})", "nn.Sigmoid()"),
    "hard_sigmoid": ("F.hardsigmoid({x})", "nn.Hardsigmoid()"),
    "hard_silu": ("F.hardswish({x})", "nn.Hardswish()"),
    "hard_swish": ("F.hardswish({x})", "nn.Hardswish()"),
    "tanh": ("torch.tanh({x})", "nn.Tanh()"),
    "softmax": ("F.softmax({x}, dim={dim})", "nn.Softmax(dim={dim})"),
    "log_softmax": ("F.log_softmax({x}, dim={dim})", "nn.LogSoftmax(dim={dim})"),
    "softplus": ("F.softplus({x})", "nn.Softplus()"),
    "softsign": ("F.softsign({x})", "nn.Softsign()"),
    "silu": ("F.silu({x})", "nn.SiLU()"),
    "swish": ("F.silu({x})", "nn.SiLU()"),
    "mish": ("F.mish({x})", "nn.Mish()"),
    "log_sigmoid": ("F.logsigmoid({x})", "nn.LogSigmoid()"),
    "tanh_shrink": ("F.tanhshrink({x})", "nn.Tanhshrink()"),
    "hard_tanh": ("F.hardtanh({x})", "nn.Hardtanh()"),
    "exponential": ("torch.exp({x})", None),
}


def _activation_name(act: Any) -> str:
    if act is None:
        return "linear"
    if isinstance(act, str):
        return act
    if isinstance(act, dict):
        inner = act.get("config")
        if isinstance(inner, str):
            return inner
        return str(act.get("class_name", "?"))
    return getattr(act, "__name__", str(act))


def activation_expr(b: Builder, act: Any, val: Value, *, module: bool = False) -> str | None:
    """A torch expression for a Keras activation applied to `val` (None for linear)."""
    name = _activation_name(act)
    if name == "linear":
        return None
    if name == "gelu_approximate":
        name = "gelu"
    if name not in ACTIVATIONS:
        raise Unsupported(f"activation {name!r} has no torch equivalent in the translator")
    fn, mod = ACTIVATIONS[name]
    dim = val.torch_dim(-1)
    if module and mod is not None:
        return mod.format(dim=dim)
    if fn.startswith("F."):
        b.use("F")
    return fn.format(x=val.var, dim=dim)


def apply_activation(b: Builder, act: Any, val: Value, ref: TensorRef) -> Value:
    """Emit `y = act(y)` on a freshly computed output."""
    expr = activation_expr(b, act, val)
    if expr is None:
        return val
    b.emit(f"{val.var} = {expr}")
    return val


def passthrough(b: Builder, node: GraphNode, layout: str | None = None) -> Value:
    x = b.input(node, 0, layout)
    ref = node.inputs[0]
    b.map_functional(node.layer)
    if b._reusable(ref, x):
        return b.bind(node.outputs[0], x.var, x.layout)
    return b.assign(x.var, ref=node.outputs[0], layout=x.layout, hint=node.layer.name)


def _module_call(
    b: Builder, node: GraphNode, ctor: str, x: Value, layout: str | None = None
) -> Value:
    attr = b.add_module(node.layer, ctor)
    return b.assign(
        f"self.{attr}({x.var})",
        ref=node.outputs[0],
        layout=layout or x.layout,
        reuse=x,
        hint=node.layer.name,
    )


def merge_inputs(b: Builder, node: GraphNode) -> list[Value]:
    refs = node.inputs
    ranks = {len(r.shape) for r in refs}
    layout = "last"
    if len(ranks) == 1 and ranks.pop() > 1:
        if all("first" in b._records[r.key].vars for r in refs):
            layout = "first"
    return [b.value(r, layout) for r in refs]
