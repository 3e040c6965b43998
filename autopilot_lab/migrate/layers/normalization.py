"""Rules for BatchNormalization and LayerNormalization.

The preprocessing layer `Normalization` is in `preprocessing.py`.
"""

from __future__ import annotations

import numpy as np

from ..keras_model import GraphNode
from ..translator import Builder, Unsupported
from .common import arr, cfg, num
from .registry import register

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
    axes = _trailing_axes(node, c.get("axis", -1))
    x = b.input(node, 0, "last")
    nshape = _normalized_shape(x, axes)
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


def _normalized_shape(x, axes: list[int]) -> str:
    """The ``normalized_shape`` argument of nn.LayerNorm / nn.RMSNorm for Keras' ``axes``."""
    shape = tuple(int(x.shape[a - 1]) for a in axes)
    return str(shape[0]) if len(shape) == 1 else str(shape)


def _trailing_axes(node: GraphNode, axis) -> list[int]:
    """The axes a normalization runs over, as non-negative indices, if they are the trailing
    ones (the channel-last layout's); else Unsupported, naming them."""
    rank = len(node.inputs[0].shape) + 1
    axes = sorted(a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis]))
    if axes != list(range(rank - len(axes), rank)) or 0 in axes:
        raise Unsupported(f"{type(node.layer).__name__} over axes {axis} (not the trailing "
                          "axes)")
    return axes


@register(
    "RMSNormalization",
    family="normalization",
    torch="nn.RMSNorm",
    notes="trailing axes; x * rsqrt(mean(x^2) + epsilon) * scale, epsilon from Keras (1e-6)",
)
def rms_norm(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    axes = _trailing_axes(node, c.get("axis", -1))
    x = b.input(node, 0, "last")
    nshape = _normalized_shape(x, axes)
    attr = b.add_module(layer, f"nn.RMSNorm({nshape}, eps={num(c.get('epsilon', 1e-6))})")
    b.weight(layer, layer.scale, f"{attr}.weight", arr(layer.scale), "as is (scale)")
    b.init_line(f"nn.init.ones_(self.{attr}.weight)")
    b.assign(f"self.{attr}({x.var})", ref=node.outputs[0], reuse=x, hint=layer.name)


@register(
    "UnitNormalization",
    family="normalization",
    torch="x * min(rsqrt(sum(x^2)), 1e12)",
    notes="trailing axes; Keras' L2 normalization with its 1e-12 floor on the norm",
)
def unit_norm(b: Builder, node: GraphNode) -> None:
    axes = _trailing_axes(node, cfg(node.layer).get("axis", -1))
    x = b.input(node, 0, "last")
    dims = tuple(a - len(node.inputs[0].shape) - 1 for a in axes)  # negative: trailing
    dim = str(dims[0]) if len(dims) == 1 else str(dims)
    b.map_functional(node.layer)
    b.assign(f"{x.var} * torch.clamp(torch.rsqrt(({x.var} * {x.var}).sum({dim}, keepdim=True)),"
             " max=1e12)", ref=node.outputs[0], layout=x.layout, reuse=x,
             hint=node.layer.name)


@register(
    "GroupNormalization",
    family="normalization",
    torch="nn.GroupNorm",
    notes="channel axis last (Keras' default); groups, epsilon (1e-3), center and scale",
)
def group_norm(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    rank = len(node.inputs[0].shape) + 1
    if c.get("axis", -1) % rank != rank - 1:
        raise Unsupported(f"GroupNormalization over axis {c.get('axis')} (not the channels, "
                          "last)")
    x = b.input(node, 0, "last" if rank == 2 else "first")
    ch, groups = int(node.inputs[0].shape[-1]), int(c["groups"])
    groups = ch if groups == -1 else groups
    attr = b.add_module(layer, f"nn.GroupNorm({groups}, {ch}, eps={num(c.get('epsilon', 1e-3))})")
    for flag, key, var, fixed in (("scale", "weight", "gamma", 1.0), ("center", "bias", "beta",
                                                                      0.0)):
        if c.get(flag, True):
            b.weight(layer, getattr(layer, var), f"{attr}.{key}", arr(getattr(layer, var)),
                     f"as is ({var})")
        else:
            b.extra_tensor(f"{attr}.{key}", np.full(ch, fixed), f"Keras {flag}=False: {var} "
                                                                 f"fixed at {fixed:g}")
            b.init_extra.append(f"self.{attr}.{key}.requires_grad_(False)  # Keras {flag}=False")
    b.assign(f"self.{attr}({x.var})", ref=node.outputs[0], layout=x.layout, reuse=x,
             hint=layer.name)
