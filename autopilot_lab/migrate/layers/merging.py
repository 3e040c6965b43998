"""Rules for the merging layers: Add, Subtract, Multiply, Average, Maximum, Minimum,
Concatenate and Dot."""

from __future__ import annotations

from ..keras_model import GraphNode
from ..translator import Builder, Unsupported
from .common import cfg, merge_inputs
from .registry import register


@register(
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    family="merging",
    torch="+ - * / torch.maximum torch.minimum",
)
def merge(b: Builder, node: GraphNode) -> None:
    name = type(node.layer).__name__
    vals = merge_inputs(b, node)
    vs = [v.var for v in vals]
    if name == "Add":
        expr = " + ".join(vs)
    elif name == "Subtract":
        expr = f"{vs[0]} - {vs[1]}"
    elif name == "Multiply":
        expr = " * ".join(vs)
    elif name == "Average":
        expr = f"({' + '.join(vs)}) / {len(vs)}"
    else:
        fn = "torch.maximum" if name == "Maximum" else "torch.minimum"
        expr = vs[0]
        for v in vs[1:]:
            expr = f"{fn}({expr}, {v})"
    b.map_functional(node.layer)
    b.assign(expr, ref=node.outputs[0], layout=vals[0].layout, reuse=vals, hint=node.layer.name)


@register("Concatenate", family="merging", torch="torch.cat(dim)")
def concatenate(b: Builder, node: GraphNode) -> None:
    axis = int(cfg(node.layer).get("axis", -1))
    vals = merge_inputs(b, node)
    dim = vals[0].torch_dim(axis)
    b.map_functional(node.layer)
    b.assign(
        f"torch.cat([{', '.join(v.var for v in vals)}], dim={dim})",
        ref=node.outputs[0],
        layout=vals[0].layout,
        hint=node.layer.name,
    )


@register(
    "Dot",
    family="merging",
    torch="(a * b).sum / torch.bmm",
    notes="rank-2 or rank-3 inputs; normalize=True -> F.normalize",
)
def dot(b: Builder, node: GraphNode) -> None:
    c = cfg(node.layer)
    axes = c.get("axes")
    a, v = (b.value(r, "last") for r in node.inputs)
    ranks = (a.rank, v.rank)
    ax = tuple(axes) if isinstance(axes, (list, tuple)) else (axes, axes)
    ax = (ax[0] % ranks[0], ax[1] % ranks[1])
    av, vv = a.var, v.var
    if c.get("normalize"):
        b.use("F")
        av, vv = f"F.normalize({av}, dim={ax[0]})", f"F.normalize({vv}, dim={ax[1]})"
    b.map_functional(node.layer)
    if ranks == (2, 2):
        expr = f"({av} * {vv}).sum(dim=1, keepdim=True)"
    elif ranks == (3, 3):
        left = av if ax[0] == 2 else f"{av}.transpose(1, 2)"
        right = vv if ax[1] == 1 else f"{vv}.transpose(1, 2)"
        expr = f"{left} @ {right}"
    else:
        raise Unsupported(f"Dot of rank {ranks} tensors is not translated")
    b.assign(expr, ref=node.outputs[0], hint=node.layer.name)
