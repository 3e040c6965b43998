"""Rules for layers defined inside keras.applications rather than keras.layers:
LayerScale (ConvNeXt), CustomScaleLayer (InceptionResNetV2) and StochasticDepth."""

from __future__ import annotations

from ..keras_model import GraphNode
from ..translator import Builder, Unsupported
from .common import _module_call, arr, cfg, merge_inputs, num
from .registry import register
from .regularization import DROP_PATH

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
