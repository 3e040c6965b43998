"""Rules for the core layers: InputLayer, Identity, Dense and EinsumDense."""

from __future__ import annotations

from .. import weights as W
from ..keras_model import GraphNode
from ..translator import Builder, Unsupported
from .common import apply_activation, arr, cfg, init_weight, passthrough
from .registry import register


@register("InputLayer", family="core", torch="(forward argument)")
def input_layer(b: Builder, node: GraphNode) -> None:
    passthrough(b, node)


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


EINSUM_DENSE = '''
class EinsumDense(nn.Module):
    """Keras' EinsumDense: einsum(equation, x, kernel) + bias, the kernel in Keras' layout
    (torch.einsum reads the same equation)."""

    def __init__(self, equation, kernel_shape, bias_shape=None):
        super().__init__()
        self.equation = equation
        self.kernel = nn.Parameter(torch.empty(kernel_shape))
        self.bias = nn.Parameter(torch.zeros(bias_shape)) if bias_shape is not None else None

    def forward(self, x):
        y = torch.einsum(self.equation, x, self.kernel)
        return y if self.bias is None else y + self.bias
'''


@register("EinsumDense", family="core", torch="EinsumDense (torch.einsum, Keras' kernel layout)",
          notes="any equation torch.einsum reads; bias_axes; activation")
def einsum_dense(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    if c.get("lora_rank") or getattr(layer, "quantization_mode", None):
        raise Unsupported("LoRA / quantized EinsumDense kernels are not translated")
    x = b.input(node, 0, "last")
    b.helper("EinsumDense", EINSUM_DENSE)
    kshape = tuple(int(d) for d in layer.kernel.shape)
    bias = getattr(layer, "bias", None)
    bshape = None if bias is None else tuple(int(d) for d in bias.shape)
    attr = b.add_module(layer, f"EinsumDense({c['equation']!r}, {kshape}"
                               + (f", {bshape})" if bshape is not None else ")"))
    b.weight(layer, layer.kernel, f"{attr}.kernel", arr(layer.kernel), "as is (Keras layout)")
    # the helper's kernel starts empty: the init line is always written
    init_weight(b, layer, c.get("kernel_initializer"), f"self.{attr}.kernel", kshape, kshape,
                default="(always)")
    if bias is not None:
        b.weight(layer, bias, f"{attr}.bias", arr(bias), "as is")
        init_weight(b, layer, c.get("bias_initializer"), f"self.{attr}.bias", bshape, bshape,
                    default="Zeros")
    y = b.assign(f"self.{attr}({x.var})", ref=node.outputs[0], reuse=x, hint=layer.name)
    apply_activation(b, c.get("activation"), y, node.outputs[0])
