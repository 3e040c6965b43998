"""Rules for the preprocessing layers inside a model: Normalization and Rescaling."""

from __future__ import annotations

import numpy as np

from .. import weights as W
from ..keras_model import GraphNode
from ..translator import Builder, Unsupported
from .common import arr, cfg, num
from .registry import register

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
