"""The rule for Embedding."""

from __future__ import annotations

from ..keras_model import GraphNode
from ..translator import Builder
from .common import _init_cfg, arr, cfg, init_weight
from .registry import register


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
