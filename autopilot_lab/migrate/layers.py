"""One translation rule per Keras layer class (a registry: adding a layer is one function).

A rule gets the `Builder` and one `GraphNode` (a call of the layer), declares submodules and
weights, and emits forward lines. It raises `Unsupported(reason)` when this call cannot be
translated exactly; the translator then emits a stub module instead of a wrong one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import weights as W
from .keras_model import GraphNode, TensorRef
from .translator import Builder, Unsupported, Value, camel, config_text, docstring_block, snake

__all__ = [
    "RULES",
    "emit_stub",
    "mask_sensitive",
    "missing_reason",
    "register",
    "rule_for",
    "supported_layers_markdown",
]

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


# ----- small helpers -----------------------------------------------------------------------------
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
        return f"nn.init.constant_({target}, {num(c.get('value', 0.0))})"
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


# ----- activations -------------------------------------------------------------------------------
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


# ----- core --------------------------------------------------------------------------------------
@register("InputLayer", family="core", torch="(forward argument)")
def input_layer(b: Builder, node: GraphNode) -> None:
    passthrough(b, node)


def passthrough(b: Builder, node: GraphNode, layout: str | None = None) -> Value:
    x = b.input(node, 0, layout)
    ref = node.inputs[0]
    b.map_functional(node.layer)
    if b._reusable(ref, x):
        return b.bind(node.outputs[0], x.var, x.layout)
    return b.assign(x.var, ref=node.outputs[0], layout=x.layout, hint=node.layer.name)


@register("Identity", family="core", torch="(no-op)")
def identity_layer(b: Builder, node: GraphNode) -> None:
    passthrough(b, node)


@register("Dense", family="core", torch="nn.Linear", notes="applies to the last axis at any rank")
def dense(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    if c.get("lora_rank") or getattr(layer, "quantization_mode", None):
        raise Unsupported("LoRA / quantized Dense kernels are not translated")
    x = b.input(node, 0, "last")
    n_in, n_out = int(x.shape[-1]), int(c["units"])
    bias = c.get("use_bias", True)
    attr = b.add_module(layer, f"nn.Linear({n_in}, {n_out}{'' if bias else ', bias=False'})")
    kernel, how = W.dense_kernel(arr(layer.kernel))
    b.weight(layer, layer.kernel, f"{attr}.weight", kernel, how)
    b.default_init("linear", "nn.Linear")
    init_weight(
        b,
        layer,
        c.get("kernel_initializer"),
        f"self.{attr}.weight",
        tuple(layer.kernel.shape),
        kernel.shape,
    )
    if bias:
        b.weight(layer, layer.bias, f"{attr}.bias", arr(layer.bias), "as is")
        init_weight(
            b,
            layer,
            c.get("bias_initializer"),
            f"self.{attr}.bias",
            tuple(layer.bias.shape),
            tuple(layer.bias.shape),
            default="Zeros",
        )
    y = b.assign(f"self.{attr}({x.var})", ref=node.outputs[0], reuse=x, hint=layer.name)
    apply_activation(b, c.get("activation"), y, node.outputs[0])


@register(
    "Activation",
    family="activation",
    torch="nn.ReLU, nn.GELU, ... (one module)",
    notes="relu relu6 leaky_relu elu selu celu gelu sigmoid hard_sigmoid (Keras 3: "
    "relu6(x+3)/6) hard_silu/hard_swish tanh softmax log_softmax softplus softsign "
    "silu/swish mish log_sigmoid tanh_shrink hard_tanh exponential linear",
)
def activation_layer(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    x = b.input(node)
    name = _activation_name(c.get("activation"))
    if name == "linear":
        passthrough(b, node)
        return
    mod = activation_expr(b, name, x, module=True)
    if name in ACTIVATIONS and ACTIVATIONS[name][1] is not None:
        attr = b.add_module(layer, mod)
        b.assign(
            f"self.{attr}({x.var})", ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name
        )
    else:
        b.map_functional(layer)
        b.assign(mod, ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name)


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


@register("ReLU", family="activation", torch="nn.ReLU / nn.ReLU6 / nn.LeakyReLU / nn.Hardtanh")
def relu_layer(b: Builder, node: GraphNode) -> None:
    c = cfg(node.layer)
    x = b.input(node)
    mv, slope, th = (
        c.get("max_value"),
        float(c.get("negative_slope") or 0),
        float(c.get("threshold") or 0),
    )
    if th != 0:
        raise Unsupported("ReLU with a non-zero threshold is not translated")
    if mv is None and slope == 0:
        ctor = "nn.ReLU()"
    elif mv is not None and slope == 0:
        ctor = "nn.ReLU6()" if float(mv) == 6.0 else f"nn.Hardtanh(0.0, {num(mv)})"
    elif mv is None:
        ctor = f"nn.LeakyReLU({num(slope)})"
    else:
        raise Unsupported("ReLU with both max_value and negative_slope is not translated")
    _module_call(b, node, ctor, x)


@register("LeakyReLU", family="activation", torch="nn.LeakyReLU")
def leaky_relu_layer(b: Builder, node: GraphNode) -> None:
    c = cfg(node.layer)
    _module_call(b, node, f"nn.LeakyReLU({num(c.get('negative_slope', 0.3))})", b.input(node))


@register("ELU", family="activation", torch="nn.ELU")
def elu_layer(b: Builder, node: GraphNode) -> None:
    c = cfg(node.layer)
    alpha = float(c.get("alpha", 1.0))
    _module_call(b, node, "nn.ELU()" if alpha == 1.0 else f"nn.ELU({num(alpha)})", b.input(node))


@register("Softmax", family="activation", torch="nn.Softmax(dim)")
def softmax_layer(b: Builder, node: GraphNode) -> None:
    c = cfg(node.layer)
    if node.kwargs.get("mask") is not None or len(node.inputs) > 1:
        raise Unsupported("Softmax called with a mask is not translated")
    axis = c.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise Unsupported("Softmax over several axes is not translated")
        axis = axis[0]
    x = b.input(node)
    _module_call(b, node, f"nn.Softmax(dim={x.torch_dim(axis)})", x)


@register(
    "PReLU",
    family="activation",
    torch="nn.PReLU",
    notes="per-channel (shared_axes = all spatial axes) or a single slope",
)
def prelu_layer(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    alpha = arr(layer.alpha)
    rank = len(node.inputs[0].shape) + 1
    if alpha.size == 1:
        x = b.input(node)
        ctor = "nn.PReLU()"
    elif all(d == 1 for d in alpha.shape[:-1]):
        x = b.input(node, 0, "first" if rank > 2 else "last")
        ctor = f"nn.PReLU({alpha.shape[-1]})"
    else:
        raise Unsupported(
            f"PReLU with a slope per position (alpha shape {alpha.shape}) has no nn.PReLU form; "
            f"set shared_axes to the spatial axes"
        )
    attr = b.add_module(layer, ctor)
    b.weight(layer, layer.alpha, f"{attr}.weight", alpha.reshape(-1), "reshape(-1)")
    init_weight(
        b,
        layer,
        c.get("alpha_initializer"),
        f"self.{attr}.weight",
        alpha.shape,
        alpha.shape,
        default="__always__",
    )
    b.assign(
        f"self.{attr}({x.var})", ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name
    )


# ----- convolutions ------------------------------------------------------------------------------
PAD_SAME = '''
def pad_same(x, kernel_size, stride, dilation=1, value=0.0):
    """Pad the spatial dims like TensorFlow's 'same': any odd pixel goes after (bottom/right)."""
    dims = x.dim() - 2
    pads = []
    for i in reversed(range(dims)):
        size, k = x.shape[2 + i], kernel_size[i]
        s = stride[i] if isinstance(stride, tuple) else stride
        d = dilation[i] if isinstance(dilation, tuple) else dilation
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)
'''


def same_pads(sizes: tuple, k: tuple, s: tuple, d: tuple) -> list[tuple[int, int]] | None:
    """TensorFlow 'same' padding (before, after) per spatial dim; None if it depends on size."""
    pads = []
    for n, kk, ss, dd in zip(sizes, k, s, d):
        eff = (kk - 1) * dd + 1
        if n is None:
            if ss != 1:
                return None
            total = eff - 1
        else:
            total = max((-(-n // ss) - 1) * ss + eff - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _torch_pad(pads: list[tuple[int, int]]) -> str:
    flat = [p for pair in reversed(pads) for p in pair]
    return "(" + ", ".join(str(p) for p in flat) + ")"


def spatial_padding(
    b: Builder,
    x: Value,
    padding: str,
    sizes: tuple,
    k: tuple,
    s: tuple,
    d: tuple,
    *,
    value: str | None = None,
) -> tuple[Value, str | None]:
    """Resolve Keras padding to a torch `padding=` argument, padding `x` explicitly if needed."""
    if padding == "valid":
        return x, None
    if padding == "causal":
        b.use("F")
        left = (k[0] - 1) * d[0]
        y = b.derive(
            x,
            f"F.pad({x.var}, ({left}, 0))",
            hint=f"{x.var}_padded",
            comment="'causal': pad the past only",
        )
        return y, None
    if padding != "same":
        raise Unsupported(f"padding {padding!r} is not translated")
    pads = same_pads(sizes, k, s, d)
    if pads is None:
        b.use("F")
        b.use("math")
        b.helper("pad_same", PAD_SAME)
        extra = f", value={value}" if value else ""
        y = b.derive(
            x,
            f"pad_same({x.var}, {tuple(k)}, {tuple(s)}, {tuple(d)}{extra})",
            hint=f"{x.var}_padded",
            comment="Keras 'same'",
        )
        return y, None
    if all(p0 == p1 for p0, p1 in pads):
        if all(p0 == 0 for p0, _ in pads):
            return x, None
        return x, ints(tuple(p0 for p0, _ in pads))
    b.use("F")
    extra = f", value={value}" if value else ""
    y = b.derive(
        x,
        f"F.pad({x.var}, {_torch_pad(pads)}{extra})",
        hint=f"{x.var}_padded",
        comment="Keras 'same' pads the odd pixel after",
    )
    return y, None


def _conv_common(node: GraphNode, n: int) -> tuple[dict, str, tuple, tuple, tuple]:
    c = cfg(node.layer)
    return (
        c,
        c.get("data_format", "channels_last"),
        tup(c["kernel_size"], n),
        tup(c.get("strides", 1), n),
        tup(c.get("dilation_rate", 1), n),
    )


def _conv_input(b: Builder, node: GraphNode, fmt: str) -> tuple[Value, int, tuple]:
    x = b.input(node, 0, "last" if fmt == "channels_first" else "first")
    shape = x.shape
    if fmt == "channels_first":
        return x, int(shape[0]), tuple(shape[1:])
    return x, int(shape[-1]), tuple(shape[:-1])


def _conv_kwargs(
    k: tuple, s: tuple, d: tuple, pad: str | None, groups: int = 1, bias: bool = True
) -> str:
    parts = [f"kernel_size={ints(k)}"]
    if any(v != 1 for v in s):
        parts.append(f"stride={ints(s)}")
    if pad:
        parts.append(f"padding={pad}")
    if any(v != 1 for v in d):
        parts.append(f"dilation={ints(d)}")
    if groups != 1:
        parts.append(f"groups={groups}")
    if not bias:
        parts.append("bias=False")
    return ", ".join(parts)


@register(
    "Conv1D",
    "Conv2D",
    "Conv3D",
    family="convolution",
    torch="nn.Conv1d/2d/3d",
    notes="strides, dilation, groups; 'valid', 'same' (asymmetric 'same' padded "
    "explicitly with F.pad), 'causal'; channels_last or channels_first",
)
def conv(b: Builder, node: GraphNode) -> None:
    layer = node.layer
    n = len(layer.kernel.shape) - 2
    c, fmt, k, s, d = _conv_common(node, n)
    x, cin, sizes = _conv_input(b, node, fmt)
    groups = int(c.get("groups", 1))
    cout = int(c["filters"])
    bias = c.get("use_bias", True)
    x, pad = spatial_padding(b, x, c["padding"], sizes, k, s, d)
    attr = b.add_module(
        layer, f"nn.Conv{n}d({cin}, {cout}, {_conv_kwargs(k, s, d, pad, groups, bias)})"
    )
    kernel, how = W.conv_kernel(arr(layer.kernel))
    b.weight(layer, layer.kernel, f"{attr}.weight", kernel, how)
    b.default_init("linear", f"nn.Conv{n}d")
    init_weight(
        b,
        layer,
        c.get("kernel_initializer"),
        f"self.{attr}.weight",
        tuple(layer.kernel.shape),
        kernel.shape,
    )
    if bias:
        b.weight(layer, layer.bias, f"{attr}.bias", arr(layer.bias), "as is")
        init_weight(
            b,
            layer,
            c.get("bias_initializer"),
            f"self.{attr}.bias",
            tuple(layer.bias.shape),
            tuple(layer.bias.shape),
            default="Zeros",
        )
    y = b.assign(
        f"self.{attr}({x.var})", ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name
    )
    apply_activation(b, c.get("activation"), y, node.outputs[0])


@register(
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    family="convolution",
    torch="nn.Conv1d/2d(groups=in_channels)",
    notes="depth_multiplier; kernel (*k, in, mult) -> (in*mult, 1, *k)",
)
def depthwise_conv(b: Builder, node: GraphNode) -> None:
    layer = node.layer
    n = len(layer.kernel.shape) - 2
    c, fmt, k, s, d = _conv_common(node, n)
    x, cin, sizes = _conv_input(b, node, fmt)
    mult = int(c.get("depth_multiplier", 1))
    bias = c.get("use_bias", True)
    x, pad = spatial_padding(b, x, c["padding"], sizes, k, s, d)
    attr = b.add_module(
        layer, f"nn.Conv{n}d({cin}, {cin * mult}, {_conv_kwargs(k, s, d, pad, cin, bias)})"
    )
    kernel, how = W.depthwise_kernel(arr(layer.kernel))
    b.weight(layer, layer.kernel, f"{attr}.weight", kernel, how)
    b.default_init("linear", f"nn.Conv{n}d")
    init_weight(
        b,
        layer,
        c.get("depthwise_initializer"),
        f"self.{attr}.weight",
        tuple(layer.kernel.shape),
        kernel.shape,
    )
    if bias:
        b.weight(layer, layer.bias, f"{attr}.bias", arr(layer.bias), "as is")
        init_weight(
            b,
            layer,
            c.get("bias_initializer"),
            f"self.{attr}.bias",
            tuple(layer.bias.shape),
            tuple(layer.bias.shape),
            default="Zeros",
        )
    y = b.assign(
        f"self.{attr}({x.var})", ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name
    )
    apply_activation(b, c.get("activation"), y, node.outputs[0])


SEPARABLE = '''
class SeparableConv{n}d(nn.Module):
    """Keras SeparableConv{n}D: a depthwise convolution, then a pointwise (1x1) one."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 depth_multiplier=1, bias=True):
        super().__init__()
        mid = in_channels * depth_multiplier
        self.depthwise = nn.Conv{n}d(in_channels, mid, kernel_size, stride, padding, dilation,
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv{n}d(mid, out_channels, 1, bias=bias)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))
'''


@register(
    "SeparableConv1D",
    "SeparableConv2D",
    family="convolution",
    torch="SeparableConv1d/2d (depthwise + pointwise nn.Conv)",
)
def separable_conv(b: Builder, node: GraphNode) -> None:
    layer = node.layer
    n = len(layer.depthwise_kernel.shape) - 2
    c, fmt, k, s, d = _conv_common(node, n)
    x, cin, sizes = _conv_input(b, node, fmt)
    mult = int(c.get("depth_multiplier", 1))
    cout = int(c["filters"])
    bias = c.get("use_bias", True)
    x, pad = spatial_padding(b, x, c["padding"], sizes, k, s, d)
    b.helper(f"SeparableConv{n}d", SEPARABLE.replace("{n}", str(n)))
    args = [str(cin), str(cout), ints(k)]
    if any(v != 1 for v in s):
        args.append(f"stride={ints(s)}")
    if pad:
        args.append(f"padding={pad}")
    if any(v != 1 for v in d):
        args.append(f"dilation={ints(d)}")
    if mult != 1:
        args.append(f"depth_multiplier={mult}")
    if not bias:
        args.append("bias=False")
    attr = b.add_module(layer, f"SeparableConv{n}d({', '.join(args)})")
    dk, how = W.depthwise_kernel(arr(layer.depthwise_kernel))
    pk, how2 = W.conv_kernel(arr(layer.pointwise_kernel))
    b.weight(layer, layer.depthwise_kernel, f"{attr}.depthwise.weight", dk, how)
    b.weight(layer, layer.pointwise_kernel, f"{attr}.pointwise.weight", pk, how2)
    b.default_init("linear", f"nn.Conv{n}d")
    init_weight(
        b,
        layer,
        c.get("depthwise_initializer"),
        f"self.{attr}.depthwise.weight",
        tuple(layer.depthwise_kernel.shape),
        dk.shape,
    )
    init_weight(
        b,
        layer,
        c.get("pointwise_initializer"),
        f"self.{attr}.pointwise.weight",
        tuple(layer.pointwise_kernel.shape),
        pk.shape,
    )
    if bias:
        b.weight(layer, layer.bias, f"{attr}.pointwise.bias", arr(layer.bias), "as is")
    y = b.assign(
        f"self.{attr}({x.var})", ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name
    )
    apply_activation(b, c.get("activation"), y, node.outputs[0])


@register(
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    family="convolution",
    torch="nn.ConvTranspose1d/2d/3d",
    notes="'valid'/'same' via padding + output_padding, checked against Keras' shape rule",
)
def conv_transpose(b: Builder, node: GraphNode) -> None:
    layer = node.layer
    n = len(layer.kernel.shape) - 2
    c, fmt, k, s, d = _conv_common(node, n)
    x, cin, sizes = _conv_input(b, node, fmt)
    cout = int(c["filters"])
    bias = c.get("use_bias", True)
    pads, out_pads, crops = [], [], []
    for i in range(n):
        eff = (k[i] - 1) * d[i] + 1
        excess = set()  # how much longer torch's full output is than Keras' (per input size)
        for size in (7, 8):
            shape = (
                [None] + [size] * n + [cin] if fmt != "channels_first" else [None, cin] + [size] * n
            )
            want = layer.compute_output_shape(tuple(shape))
            want = want[1 + i] if fmt != "channels_first" else want[2 + i]
            excess.add((size - 1) * s[i] + eff - int(want))
        if len(excess) != 1:
            raise Unsupported("transposed convolution output size rule not expressible in torch")
        t = excess.pop()
        if t < 0 and -t >= max(s[i], d[i]):
            raise Unsupported(f"needs output_padding={-t} on dim {i}, which torch does not allow")
        # TensorFlow crops t // 2 before and the rest after; torch's padding crops both sides
        pads.append(max(t, 0) // 2)
        out_pads.append(max(-t, 0))
        crops.append(max(t, 0) % 2)
    kw = _conv_kwargs(k, s, d, ints(tuple(pads)) if any(pads) else None, 1, bias)
    if any(out_pads):
        kw += f", output_padding={ints(tuple(out_pads))}"
    attr = b.add_module(layer, f"nn.ConvTranspose{n}d({cin}, {cout}, {kw})")
    kernel, how = W.conv_transpose_kernel(arr(layer.kernel))
    b.weight(layer, layer.kernel, f"{attr}.weight", kernel, how)
    b.default_init("linear", f"nn.ConvTranspose{n}d")
    init_weight(
        b,
        layer,
        c.get("kernel_initializer"),
        f"self.{attr}.weight",
        tuple(layer.kernel.shape),
        kernel.shape,
    )
    if bias:
        b.weight(layer, layer.bias, f"{attr}.bias", arr(layer.bias), "as is")
    y = b.assign(
        f"self.{attr}({x.var})", ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name
    )
    if any(crops):
        index = ", ".join(":-1" if cr else ":" for cr in crops)
        b.emit(f"{y.var} = {y.var}[:, :, {index}]  # Keras 'same' crops the odd pixel at the end")
    apply_activation(b, c.get("activation"), y, node.outputs[0])


# ----- pooling -----------------------------------------------------------------------------------
@register(
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    family="pooling",
    torch="nn.MaxPoolNd / nn.AvgPoolNd",
    notes="'same' average pooling excludes the padding like Keras (count_include_pad="
    "False, or an explicit divisor when the padding is asymmetric)",
)
def pooling(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    name = type(layer).__name__
    n = int(name[-2])
    is_max = name.startswith("Max")
    k = tup(c["pool_size"], n)
    s = tup(c.get("strides") or c["pool_size"], n)
    fmt = c.get("data_format", "channels_last")
    x, _, sizes = _conv_input(b, node, fmt)
    kind = "MaxPool" if is_max else "AvgPool"
    pad = None
    explicit = None
    if c["padding"] == "same":
        pads = same_pads(sizes, k, s, (1,) * n)
        if pads is None:
            raise Unsupported("'same' pooling with strides on an unknown input size")
        if all(p0 == p1 for p0, p1 in pads):
            pad = ints(tuple(p0 for p0, _ in pads)) if any(p0 for p0, _ in pads) else None
        else:
            explicit = _torch_pad(pads)
    args = [f"kernel_size={ints(k)}"]
    if s != k:
        args.append(f"stride={ints(s)}")
    if pad:
        args.append(f"padding={pad}")
        if not is_max:
            args.append("count_include_pad=False")
    attr = b.add_module(layer, f"nn.{kind}{n}d({', '.join(args)})")
    if explicit is None:
        b.assign(
            f"self.{attr}({x.var})", ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name
        )
        return
    b.use("F")
    if is_max:
        x = b.derive(
            x,
            f'F.pad({x.var}, {explicit}, value=float("-inf"))',
            hint=f"{x.var}_padded",
            comment="Keras 'same' pads the odd pixel after",
        )
        b.assign(
            f"self.{attr}({x.var})", ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name
        )
        return
    ones = b.fresh_var("window_counts")
    b.emit("# Keras 'same' average pooling pads the odd pixel after and averages real values only")
    b.emit(f"{ones} = self.{attr}(F.pad(torch.ones_like({x.var}[:, :1]), {explicit}))")
    b.assign(
        f"self.{attr}(F.pad({x.var}, {explicit})) / {ones}",
        ref=node.outputs[0],
        layout=x.layout,
        reuse=x,
        hint=layer.name,
    )


@register(
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    family="pooling",
    torch="x.mean(dims) / x.amax(dims)",
    notes="keepdims supported",
)
def global_pooling(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    n = int(type(layer).__name__[-2])
    x = b.input(node)
    fmt = c.get("data_format", "channels_last")
    if fmt == "channels_first":
        x = b.input(node, 0, "last")
        dims = tuple(range(2, 2 + n))
    elif x.layout == "first":
        dims = tuple(range(2, 2 + n))
    else:
        dims = tuple(range(1, 1 + n))
    op = "mean" if "Average" in type(layer).__name__ else "amax"
    keep = bool(c.get("keepdims", False))
    dim = str(dims[0]) if n == 1 else str(dims)
    b.map_functional(layer)
    expr = f"{x.var}.{op}(dim={dim}{', keepdim=True' if keep else ''})"
    b.assign(
        expr, ref=node.outputs[0], layout=x.layout if keep else "last", reuse=x, hint=layer.name
    )


# ----- normalization -----------------------------------------------------------------------------
KERAS_BATCH_NORM = '''
class KerasBatchNorm{n}d(nn.BatchNorm{n}d):
    """nn.BatchNorm{n}d training as Keras' BatchNormalization does: the moving variance
    follows the biased batch variance (torch's the unbiased one, n/(n-1) larger), and a batch
    of one row normalizes to beta instead of raising. Inference is nn.BatchNorm{n}d's."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var, self.momentum)
            self.num_batches_tracked += 1
        shape = [1, -1] + [1] * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps) * self.weight
        return (x - mean.view(shape)) * scale.view(shape) + self.bias.view(shape)
'''


@register(
    "BatchNormalization",
    family="normalization",
    torch="KerasBatchNorm1d/2d/3d (nn.BatchNorm subclasses)",
    notes="eps = Keras epsilon, momentum = 1 - Keras momentum; moving stats are buffers, the "
    "moving variance updated with the biased batch variance as in Keras",
)
def batch_norm(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    if c.get("renorm") or c.get("synchronized"):
        raise Unsupported("BatchNormalization with renorm/synchronized is not translated")
    axis = c.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise Unsupported("BatchNormalization over several axes is not translated")
        axis = axis[0]
    rank = len(node.inputs[0].shape) + 1
    axis %= rank
    if rank == 2:
        x, dims = b.input(node, 0, "last"), 1
    elif axis == rank - 1:
        x, dims = b.input(node, 0, "first"), rank - 2
    elif axis == 1:
        x, dims = b.input(node, 0, "last"), rank - 2
    else:
        raise Unsupported(f"BatchNormalization on axis {axis} of a rank-{rank} tensor")
    if dims > 3:
        raise Unsupported("BatchNormalization on more than 3 spatial dims")
    ch = int(node.inputs[0].shape[axis - 1])
    eps, mom = float(c.get("epsilon", 1e-3)), float(c.get("momentum", 0.99))
    b.helper(f"KerasBatchNorm{dims}d", KERAS_BATCH_NORM.replace("{n}", str(dims)))
    attr = b.add_module(
        layer,
        f"KerasBatchNorm{dims}d({ch}, eps={num(eps)}, momentum={num(round(1 - mom, 8))})",
    )
    if c.get("scale", True):
        b.weight(layer, layer.gamma, f"{attr}.weight", arr(layer.gamma), "as is (gamma)")
    else:
        b.extra_tensor(f"{attr}.weight", np.ones(ch), "Keras scale=False: gamma fixed at 1")
        b.init_extra.append(f"self.{attr}.weight.requires_grad_(False)  # Keras scale=False")
    if c.get("center", True):
        b.weight(layer, layer.beta, f"{attr}.bias", arr(layer.beta), "as is (beta)")
    else:
        b.extra_tensor(f"{attr}.bias", np.zeros(ch), "Keras center=False: beta fixed at 0")
        b.init_extra.append(f"self.{attr}.bias.requires_grad_(False)  # Keras center=False")
    b.weight(
        layer,
        layer.moving_mean,
        f"{attr}.running_mean",
        arr(layer.moving_mean),
        "as is (moving_mean)",
        buffer=True,
    )
    b.weight(
        layer,
        layer.moving_variance,
        f"{attr}.running_var",
        arr(layer.moving_variance),
        "as is (moving_variance)",
        buffer=True,
    )
    b.extra_tensor(f"{attr}.num_batches_tracked", np.zeros(()), "torch's batch counter")
    b.assign(
        f"self.{attr}({x.var})", ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name
    )


@register(
    "LayerNormalization",
    family="normalization",
    torch="nn.LayerNorm / nn.RMSNorm",
    notes="trailing axes; eps from Keras (1e-3 default); rms_scaling -> nn.RMSNorm",
)
def layer_norm(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    rank = len(node.inputs[0].shape) + 1
    axis = c.get("axis", -1)
    axes = sorted(a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis]))
    if axes != list(range(rank - len(axes), rank)) or 0 in axes:
        raise Unsupported(f"LayerNormalization over axes {axis} (not the trailing axes)")
    x = b.input(node, 0, "last")
    shape = tuple(int(x.shape[a - 1]) for a in axes)
    nshape = str(shape[0]) if len(shape) == 1 else str(shape)
    eps = num(c.get("epsilon", 1e-3))
    scale, center = c.get("scale", True), c.get("center", True)
    if c.get("rms_scaling"):
        if not scale or center:
            raise Unsupported("rms_scaling LayerNormalization with a beta is not translated")
        attr = b.add_module(layer, f"nn.RMSNorm({nshape}, eps={eps})")
        b.weight(layer, layer.gamma, f"{attr}.weight", arr(layer.gamma), "as is (gamma)")
    elif scale:
        bias = "" if center else ", bias=False"
        attr = b.add_module(layer, f"nn.LayerNorm({nshape}, eps={eps}{bias})")
        b.weight(layer, layer.gamma, f"{attr}.weight", arr(layer.gamma), "as is (gamma)")
        if center:
            b.weight(layer, layer.beta, f"{attr}.bias", arr(layer.beta), "as is (beta)")
    elif not center:
        attr = b.add_module(layer, f"nn.LayerNorm({nshape}, eps={eps}, elementwise_affine=False)")
    else:
        raise Unsupported("LayerNormalization with center=True, scale=False is not translated")
    b.assign(f"self.{attr}({x.var})", ref=node.outputs[0], layout="last", reuse=x, hint=layer.name)


NORMALIZATION = '''
class Normalization(nn.Module):
    """Keras Normalization: (x - mean) / sqrt(variance), the adapted statistics as buffers."""

    def __init__(self, shape):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("variance", torch.ones(shape))
        self.register_buffer("count", torch.zeros(()))  # samples seen by Keras' adapt()

    def forward(self, x):
        return (x - self.mean) / torch.sqrt(self.variance).clamp(min=1e-7)
'''


@register(
    "Normalization",
    family="preprocessing",
    torch="Normalization (buffers)",
    notes="adapted or given mean/variance -> buffers; invert=True not supported",
)
def normalization(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    if c.get("invert"):
        raise Unsupported("Normalization(invert=True) is not translated")
    x = b.input(node, 0, "last")
    mean = np.asarray(W.as_array(layer.mean), dtype=np.float32)
    var = np.asarray(W.as_array(layer.variance), dtype=np.float32)
    shape = mean.shape[1:] if mean.ndim == x.rank else mean.shape
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    mean, var = mean.reshape(shape), var.reshape(shape)
    b.helper("Normalization", NORMALIZATION)
    attr = b.add_module(layer, f"Normalization({tuple(int(s) for s in shape)})")
    by_name = {v.path.split("/")[-1]: v for v in layer.weights}
    if "mean" in by_name:
        b.weight(layer, by_name["mean"], f"{attr}.mean", mean, f"reshape{shape}", buffer=True)
        b.weight(
            layer, by_name["variance"], f"{attr}.variance", var, f"reshape{shape}", buffer=True
        )
    else:
        b.extra_tensor(f"{attr}.mean", mean, "Normalization mean given as a constant")
        b.extra_tensor(f"{attr}.variance", var, "Normalization variance given as a constant")
    if "count" in by_name:
        b.weight(
            layer,
            by_name["count"],
            f"{attr}.count",
            arr(by_name["count"]).reshape(()),
            "as is",
            buffer=True,
        )
    else:
        b.extra_tensor(f"{attr}.count", np.zeros(()), "adapt() sample count")
    b.assign(f"self.{attr}({x.var})", ref=node.outputs[0], layout="last", reuse=x, hint=layer.name)


@register(
    "Rescaling",
    family="preprocessing",
    torch="x * scale + offset",
    notes="scalar or per-channel scale/offset",
)
def rescaling(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    scale, offset = c.get("scale", 1.0), c.get("offset", 0.0)
    b.map_functional(layer)
    if isinstance(scale, dict) or isinstance(offset, dict):
        scale = np.asarray(W.as_array(layer.scale)).tolist()
        offset = np.asarray(W.as_array(layer.offset)).tolist()
    vector = isinstance(scale, (list, tuple)) or isinstance(offset, (list, tuple))
    x = b.input(node, 0, "last" if vector else None)
    if vector:
        attr = b.attr_name(layer)
        terms = []
        for nm, val in (("scale", scale), ("offset", offset)):
            arr_ = np.asarray(val, dtype=np.float32).reshape(-1)
            if nm == "offset" and not arr_.any():
                continue
            buf = f"{attr}_{nm}"
            b.init_extra.append(
                f'self.register_buffer("{buf}", torch.tensor([{", ".join(num(v) for v in arr_)}]),'
                f" persistent=False)"
            )
            terms.append(buf)
        expr = f"{x.var} * self.{terms[0]}"
        if len(terms) > 1:
            expr += f" + self.{terms[1]}"
    else:
        scale, offset = float(scale), float(offset)
        inv = 1.0 / scale if scale else 0.0
        if scale and abs(inv - round(inv)) < 1e-9 and round(inv) != 1:
            expr = f"{x.var} / {num(round(inv))}"
        elif scale == 1.0:
            expr = x.var
        else:
            expr = f"{x.var} * {num(scale)}"
        if offset:
            expr += f" + {num(offset)}" if offset > 0 else f" - {num(-offset)}"
    b.assign(expr, ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name)


# ----- regularization ----------------------------------------------------------------------------
DROP_PATH = '''
class DropPath(nn.Module):
    """Drops whole samples while training, scaling the rest by 1 / (1 - p) (Keras' Dropout with
    noise_shape=(None, 1, ...) and StochasticDepth)."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], *[1] * (x.dim() - 1), device=x.device) >= self.p
        return x * keep / (1.0 - self.p)
'''


@register(
    "Dropout",
    family="regularization",
    torch="nn.Dropout",
    notes="noise_shape=(None, 1, ..., 1) -> DropPath (per-sample)",
)
def dropout(b: Builder, node: GraphNode) -> None:
    c = cfg(node.layer)
    ns = c.get("noise_shape")
    x = b.input(node)
    rate = num(c.get("rate", 0.5))
    if ns is not None:
        ns = tuple(ns)
        if ns[0] is None and all(v == 1 for v in ns[1:]):
            b.helper("DropPath", DROP_PATH)
            _module_call(b, node, f"DropPath({rate})", x)
            return
        raise Unsupported(f"Dropout with noise_shape={ns} is not translated")
    _module_call(b, node, f"nn.Dropout({rate})", x)


@register(
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    family="regularization",
    torch="nn.Dropout1d/2d/3d",
)
def spatial_dropout(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    n = int(type(layer).__name__[-2])
    fmt = c.get("data_format", "channels_last") or "channels_last"
    x = b.input(node, 0, "last" if fmt == "channels_first" else "first")
    _module_call(b, node, f"nn.Dropout{n}d({num(c.get('rate', 0.5))})", x)


@register("GaussianNoise", family="regularization", torch="x + stddev * randn (training only)")
def gaussian_noise(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    x = b.input(node)
    b.map_functional(layer)
    sd = num(c.get("stddev"))
    b.assign(
        f"{x.var} + {sd} * torch.randn_like({x.var}) if self.training else {x.var}",
        ref=node.outputs[0],
        layout=x.layout,
        reuse=x,
        hint=layer.name,
        comment="Keras GaussianNoise",
    )


@register(
    "GaussianDropout",
    family="regularization",
    torch="x * (1 + sqrt(p / (1 - p)) * randn) (training only)",
)
def gaussian_dropout(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    x = b.input(node)
    rate = float(c.get("rate"))
    if not 0 < rate < 1:
        passthrough(b, node)
        return
    b.map_functional(layer)
    sd = num(math.sqrt(rate / (1 - rate)))
    b.assign(
        f"{x.var} * (1 + {sd} * torch.randn_like({x.var})) if self.training else {x.var}",
        ref=node.outputs[0],
        layout=x.layout,
        reuse=x,
        hint=layer.name,
        comment="Keras GaussianDropout",
    )


@register("AlphaDropout", family="regularization", torch="nn.AlphaDropout")
def alpha_dropout(b: Builder, node: GraphNode) -> None:
    c = cfg(node.layer)
    if c.get("noise_shape") is not None:
        raise Unsupported("AlphaDropout with noise_shape is not translated")
    _module_call(b, node, f"nn.AlphaDropout({num(c.get('rate'))})", b.input(node))


@register("ActivityRegularization", family="regularization", torch="(identity; penalty in recipe)")
def activity_regularization(b: Builder, node: GraphNode) -> None:
    b.note(
        f"{node.layer.name}: ActivityRegularization is an identity here; its penalty is in "
        f"the recipe's regularizers"
    )
    passthrough(b, node)


# ----- reshaping ---------------------------------------------------------------------------------
@register(
    "Flatten",
    family="reshaping",
    torch="x.flatten(1)",
    notes="flattens channels-last data (permuted back first) so Dense weights match",
)
def flatten(b: Builder, node: GraphNode) -> None:
    c = cfg(node.layer)
    if c.get("data_format", "channels_last") == "channels_first" and len(node.inputs[0].shape) > 1:
        raise Unsupported("Flatten(data_format='channels_first') is not translated")
    x = b.input(node, 0, "last")
    b.map_functional(node.layer)
    b.assign(f"{x.var}.flatten(1)", ref=node.outputs[0], reuse=x, hint=node.layer.name)


@register("Reshape", family="reshaping", torch="x.reshape")
def reshape(b: Builder, node: GraphNode) -> None:
    target = tuple(int(v) for v in cfg(node.layer)["target_shape"])
    x = b.input(node, 0, "last")
    b.map_functional(node.layer)
    if x.rank == 2 and len(target) > 1 and all(v == 1 for v in target[:-1]):
        # (batch, C) -> (batch, 1, ..., 1, C): build it channels-first, as convolutions want it
        ones = ", ".join("1" for _ in target[:-1])
        b.assign(
            f"{x.var}.reshape(-1, {target[-1]}, {ones})",
            ref=node.outputs[0],
            layout="first",
            reuse=x,
            hint=node.layer.name,
        )
        return
    dims = ", ".join(str(v) for v in target)
    head = "-1" if -1 not in target else f"{x.var}.shape[0]"
    b.assign(f"{x.var}.reshape({head}, {dims})", ref=node.outputs[0], reuse=x, hint=node.layer.name)


@register("Permute", family="reshaping", torch="x.permute")
def permute(b: Builder, node: GraphNode) -> None:
    dims = tuple(int(v) for v in cfg(node.layer)["dims"])
    x = b.input(node, 0, "last")
    b.map_functional(node.layer)
    b.assign(
        f"{x.var}.permute(0, {', '.join(map(str, dims))})",
        ref=node.outputs[0],
        reuse=x,
        hint=node.layer.name,
    )


@register("RepeatVector", family="reshaping", torch="x.unsqueeze(1).expand")
def repeat_vector(b: Builder, node: GraphNode) -> None:
    n = int(cfg(node.layer)["n"])
    x = b.input(node, 0, "last")
    b.map_functional(node.layer)
    b.assign(
        f"{x.var}.unsqueeze(1).expand(-1, {n}, -1)",
        ref=node.outputs[0],
        reuse=x,
        hint=node.layer.name,
    )


def _pairs(p: Any, n: int) -> list[tuple[int, int]]:
    if isinstance(p, int):
        return [(p, p)] * n
    out = []
    for v in p:
        out.append((int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1])))
    if n == 1 and len(out) == 2 and isinstance(p[0], int):
        return [(int(p[0]), int(p[1]))]
    return out


@register(
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    family="reshaping",
    torch="nn.ZeroPad1d/2d/3d",
)
def zero_padding(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    n = int(type(layer).__name__[-2])
    pads = _pairs(c["padding"], n)
    fmt = c.get("data_format", "channels_last") or "channels_last"
    x = b.input(node, 0, "last" if fmt == "channels_first" else "first")
    flat = [p for pair in reversed(pads) for p in pair]
    arg = str(flat[0]) if len(set(flat)) == 1 else "(" + ", ".join(map(str, flat)) + ")"
    _module_call(b, node, f"nn.ZeroPad{n}d({arg})", x)


def _slice(a: int, z: int) -> str:
    return f"{a or ''}:{-z if z else ''}"


@register("Cropping1D", "Cropping2D", "Cropping3D", family="reshaping", torch="slicing")
def cropping(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    n = int(type(layer).__name__[-2])
    crops = _pairs(c["cropping"], n)
    fmt = c.get("data_format", "channels_last") or "channels_last"
    x = b.input(node)
    if n == 1:
        x = b.input(node, 0, "last")
        index = f"[:, {_slice(*crops[0])}]"
    else:
        if fmt != "channels_first" and x.layout == "last":
            spatial_first = False
        else:
            spatial_first = True
        parts = [_slice(*p) for p in crops]
        index = (
            "[:, :, " + ", ".join(parts) + "]"
            if spatial_first
            else ("[:, " + ", ".join(parts) + "]")
        )
    b.map_functional(layer)
    b.assign(f"{x.var}{index}", ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name)


@register(
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
    family="reshaping",
    torch="nn.Upsample (nearest, bilinear)",
)
def upsampling(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    n = int(type(layer).__name__[-2])
    size = tup(c.get("size", 2), n)
    mode = c.get("interpolation", "nearest")
    if mode not in ("nearest", "bilinear"):
        raise Unsupported(f"UpSampling interpolation {mode!r} (torch's kernel differs)")
    fmt = c.get("data_format", "channels_last") or "channels_last"
    x = b.input(node, 0, "last" if fmt == "channels_first" else "first")
    factor = ints(size) if len(set(size)) == 1 else str(tuple(float(s) for s in size))
    if len(set(size)) == 1:
        factor = f"{int(size[0])}"
    extra = ', mode="bilinear"' if mode == "bilinear" else ""
    _module_call(b, node, f"nn.Upsample(scale_factor={factor}{extra})", x)


# ----- merging -----------------------------------------------------------------------------------
def merge_inputs(b: Builder, node: GraphNode) -> list[Value]:
    refs = node.inputs
    ranks = {len(r.shape) for r in refs}
    layout = "last"
    if len(ranks) == 1 and ranks.pop() > 1:
        if all("first" in b._records[r.key].vars for r in refs):
            layout = "first"
    return [b.value(r, layout) for r in refs]


@register(
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    family="merging",
    torch="+ - * / torch.maximum torch.minimum",
)
def merge(b: Builder, node: GraphNode) -> None:
    name = type(node.layer).__name__
    vals = merge_inputs(b, node)
    vs = [v.var for v in vals]
    if name == "Add":
        expr = " + ".join(vs)
    elif name == "Subtract":
        expr = f"{vs[0]} - {vs[1]}"
    elif name == "Multiply":
        expr = " * ".join(vs)
    elif name == "Average":
        expr = f"({' + '.join(vs)}) / {len(vs)}"
    else:
        fn = "torch.maximum" if name == "Maximum" else "torch.minimum"
        expr = vs[0]
        for v in vs[1:]:
            expr = f"{fn}({expr}, {v})"
    b.map_functional(node.layer)
    b.assign(expr, ref=node.outputs[0], layout=vals[0].layout, reuse=vals, hint=node.layer.name)


@register("Concatenate", family="merging", torch="torch.cat(dim)")
def concatenate(b: Builder, node: GraphNode) -> None:
    axis = int(cfg(node.layer).get("axis", -1))
    vals = merge_inputs(b, node)
    dim = vals[0].torch_dim(axis)
    b.map_functional(node.layer)
    b.assign(
        f"torch.cat([{', '.join(v.var for v in vals)}], dim={dim})",
        ref=node.outputs[0],
        layout=vals[0].layout,
        hint=node.layer.name,
    )


@register(
    "Dot",
    family="merging",
    torch="(a * b).sum / torch.bmm",
    notes="rank-2 or rank-3 inputs; normalize=True -> F.normalize",
)
def dot(b: Builder, node: GraphNode) -> None:
    c = cfg(node.layer)
    axes = c.get("axes")
    a, v = (b.value(r, "last") for r in node.inputs)
    ranks = (a.rank, v.rank)
    ax = tuple(axes) if isinstance(axes, (list, tuple)) else (axes, axes)
    ax = (ax[0] % ranks[0], ax[1] % ranks[1])
    av, vv = a.var, v.var
    if c.get("normalize"):
        b.use("F")
        av, vv = f"F.normalize({av}, dim={ax[0]})", f"F.normalize({vv}, dim={ax[1]})"
    b.map_functional(node.layer)
    if ranks == (2, 2):
        expr = f"({av} * {vv}).sum(dim=1, keepdim=True)"
    elif ranks == (3, 3):
        left = av if ax[0] == 2 else f"{av}.transpose(1, 2)"
        right = vv if ax[1] == 1 else f"{vv}.transpose(1, 2)"
        expr = f"{left} @ {right}"
    else:
        raise Unsupported(f"Dot of rank {ranks} tensors is not translated")
    b.assign(expr, ref=node.outputs[0], hint=node.layer.name)


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


# ----- embedding & recurrent ---------------------------------------------------------------------
@register(
    "Embedding",
    family="embedding",
    torch="nn.Embedding",
    notes="mask_zero=True is translated, but a mask-consuming layer downstream "
    "(RNN, attention, 1D global pooling) is reported unsupported",
)
def embedding(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    x = b.input(node, 0, "last")
    attr = b.add_module(layer, f"nn.Embedding({int(c['input_dim'])}, {int(c['output_dim'])})")
    b.weight(layer, layer.embeddings, f"{attr}.weight", arr(layer.embeddings), "as is")
    name, icfg = _init_cfg(c.get("embeddings_initializer"))
    if (
        name == "RandomUniform"
        and icfg.get("minval", -0.05) == -0.05
        and icfg.get("maxval", 0.05) == 0.05
    ):
        b.default_init("embedding")
    else:
        b.default_init("embedding")
        init_weight(
            b,
            layer,
            c.get("embeddings_initializer"),
            f"self.{attr}.weight",
            tuple(layer.embeddings.shape),
            tuple(layer.embeddings.shape),
            default="__always__",
        )
    idx = x.var if "int" in x.dtype else f"{x.var}.long()"
    b.assign(f"self.{attr}({idx})", ref=node.outputs[0], reuse=x, hint=layer.name)


def _rnn_spec(layer: Any) -> tuple[str, int, dict]:
    """(torch class, units, config) after checking the recurrent layer maps exactly."""
    c = cfg(layer)
    kind = type(layer).__name__
    if kind not in ("LSTM", "GRU", "SimpleRNN"):
        raise Unsupported(f"recurrent layer {kind} is not translated")
    if c.get("stateful"):
        raise Unsupported(f"{kind}(stateful=True) carries state across batches")
    act = _activation_name(c.get("activation"))
    if kind == "SimpleRNN":
        if act not in ("tanh", "relu"):
            raise Unsupported(f"SimpleRNN activation {act!r}: nn.RNN has tanh or relu")
    else:
        rec = _activation_name(c.get("recurrent_activation"))
        if act != "tanh" or rec != "sigmoid":
            raise Unsupported(
                f"{kind} with activation={act!r}, recurrent_activation={rec!r}: nn.{kind} "
                f"hard-codes tanh/sigmoid"
            )
    if kind == "GRU" and not c.get("reset_after", True):
        raise Unsupported(
            "GRU(reset_after=False) applies the reset gate before the recurrent "
            "kernel; nn.GRU only has the reset_after=True form"
        )
    torch_cls = {"LSTM": "nn.LSTM", "GRU": "nn.GRU", "SimpleRNN": "nn.RNN"}[kind]
    return torch_cls, int(c["units"]), c


def _rnn_weights(b: Builder, layer: Any, attr: str, suffix: str, kind: str, bias: bool) -> None:
    cell = layer.cell
    k, r = arr(cell.kernel), arr(cell.recurrent_kernel)
    gate = ""
    if kind == "GRU":
        k, r = W.gru_gates(k), W.gru_gates(r)
        gate = "; gates z,r,h -> r,z,n"
    elif kind == "LSTM":
        gate = "; gates i,f,c,o -> i,f,g,o (same order)"
    b.weight(layer, cell.kernel, f"{attr}.weight_ih_{suffix}", k.T, f"transpose(1, 0){gate}")
    b.weight(
        layer, cell.recurrent_kernel, f"{attr}.weight_hh_{suffix}", r.T, f"transpose(1, 0){gate}"
    )
    if not bias:
        return
    bb = arr(cell.bias)
    if kind == "GRU":
        bb = W.gru_gates(bb)
        b.weight(layer, cell.bias, f"{attr}.bias_ih_{suffix}", bb[0], "row 0 (input bias)" + gate)
        b.weight(
            layer, cell.bias, f"{attr}.bias_hh_{suffix}", bb[1], "row 1 (recurrent bias)" + gate
        )
        return
    b.weight(layer, cell.bias, f"{attr}.bias_ih_{suffix}", bb, "as is" + gate)
    b.extra_tensor(
        f"{attr}.bias_hh_{suffix}",
        np.zeros_like(bb),
        f"Keras {kind} has one bias; torch's second bias stays frozen at 0",
    )
    line = f"self.{attr}.bias_hh_{suffix}.requires_grad_(False)"
    if not any(ln.startswith("# Keras") and "one bias" in ln for ln in b.init_extra):
        b.init_extra.append("# Keras RNNs have one bias: bias_ih plays it, bias_hh stays 0")
    b.init_extra.append(line)


def _rnn_notes(b: Builder, layer: Any, c: dict) -> None:
    if c.get("dropout") or c.get("recurrent_dropout"):
        b.note(
            f"{layer.name}: Keras dropout={c.get('dropout')}, recurrent_dropout="
            f"{c.get('recurrent_dropout')} inside the recurrence are not reproduced "
            f"(inference is exact; training differs)"
        )
    for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
        name, _ = _init_cfg(c.get(key))
        if name not in ("GlorotUniform", "Orthogonal", "Zeros"):
            b.note(f"{layer.name}: {key}={name} not reproduced (torch loop init used)")


def _rnn_ctor(torch_cls: str, n_in: int, units: int, c: dict, bidirectional: bool) -> str:
    args = [str(n_in), str(units), "batch_first=True"]
    if torch_cls == "nn.RNN" and _activation_name(c.get("activation")) == "relu":
        args.append('nonlinearity="relu"')
    if not c.get("use_bias", True):
        args.append("bias=False")
    if bidirectional:
        args.append("bidirectional=True")
    return f"{torch_cls}({', '.join(args)})"


@register(
    "LSTM",
    "GRU",
    "SimpleRNN",
    family="recurrent",
    torch="nn.LSTM / nn.GRU / nn.RNN",
    notes="batch_first; return_sequences, return_state, initial_state; GRU "
    "reset_after=True only; tanh/sigmoid only; go_backwards only in Bidirectional",
)
def recurrent(b: Builder, node: GraphNode) -> None:
    layer = node.layer
    torch_cls, units, c = _rnn_spec(layer)
    kind = type(layer).__name__
    if c.get("go_backwards"):
        raise Unsupported(f"{kind}(go_backwards=True) outside Bidirectional is not translated")
    if node.kwargs.get("mask") is not None:
        raise Unsupported(f"{kind} called with an explicit mask")
    x = b.value(node.args[0], "last")
    init = node.kwargs.get("initial_state")
    if init is None and len(node.args) > 1:
        init = node.args[1]
    attr = b.add_module(layer, _rnn_ctor(torch_cls, int(x.shape[-1]), units, c, False))
    _rnn_weights(b, layer, attr, "l0", kind, c.get("use_bias", True))
    b.default_init("rnn")
    _rnn_notes(b, layer, c)
    call = f"self.{attr}({x.var}"
    if init is not None:
        states = [
            b.value(r, "last").var for r in (init if isinstance(init, (list, tuple)) else [init])
        ]
        states = [f"{s}.unsqueeze(0)" for s in states]
        call += f", ({', '.join(states)})" if kind == "LSTM" else f", {states[0]}"
    call += ")"
    seq = c.get("return_sequences", False)
    outs = node.outputs
    if not c.get("return_state"):
        if seq:
            b.assign(f"{call}[0]", ref=outs[0], reuse=x, hint=layer.name)
        else:
            y = b.assign(f"{call}[0]", ref=outs[0], reuse=x, hint=layer.name)
            b.emit(f"{y.var} = {y.var}[:, -1]  # return_sequences=False: the last step")
        return
    out = b.fresh_var(layer.name)
    h = b.fresh_var(f"{layer.name}_h")
    if kind == "LSTM":
        cc = b.fresh_var(f"{layer.name}_c")
        b.emit(f"{out}, ({h}, {cc}) = {call}")
    else:
        b.emit(f"{out}, {h} = {call}")
    if not seq:
        b.emit(f"{out} = {out}[:, -1]  # return_sequences=False: the last step")
    b.bind(outs[0], out)
    b.emit(f"{h} = {h}[0]")
    b.bind(outs[1], h)
    if kind == "LSTM":
        b.emit(f"{cc} = {cc}[0]")
        b.bind(outs[2], cc)


@register(
    "Bidirectional",
    family="recurrent",
    torch="nn.LSTM/GRU/RNN(bidirectional=True)",
    notes="merge_mode concat/sum/ave/mul/None; return_state not supported",
)
def bidirectional(b: Builder, node: GraphNode) -> None:
    layer = node.layer
    fwd, bwd = layer.forward_layer, layer.backward_layer
    torch_cls, units, c = _rnn_spec(fwd)
    _, units_b, cb = _rnn_spec(bwd)
    kind = type(fwd).__name__
    if type(bwd) is not type(fwd) or units_b != units:
        raise Unsupported("Bidirectional with different forward and backward layers")
    if c.get("return_state") or c.get("go_backwards"):
        raise Unsupported("Bidirectional with return_state / go_backwards forward layer")
    if any(v is not None for k, v in node.kwargs.items() if k != "training"):
        raise Unsupported("Bidirectional called with a mask or initial state")
    x = b.input(node, 0, "last")
    attr = b.add_module(layer, _rnn_ctor(torch_cls, int(x.shape[-1]), units, c, True))
    _rnn_weights(b, fwd, attr, "l0", kind, c.get("use_bias", True))
    _rnn_weights(b, bwd, attr, "l0_reverse", kind, c.get("use_bias", True))
    b.layer_map.setdefault(fwd.name, attr)
    b.layer_map.setdefault(bwd.name, attr)
    b.default_init("rnn")
    _rnn_notes(b, fwd, c)
    mode = layer.merge_mode
    seq = c.get("return_sequences", False)
    if seq:
        y = b.assign(f"self.{attr}({x.var})[0]", ref=node.outputs[0], reuse=x, hint=layer.name)
        both = y.var
    else:
        h = b.fresh_var(f"{layer.name}_h")
        if kind == "LSTM":
            b.emit(f"_, ({h}, _) = self.{attr}({x.var})  # final states: [forward, backward]")
        else:
            b.emit(f"_, {h} = self.{attr}({x.var})  # final states: [forward, backward]")
        if mode == "concat":
            b.assign(f"torch.cat([{h}[0], {h}[1]], dim=-1)", ref=node.outputs[0], hint=layer.name)
            return
        both = None
    if mode == "concat":
        return
    if seq:
        fw, bw = b.fresh_var("forward"), b.fresh_var("backward")
        b.emit(f"{fw}, {bw} = {both}.chunk(2, dim=-1)")
    else:
        fw, bw = f"{h}[0]", f"{h}[1]"
    if mode is None:
        b.bind(node.outputs[0], fw)
        b.bind(node.outputs[1], bw)
        return
    expr = {"sum": f"{fw} + {bw}", "ave": f"({fw} + {bw}) / 2", "mul": f"{fw} * {bw}"}.get(mode)
    if expr is None:
        raise Unsupported(f"Bidirectional merge_mode={mode!r}")
    b.assign(expr, ref=node.outputs[0], hint=layer.name)


@register(
    "TimeDistributed",
    family="wrapper",
    torch="inner layer on (batch * time, ...)",
    notes="Dense runs directly on the last axis; others fold time into the batch",
)
def time_distributed(b: Builder, node: GraphNode) -> None:
    layer = node.layer
    inner = layer.layer
    rule = rule_for(inner)
    if rule is None:
        raise Unsupported(f"TimeDistributed({type(inner).__name__}): {missing_reason(inner)}")
    b._attrs[id(inner)] = b.attr_name(layer)
    if type(inner).__name__ == "Dense":
        fake = GraphNode(
            layer=inner,
            args=(node.inputs[0],),
            kwargs={},
            outputs=node.outputs,
            scope=node.scope,
            inputs=list(node.inputs),
        )
        saved, b._node = b._node, fake
        rule(b, fake)
        b._node = saved
        b.layer_map[layer.name] = b._attrs[id(inner)]
        return
    x = b.input(node, 0, "last")
    steps = node.inputs[0].shape[0]
    folded_ref = TensorRef(
        ("td_in", id(node)), tuple(x.shape[1:]), x.dtype, name=f"{layer.name}_in"
    )
    out_ref = node.outputs[0]
    inner_out = TensorRef(
        ("td_out", id(node)), tuple(out_ref.shape[1:]), out_ref.dtype, name=f"{layer.name}_out"
    )
    folded = b.fresh_var(f"{layer.name}_steps")
    b.emit(f"{folded} = {x.var}.flatten(0, 1)  # TimeDistributed: fold time into the batch")
    b.bind(folded_ref, folded)
    b._records[folded_ref.key].remaining = 1
    fake = GraphNode(
        layer=inner,
        args=(folded_ref,),
        kwargs={},
        outputs=[inner_out],
        scope=node.scope,
        inputs=[folded_ref],
    )
    saved, b._node = b._node, fake
    rule(b, fake)
    b._node = saved
    b._records[folded_ref.key].remaining = 0
    y = b.value(inner_out, "last")
    t = str(steps) if steps is not None else f"{x.var}.shape[1]"
    b.assign(f"{y.var}.unflatten(0, (-1, {t}))", ref=out_ref, hint=layer.name)
    b.layer_map[layer.name] = b._attrs[id(inner)]


# ----- attention ---------------------------------------------------------------------------------
MHA = '''
class MultiHeadAttention(nn.Module):
    """Keras MultiHeadAttention: per-head q/k/v projections, softmax over the keys."""

    def __init__(self, num_heads, head_dim, query_dim, key_dim, value_dim, output_dim,
                 value_head_dim=None, dropout=0.0, bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.value_head_dim = value_head_dim or head_dim
        self.query = nn.Linear(query_dim, num_heads * head_dim, bias=bias)
        self.key = nn.Linear(key_dim, num_heads * head_dim, bias=bias)
        self.value = nn.Linear(value_dim, num_heads * self.value_head_dim, bias=bias)
        self.output = nn.Linear(num_heads * self.value_head_dim, output_dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query, value, key=None, attention_mask=None, causal=False):
        key = value if key is None else key
        batch, q_len, k_len = query.shape[0], query.shape[1], key.shape[1]
        q = self.query(query).view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.key(key).view(batch, k_len, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.value(value).view(batch, k_len, self.num_heads, -1).transpose(1, 2)
        scores = (q / math.sqrt(self.head_dim)) @ k.transpose(-2, -1)  # (batch, heads, q, k)
        if causal:
            keep = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril()
            attention_mask = keep if attention_mask is None else attention_mask.bool() & keep
        if attention_mask is not None:
            # Keras adds a large negative number where the mask is 0
            scores = scores.masked_fill(~attention_mask.bool().unsqueeze(-3), -1e9)
        weights = self.dropout(scores.softmax(dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, q_len, -1)
        return self.output(out), weights
'''


@register(
    "MultiHeadAttention",
    family="attention",
    torch="MultiHeadAttention (q/k/v/o nn.Linear)",
    notes="rank-3 inputs, attention over the sequence axis; query/value/key, "
    "attention_mask, use_causal_mask, return_attention_scores",
)
def multi_head_attention(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    if c.get("attention_axes") not in (None, [1], (1,), -2, 1):
        raise Unsupported(f"MultiHeadAttention attention_axes={c.get('attention_axes')}")
    names = ["query", "value", "key"]
    call = dict(zip(names, node.args))
    call.update({k: v for k, v in node.kwargs.items()})
    for m in ("query_mask", "value_mask", "key_mask"):
        if call.get(m) is not None:
            raise Unsupported(f"MultiHeadAttention called with {m}")
    refs = {k: call.get(k) for k in ("query", "value", "key", "attention_mask")}
    if any(r is not None and len(r.shape) != 2 for k, r in refs.items() if k != "attention_mask"):
        raise Unsupported("MultiHeadAttention on inputs that are not (batch, seq, features)")
    q = b.value(refs["query"], "last")
    v = b.value(refs["value"], "last")
    k = b.value(refs["key"], "last") if refs["key"] is not None else v
    heads, hd = int(c["num_heads"]), int(c["key_dim"])
    vd = int(c.get("value_dim") or hd)
    out_dim = c.get("output_shape")
    out_dim = int(out_dim[-1] if isinstance(out_dim, (list, tuple)) else out_dim or q.shape[-1])
    bias = c.get("use_bias", True)
    b.helper("MultiHeadAttention", MHA)
    b.use("math")
    args = [
        f"num_heads={heads}",
        f"head_dim={hd}",
        f"query_dim={q.shape[-1]}",
        f"key_dim={k.shape[-1]}",
        f"value_dim={v.shape[-1]}",
        f"output_dim={out_dim}",
    ]
    if vd != hd:
        args.append(f"value_head_dim={vd}")
    if c.get("dropout"):
        args.append(f"dropout={num(c['dropout'])}")
    if not bias:
        args.append("bias=False")
    attr = b.add_module(layer, f"MultiHeadAttention({', '.join(args)})")
    subs = [
        ("query", layer._query_dense),
        ("key", layer._key_dense),
        ("value", layer._value_dense),
        ("output", layer._output_dense),
    ]
    b.default_init("linear", "nn.Linear")
    for nm, dense_ in subs:
        kern = arr(dense_.kernel)
        t, how = (W.mha_output_kernel if nm == "output" else W.mha_input_kernel)(kern)
        b.weight(layer, dense_.kernel, f"{attr}.{nm}.weight", t, how)
        init_weight(
            b, layer, c.get("kernel_initializer"), f"self.{attr}.{nm}.weight", kern.shape, t.shape
        )
        if bias:
            b.weight(
                layer, dense_.bias, f"{attr}.{nm}.bias", arr(dense_.bias).reshape(-1), "reshape(-1)"
            )
    call_args = [q.var, v.var]
    if refs["key"] is not None and refs["key"].key != refs["value"].key:
        call_args.append(f"key={k.var}")
    if refs["attention_mask"] is not None:
        call_args.append(f"attention_mask={b.value(refs['attention_mask'], 'last').var}")
    if call.get("use_causal_mask"):
        call_args.append("causal=True")
    expr = f"self.{attr}({', '.join(call_args)})"
    if call.get("return_attention_scores"):
        out, scores = b.fresh_var(layer.name), b.fresh_var(f"{layer.name}_scores")
        b.emit(f"{out}, {scores} = {expr}")
        b.bind(node.outputs[0], out)
        b.bind(node.outputs[1], scores)
    else:
        b.assign(f"{expr}[0]", ref=node.outputs[0], reuse=q, hint=layer.name)


# ----- keras.applications custom layers ----------------------------------------------------------
LAYER_SCALE = '''
class LayerScale(nn.Module):
    """Multiplies the last axis by a learned per-channel scale (ConvNeXt's LayerScale)."""

    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma
'''


@register("LayerScale", family="keras.applications", torch="LayerScale (gamma parameter)")
def layer_scale(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    x = b.input(node, 0, "last")
    b.helper("LayerScale", LAYER_SCALE)
    attr = b.add_module(layer, f"LayerScale({int(c['projection_dim'])})")
    b.weight(layer, layer.gamma, f"{attr}.gamma", arr(layer.gamma), "as is")
    b.init_line(f"nn.init.constant_(self.{attr}.gamma, {num(c['init_values'])})")
    b.assign(f"self.{attr}({x.var})", ref=node.outputs[0], reuse=x, hint=layer.name)


@register(
    "CustomScaleLayer",
    family="keras.applications",
    torch="shortcut + residual * scale",
    notes="InceptionResNetV2's residual scaling",
)
def custom_scale_layer(b: Builder, node: GraphNode) -> None:
    if (type(node.layer).__module__ or "").split(".")[-1] != "inception_resnet_v2":
        raise Unsupported("CustomScaleLayer from outside keras.applications.inception_resnet_v2")
    scale = num(cfg(node.layer)["scale"])
    shortcut, residual = merge_inputs(b, node)
    b.map_functional(node.layer)
    b.assign(
        f"{shortcut.var} + {residual.var} * {scale}",
        ref=node.outputs[0],
        layout=shortcut.layout,
        reuse=[shortcut, residual],
        hint=node.layer.name,
    )


@register("StochasticDepth", family="keras.applications", torch="DropPath")
def stochastic_depth(b: Builder, node: GraphNode) -> None:
    c = cfg(node.layer)
    b.helper("DropPath", DROP_PATH)
    _module_call(b, node, f"DropPath({num(c['drop_path_rate'])})", b.input(node))


# ----- stubs for what has no rule ----------------------------------------------------------------
def _string_literal_lines(msg: str, width: int = 76) -> list[str]:
    import textwrap

    chunks = textwrap.wrap(msg, width, drop_whitespace=False) or [""]
    return [repr(ch) for ch in chunks]


def _python_source(layer: Any, max_lines: int = 40) -> str:
    """The Python behind a Lambda or a custom layer's call(), when inspect can find it."""
    import inspect
    import textwrap

    target = getattr(layer, "function", None) if type(layer).__name__ == "Lambda" else None
    if target is None and not (type(layer).__module__ or "").startswith("keras"):
        target = getattr(type(layer), "call", None)
    if target is None:
        return ""
    try:
        text = textwrap.dedent(inspect.getsource(target)).rstrip()
    except (OSError, TypeError):
        return ""
    lines = text.splitlines()
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], "..."]
    return "\n".join(lines)


def emit_stub(b: Builder, node: GraphNode, reason: str) -> None:
    """A named stub module that raises NotImplementedError, holding the layer's Keras config."""
    from .translator import UnsupportedLayer

    layer = node.layer
    cls = type(layer).__name__
    try:
        config = dict(layer.get_config())
    except Exception as exc:  # noqa: BLE001 - custom layers may not implement get_config
        config = {"error": f"get_config() failed: {exc}"}
    b.unsupported.append(UnsupportedLayer(layer.name, cls, reason, config))
    stub = f"Untranslated{camel(layer.name)}"
    params, entries = [], []
    used: set[str] = set()
    attr_of = {id(v): k for k, v in vars(layer).items() if hasattr(v, "path")}
    for v in getattr(layer, "weights", []):
        pname = snake(attr_of.get(id(v), v.path.split("/")[-1]))
        while pname in used or pname in ("forward", "training"):
            pname += "_"
        used.add(pname)
        shape = tuple(int(s) for s in v.shape)
        if v.trainable:
            params.append(f"self.{pname} = nn.Parameter(torch.zeros({shape}))  # Keras {v.path}")
        else:
            params.append(
                f'self.register_buffer("{pname}", torch.zeros({shape}))  # Keras {v.path}'
            )
        entries.append((v, pname, not v.trainable))
    msg = f"Keras layer {layer.name!r} ({cls}) is not translated: {reason}"
    shapes_in = ", ".join(str((None, *r.shape)) for r in node.inputs)
    shapes_out = ", ".join(str((None, *r.shape)) for r in node.outputs)
    shown = {k: v for k, v in config.items() if k not in ("dtype", "trainable", "autocast")}
    if isinstance(shown.get("function"), dict):  # a Lambda's marshalled bytecode: show source
        shown["function"] = getattr(getattr(layer, "function", None), "__name__", "?")
    source = _python_source(layer)
    doc_text = (
        f"TODO: port Keras layer {layer.name!r} ({cls}); the translator has no exact rule.\n\n"
        f"Why: {reason}\n\n"
        f"Inputs {shapes_in} -> outputs {shapes_out}, Keras layout (channels-last). Implement "
        "forward() to match Keras on the same inputs; the weights below load in Keras layout, "
        "unchanged.\n\n"
        f"Keras config:\n{config_text(shown)}"
    )
    if source:
        doc_text += f"\n\nKeras code:\n{source}"
    body = [
        f"class {stub}(nn.Module):",
        '    r"""' + docstring_block(doc_text).lstrip(),
        '    """',
        "",
    ]
    body += ["    def __init__(self):", "        super().__init__()"]
    body += [f"        {p}" for p in params]
    body += ["", "    def forward(self, *inputs):", "        raise NotImplementedError("]
    body += [f"            {ln}" for ln in _string_literal_lines(msg)]
    body += ["        )"]
    b.helper(stub, "\n".join(body) + "\n")
    attr = b.add_module(layer, f"{stub}()", comment=f"TODO: untranslated Keras {cls}, see {stub}")
    for v, pname, is_buf in entries:
        b.weight(
            layer,
            v,
            f"{attr}.{pname}",
            arr(v),
            "as is (Keras layout; untranslated layer)",
            buffer=is_buf,
        )
    args = ", ".join(b.value(r, "last").var for r in node.inputs)
    outs = node.outputs
    if len(outs) == 1:
        b.assign(f"self.{attr}({args})", ref=outs[0], hint=layer.name)
    else:
        names = [b.fresh_var(f"{layer.name}_{i}") for i in range(len(outs))]
        b.emit(f"{', '.join(names)} = self.{attr}({args})")
        for r, nm in zip(outs, names):
            b.bind(r, nm)


# ----- documentation -----------------------------------------------------------------------------
NOT_SUPPORTED = [
    ("Lambda", "arbitrary Python: becomes a stub holding the function's name"),
    (
        "GRU(reset_after=False)",
        "Keras applies the reset gate before the recurrent kernel; "
        "nn.GRU only implements the reset_after=True form",
    ),
    ("LSTM/GRU with activations other than tanh/sigmoid", "nn.LSTM/nn.GRU hard-code them"),
    (
        "Masking, and Embedding(mask_zero=True) feeding an RNN/attention/1D pooling",
        "Keras skips masked steps; an unmasked torch layer would silently differ, so the consumer "
        "becomes a stub",
    ),
    (
        "RNN dropout / recurrent_dropout",
        "translated for inference; the per-step training-time "
        "masks are not reproduced (reported in notes)",
    ),
    ("stateful RNNs, go_backwards outside Bidirectional, ConvLSTM", "no exact torch module"),
    ("UpSampling2D(interpolation='bicubic'/'lanczos'/'area')", "torch's kernels differ from TF's"),
    (
        "Attention, AdditiveAttention, EinsumDense, Discretization, StringLookup, "
        "TextVectorization",
        "not yet written",
    ),
    ("Subclassed models", "call() is Python, not a graph: rebuild functionally (MigrationError)"),
    (
        "Keras 2 SavedModel folders",
        "Keras 3 cannot read their layers (MigrationError with the fix)",
    ),
]


VERIFIED_APPLICATIONS = [
    ("MobileNet (32x32)", "2.4e-7"),
    ("MobileNetV2 (32x32)", "2.2e-7"),
    ("MobileNetV3Small / MobileNetV3Large (32x32)", "1.7e-7 / 3.1e-7"),
    ("ResNet50 / ResNet50V2 (32x32)", "1.1e-6 / 4.9e-7"),
    ("DenseNet121 (32x32)", "2.4e-7"),
    ("EfficientNetB0 / EfficientNetV2B0 (32x32)", "1.6e-7 / 2.7e-7"),
    ("VGG16 (32x32)", "5.8e-10"),
    ("Xception (71x71)", "1.6e-7"),
    ("InceptionV3 (75x75)", "2.7e-7"),
    ("NASNetMobile (32x32, include_top=False)", "4.6e-5 on outputs of magnitude 43"),
    ("ConvNeXtTiny (32x32)", "2.5e-6"),
    ("InceptionResNetV2 (75x75)", "6.0e-7"),
]


def supported_layers_markdown() -> str:
    """The table in docs/supported_layers.md, generated from the registry."""
    lines = [
        "# Keras layers the translator supports",
        "",
        "Generated by `autopilot_lab.migrate.layers.supported_layers_markdown()` from the rule "
        "registry; do not edit by hand.",
        "",
        "Every rule is exact to float32 round-off (checked in `tests/migrate/test_translator.py`). "
        "A layer without a rule is never dropped or approximated: it becomes a stub module that "
        "raises `NotImplementedError` and is listed in `Translation.unsupported`.",
        "",
        "| Keras class | Family | PyTorch | Notes |",
        "|---|---|---|---|",
    ]
    groups: dict = {}
    for key, info in RULES.items():
        groups.setdefault(info.fn, []).append(key)
    rows = []
    for keys in groups.values():
        info = RULES[keys[0]]
        names = ", ".join(f"`keras.{k}`" if k.startswith("ops.") else f"`{k}`" for k in keys)
        rows.append(
            (info.family, keys[0], f"| {names} | {info.family} | `{info.torch}` | {info.notes} |")
        )
    lines += [row for _, _, row in sorted(rows)]
    lines += [
        "",
        "Activations (`activation=` argument and `Activation` layer): "
        + ", ".join(f"`{a}`" for a in sorted(ACTIVATIONS))
        + ", `linear`.",
        "",
    ]
    lines += [
        "## keras.applications checked end to end",
        "",
        "Built with `weights=None`, BatchNorm statistics randomized, translated, and compared "
        "on random inputs (max abs error of the logits, classifier_activation=None, float32). "
        "Every Keras weight is a torch parameter or buffer; trainable parameter counts equal "
        "Keras'. The emitted files pass `ruff check` and `ruff format --check`.",
        "",
    ]
    lines += [f"- {name}: {err}" for name, err in VERIFIED_APPLICATIONS]
    lines += ["", "## Not supported, and why", "", "| What | Why |", "|---|---|"]
    lines += [f"| {w} | {why} |" for w, why in NOT_SUPPORTED]
    lines += [
        "",
        "## Layout",
        "",
        "The emitted model takes and returns tensors in Keras layout (channels-last). Inside "
        "`forward()` a tensor is permuted to channels-first once, before the first layer that "
        "needs it (convolution, pooling, BatchNorm on images), and back before a layer that "
        "works on the last axis (Dense, Flatten, LayerNormalization, Reshape) or at the output.",
        "",
    ]
    return "\n".join(lines)
