"""Rules for pooling: Max/AveragePooling and their Global forms (1D-3D)."""

from __future__ import annotations

from ..keras_model import GraphNode
from ..translator import Builder, Unsupported
from .common import cfg, ints, tup
from .convolution import _conv_input, _torch_pad, same_pads
from .registry import register


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
