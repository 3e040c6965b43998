"""Rules for convolutions: Conv, DepthwiseConv, SeparableConv and ConvTranspose (1D-3D).

Also the padding helpers that turn Keras 'same'/'causal' padding into torch padding; pooling
uses them too.
"""

from __future__ import annotations

import numpy as np

from .. import weights as W
from ..keras_model import GraphNode
from ..translator import Builder, Unsupported, Value
from .common import apply_activation, arr, cfg, init_weight, ints, tup
from .registry import register

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


def _conv_weights(
    b: Builder,
    node: GraphNode,
    module: str,
    attr: str,
    kernel: tuple[np.ndarray, str],
    initializer_key: str,
) -> None:
    """The converted kernel (and bias) of a convolution declared as ``attr`` (a ``module``
    such as ``nn.Conv2d``), with the initializers Keras names for them."""
    layer, c = node.layer, cfg(node.layer)
    array, how = kernel
    b.weight(layer, layer.kernel, f"{attr}.weight", array, how)
    b.default_init("linear", module)
    init_weight(
        b,
        layer,
        c.get(initializer_key),
        f"self.{attr}.weight",
        tuple(layer.kernel.shape),
        array.shape,
    )
    if c.get("use_bias", True):
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


def _call_conv(b: Builder, node: GraphNode, attr: str, x: Value, crops: tuple = ()) -> None:
    """The forward line of a convolution, the end crop of a transposed 'same' one, and the
    activation."""
    layer = node.layer
    y = b.assign(
        f"self.{attr}({x.var})", ref=node.outputs[0], layout=x.layout, reuse=x, hint=layer.name
    )
    if any(crops):
        index = ", ".join(":-1" if cr else ":" for cr in crops)
        b.emit(f"{y.var} = {y.var}[:, :, {index}]  # Keras 'same' crops the odd pixel at the end")
    apply_activation(b, cfg(layer).get("activation"), y, node.outputs[0])


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
    _conv_weights(
        b, node, f"nn.Conv{n}d", attr, W.conv_kernel(arr(layer.kernel)), "kernel_initializer"
    )
    _call_conv(b, node, attr, x)


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
    _conv_weights(
        b,
        node,
        f"nn.Conv{n}d",
        attr,
        W.depthwise_kernel(arr(layer.kernel)),
        "depthwise_initializer",
    )
    _call_conv(b, node, attr, x)


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
    _conv_weights(
        b,
        node,
        f"nn.ConvTranspose{n}d",
        attr,
        W.conv_transpose_kernel(arr(layer.kernel)),
        "kernel_initializer",
    )
    _call_conv(b, node, attr, x, tuple(crops))
