"""The rule for TimeDistributed: it applies the inner layer's own rule, folding time
into the batch."""

from __future__ import annotations

from ..keras_model import GraphNode, TensorRef
from ..translator import Builder, Unsupported
from .registry import missing_reason, register, rule_for


@register(
    "TimeDistributed",
    family="wrapper",
    torch="inner layer on (batch * time, ...)",
    notes="Dense runs directly on the last axis; others fold time into the batch",
)
def time_distributed(b: Builder, node: GraphNode) -> None:
    layer = node.layer
    inner = layer.layer
    rule = rule_for(inner)
    if rule is None:
        raise Unsupported(f"TimeDistributed({type(inner).__name__}): {missing_reason(inner)}")
    b._attrs[id(inner)] = b.attr_name(layer)
    if type(inner).__name__ == "Dense":
        fake = GraphNode(
            layer=inner,
            args=(node.inputs[0],),
            kwargs={},
            outputs=node.outputs,
            scope=node.scope,
            inputs=list(node.inputs),
        )
        saved, b._node = b._node, fake
        rule(b, fake)
        b._node = saved
        b.layer_map[layer.name] = b._attrs[id(inner)]
        return
    x = b.input(node, 0, "last")
    steps = node.inputs[0].shape[0]
    folded_ref = TensorRef(
        ("td_in", id(node)), tuple(x.shape[1:]), x.dtype, name=f"{layer.name}_in"
    )
    out_ref = node.outputs[0]
    inner_out = TensorRef(
        ("td_out", id(node)), tuple(out_ref.shape[1:]), out_ref.dtype, name=f"{layer.name}_out"
    )
    folded = b.fresh_var(f"{layer.name}_steps")
    b.emit(f"{folded} = {x.var}.flatten(0, 1)  # TimeDistributed: fold time into the batch")
    b.bind(folded_ref, folded)
    b._records[folded_ref.key].remaining = 1
    fake = GraphNode(
        layer=inner,
        args=(folded_ref,),
        kwargs={},
        outputs=[inner_out],
        scope=node.scope,
        inputs=[folded_ref],
    )
    saved, b._node = b._node, fake
    rule(b, fake)
    b._node = saved
    b._records[folded_ref.key].remaining = 0
    y = b.value(inner_out, "last")
    t = str(steps) if steps is not None else f"{x.var}.shape[1]"
    b.assign(f"{y.var}.unflatten(0, (-1, {t}))", ref=out_ref, hint=layer.name)
    b.layer_map[layer.name] = b._attrs[id(inner)]
