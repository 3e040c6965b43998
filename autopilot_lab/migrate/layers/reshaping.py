"""Rules for the reshaping layers: Flatten, Reshape, Permute, RepeatVector, ZeroPadding,
Cropping and UpSampling."""

from __future__ import annotations

from typing import Any

from ..keras_model import GraphNode
from ..translator import Builder, Unsupported
from .common import _module_call, cfg, ints, tup
from .registry import register


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


@register("Resizing", family="reshaping", torch="F.interpolate (bilinear, nearest-exact)",
          notes="bilinear or nearest, without antialias, crop_to_aspect_ratio or "
                "pad_to_aspect_ratio (TensorFlow's half-pixel centres: torch's align_corners="
                "False and nearest-exact)")
def resizing(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    mode = c.get("interpolation", "bilinear")
    if mode not in ("bilinear", "nearest"):
        raise Unsupported(f"Resizing interpolation {mode!r}")
    if c.get("antialias") or c.get("crop_to_aspect_ratio") or c.get("pad_to_aspect_ratio"):
        raise Unsupported("Resizing with antialias, crop_to_aspect_ratio or pad_to_aspect_ratio")
    if len(node.inputs[0].shape) != 3:
        raise Unsupported("Resizing on a tensor that is not a batch of images")
    fmt = c.get("data_format", "channels_last") or "channels_last"
    x = b.input(node, 0, "last" if fmt == "channels_first" else "first")
    size = (int(c["height"]), int(c["width"]))
    how = ('mode="bilinear", align_corners=False' if mode == "bilinear"
           else 'mode="nearest-exact"')
    b.use("F")
    b.map_functional(layer)
    b.assign(f"F.interpolate({x.var}, size={size}, {how})", ref=node.outputs[0],
             layout=x.layout, reuse=x, hint=layer.name)


@register("CenterCrop", family="reshaping", torch="slicing",
          notes="images at least as large as the crop (a smaller one is resized: flagged)")
def center_crop(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    shape = node.inputs[0].shape  # without the batch axis
    fmt = c.get("data_format", "channels_last") or "channels_last"
    if len(shape) != 3:
        raise Unsupported("CenterCrop on a tensor that is not a batch of images")
    height, width = (shape[1], shape[2]) if fmt == "channels_first" else (shape[0], shape[1])
    th, tw = int(c["height"]), int(c["width"])
    if height is None or width is None or height < th or width < tw:
        raise Unsupported(f"CenterCrop to {th}x{tw} of {height}x{width} images resizes them "
                          "(Keras' smart_resize), which is not translated")
    h0, w0 = (int(height) - th) // 2, (int(width) - tw) // 2
    x = b.input(node)
    rows, cols = f"{h0}:{h0 + th}", f"{w0}:{w0 + tw}"
    spatial_first = not (fmt != "channels_first" and x.layout == "last")
    index = f"[:, :, {rows}, {cols}]" if spatial_first else f"[:, {rows}, {cols}]"
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
