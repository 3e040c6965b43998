"""Rules for the activation layers: Activation, ReLU, LeakyReLU, ELU, Softmax, PReLU.

The `activation=` argument of other layers is handled by `common.apply_activation`.
"""

from __future__ import annotations

from ..keras_model import GraphNode
from ..translator import Builder, Unsupported
from .common import (
    ACTIVATIONS,
    _activation_name,
    _module_call,
    activation_expr,
    arr,
    cfg,
    init_weight,
    num,
    passthrough,
)
from .registry import register


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


KERAS_RELU = '''
class KerasReLU(nn.Module):
    """Keras' ReLU with a threshold, a maximum and a negative slope, in Keras' order: x above
    the threshold (else 0), clipped to [0, max_value], minus the slope times how far below
    the threshold x is."""

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0):
        super().__init__()
        self.max_value, self.negative_slope, self.threshold = (max_value, negative_slope,
                                                               threshold)

    def forward(self, x):
        y = (torch.where(x > self.threshold, x, torch.zeros_like(x)) if self.threshold
             else torch.relu(x))
        if self.max_value is not None:
            y = torch.clamp(y, 0.0, self.max_value)
        if self.negative_slope:
            y = y - self.negative_slope * torch.relu(self.threshold - x)
        return y
'''


@register("ReLU", family="activation",
          torch="nn.ReLU / nn.ReLU6 / nn.LeakyReLU / nn.Hardtanh / KerasReLU",
          notes="threshold, max_value and negative_slope in any combination")
def relu_layer(b: Builder, node: GraphNode) -> None:
    c = cfg(node.layer)
    x = b.input(node)
    mv, slope, th = (
        c.get("max_value"),
        float(c.get("negative_slope") or 0),
        float(c.get("threshold") or 0),
    )
    if th != 0 or (mv is not None and slope != 0):
        b.helper("KerasReLU", KERAS_RELU)
        ctor = (f"KerasReLU(max_value={'None' if mv is None else num(mv)}, "
                f"negative_slope={num(slope)}, threshold={num(th)})")
    elif mv is None and slope == 0:
        ctor = "nn.ReLU()"
    elif mv is not None and slope == 0:
        ctor = "nn.ReLU6()" if float(mv) == 6.0 else f"nn.Hardtanh(0.0, {num(mv)})"
    else:
        ctor = f"nn.LeakyReLU({num(slope)})"
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
