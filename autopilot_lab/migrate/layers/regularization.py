"""Rules for the regularization layers: the dropouts, Gaussian noise, and
ActivityRegularization (whose penalty lives in the recipe)."""

from __future__ import annotations

import math

from ..keras_model import GraphNode
from ..translator import Builder, Unsupported
from .common import _module_call, cfg, num, passthrough
from .registry import register

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
