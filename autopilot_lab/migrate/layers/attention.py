"""The rules for MultiHeadAttention and Attention."""

from __future__ import annotations

from .. import weights as W
from ..keras_model import GraphNode
from ..translator import Builder, Unsupported
from .common import arr, cfg, init_weight, num
from .registry import register

MHA = '''
class MultiHeadAttention(nn.Module):
    """Keras MultiHeadAttention: per-head q/k/v projections, softmax over the keys."""

    def __init__(self, num_heads, head_dim, query_dim, key_dim, value_dim, output_dim,
                 value_head_dim=None, dropout=0.0, bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.value_head_dim = value_head_dim or head_dim
        self.query = nn.Linear(query_dim, num_heads * head_dim, bias=bias)
        self.key = nn.Linear(key_dim, num_heads * head_dim, bias=bias)
        self.value = nn.Linear(value_dim, num_heads * self.value_head_dim, bias=bias)
        self.output = nn.Linear(num_heads * self.value_head_dim, output_dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query, value, key=None, attention_mask=None, causal=False):
        key = value if key is None else key
        batch, q_len, k_len = query.shape[0], query.shape[1], key.shape[1]
        q = self.query(query).view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.key(key).view(batch, k_len, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.value(value).view(batch, k_len, self.num_heads, -1).transpose(1, 2)
        scores = (q / math.sqrt(self.head_dim)) @ k.transpose(-2, -1)  # (batch, heads, q, k)
        if causal:
            keep = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril()
            attention_mask = keep if attention_mask is None else attention_mask.bool() & keep
        if attention_mask is not None:
            # Keras adds a large negative number where the mask is 0
            scores = scores.masked_fill(~attention_mask.bool().unsqueeze(-3), -1e9)
        weights = self.dropout(scores.softmax(dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, q_len, -1)
        return self.output(out), weights
'''


@register(
    "MultiHeadAttention",
    family="attention",
    torch="MultiHeadAttention (q/k/v/o nn.Linear)",
    notes="rank-3 inputs, attention over the sequence axis; query/value/key, "
    "attention_mask, use_causal_mask, return_attention_scores",
)
def multi_head_attention(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    if c.get("attention_axes") not in (None, [1], (1,), -2, 1):
        raise Unsupported(f"MultiHeadAttention attention_axes={c.get('attention_axes')}")
    names = ["query", "value", "key"]
    call = dict(zip(names, node.args))
    call.update({k: v for k, v in node.kwargs.items()})
    for m in ("query_mask", "value_mask", "key_mask"):
        if call.get(m) is not None:
            raise Unsupported(f"MultiHeadAttention called with {m}")
    refs = {k: call.get(k) for k in ("query", "value", "key", "attention_mask")}
    if any(r is not None and len(r.shape) != 2 for k, r in refs.items() if k != "attention_mask"):
        raise Unsupported("MultiHeadAttention on inputs that are not (batch, seq, features)")
    q = b.value(refs["query"], "last")
    v = b.value(refs["value"], "last")
    k = b.value(refs["key"], "last") if refs["key"] is not None else v
    heads, hd = int(c["num_heads"]), int(c["key_dim"])
    vd = int(c.get("value_dim") or hd)
    out_dim = c.get("output_shape")
    out_dim = int(out_dim[-1] if isinstance(out_dim, (list, tuple)) else out_dim or q.shape[-1])
    bias = c.get("use_bias", True)
    b.helper("MultiHeadAttention", MHA)
    b.use("math")
    args = [
        f"num_heads={heads}",
        f"head_dim={hd}",
        f"query_dim={q.shape[-1]}",
        f"key_dim={k.shape[-1]}",
        f"value_dim={v.shape[-1]}",
        f"output_dim={out_dim}",
    ]
    if vd != hd:
        args.append(f"value_head_dim={vd}")
    if c.get("dropout"):
        args.append(f"dropout={num(c['dropout'])}")
    if not bias:
        args.append("bias=False")
    attr = b.add_module(layer, f"MultiHeadAttention({', '.join(args)})")
    subs = [
        ("query", layer._query_dense),
        ("key", layer._key_dense),
        ("value", layer._value_dense),
        ("output", layer._output_dense),
    ]
    b.default_init("linear", "nn.Linear")
    for nm, dense_ in subs:
        kern = arr(dense_.kernel)
        t, how = (W.mha_output_kernel if nm == "output" else W.mha_input_kernel)(kern)
        b.weight(layer, dense_.kernel, f"{attr}.{nm}.weight", t, how)
        init_weight(
            b, layer, c.get("kernel_initializer"), f"self.{attr}.{nm}.weight", kern.shape, t.shape
        )
        if bias:
            b.weight(
                layer, dense_.bias, f"{attr}.{nm}.bias", arr(dense_.bias).reshape(-1), "reshape(-1)"
            )
    call_args = [q.var, v.var]
    if refs["key"] is not None and refs["key"].key != refs["value"].key:
        call_args.append(f"key={k.var}")
    if refs["attention_mask"] is not None:
        call_args.append(f"attention_mask={b.value(refs['attention_mask'], 'last').var}")
    if call.get("use_causal_mask"):
        call_args.append("causal=True")
    _bind_attention(b, node, f"self.{attr}({', '.join(call_args)})", q,
                    bool(call.get("return_attention_scores")))


KERAS_ATTENTION = '''
class DotAttention(nn.Module):
    """Keras' Attention (Luong, score_mode "dot") and its "concat" (Bahdanau-style) score:
    softmax over the value steps of the query-key scores, a causal mask by subtracting 1e9 as
    Keras does, dropout on the weights in training."""

    def __init__(self, use_scale=False, concat=False, dropout=0.0, additive_dim=0):
        super().__init__()
        self.additive = bool(additive_dim)  # AdditiveAttention: sum(scale * tanh(q + k))
        scale_shape = (additive_dim,) if additive_dim else ()
        self.scale = nn.Parameter(torch.ones(scale_shape)) if use_scale else None
        self.concat_score_weight = nn.Parameter(torch.ones(())) if concat else None
        # no dropout module where Keras has none: parity compares the dropouts a forward calls
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, query, value, key=None, causal=False):
        key = value if key is None else key
        if self.additive:
            summed = torch.tanh(query.unsqueeze(-2) + key.unsqueeze(-3))
            scores = (summed if self.scale is None else self.scale * summed).sum(-1)
        elif self.concat_score_weight is None:
            scores = query @ key.transpose(-2, -1)
            if self.scale is not None:
                scores = scores * self.scale
        else:
            summed = query.unsqueeze(-2) + key.unsqueeze(-3)
            if self.scale is not None:
                summed = self.scale * summed
            scores = self.concat_score_weight * torch.tanh(summed).sum(-1)
        if causal:
            steps = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device)
            scores = torch.where(steps.tril(), scores, scores - 1e9)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return weights @ value, weights
'''


@register(
    "Attention",
    "AdditiveAttention",
    family="attention",
    torch="DotAttention",
    notes="[query, value] or [query, value, key] of rank 3; score_mode dot or concat, "
    "additive (Bahdanau) scores, use_scale, dropout, use_causal_mask, "
    "return_attention_scores; masks are flagged",
)
def dot_attention(b: Builder, node: GraphNode) -> None:
    layer, c = node.layer, cfg(node.layer)
    additive = type(layer).__name__ == "AdditiveAttention"
    if not additive and c.get("score_mode", "dot") not in ("dot", "concat"):
        raise Unsupported(f"Attention score_mode={c.get('score_mode')!r}")
    refs = list(node.inputs)
    if len(refs) not in (2, 3) or any(len(r.shape) != 2 for r in refs):
        raise Unsupported("Attention on inputs that are not [query, value(, key)] of shape "
                          "(batch, steps, features)")
    q, v = b.value(refs[0], "last"), b.value(refs[1], "last")
    b.helper("DotAttention", KERAS_ATTENTION)
    args = []
    if c.get("use_scale"):
        args.append("use_scale=True")
    if c.get("score_mode") == "concat" and not additive:
        args.append("concat=True")
    if additive:
        args.append(f"additive_dim={int(q.shape[-1])}")
    if c.get("dropout"):
        args.append(f"dropout={num(c['dropout'])}")
    attr = b.add_module(layer, f"DotAttention({', '.join(args)})")
    if layer.scale is not None:
        b.weight(layer, layer.scale, f"{attr}.scale", arr(layer.scale), "as is")
        if additive:  # glorot_uniform over the feature axis in Keras
            shape = tuple(int(d) for d in layer.scale.shape)
            init_weight(b, layer, "GlorotUniform", f"self.{attr}.scale", shape, shape,
                        default="(always)")
    if getattr(layer, "concat_score_weight", None) is not None:
        b.weight(layer, layer.concat_score_weight, f"{attr}.concat_score_weight",
                 arr(layer.concat_score_weight), "as is")
    call_args = [q.var, v.var]
    if len(refs) == 3 and refs[2].key != refs[1].key:
        call_args.append(f"key={b.value(refs[2], 'last').var}")
    if node.kwargs.get("use_causal_mask"):
        call_args.append("causal=True")
    _bind_attention(b, node, f"self.{attr}({', '.join(call_args)})", q,
                    bool(node.kwargs.get("return_attention_scores")))


def _bind_attention(b: Builder, node: GraphNode, expr: str, q, with_scores: bool) -> None:
    """An attention module returns (output, weights): both bound when Keras returns the
    scores too, else the output alone."""
    name = node.layer.name
    if with_scores:
        out, scores = b.fresh_var(name), b.fresh_var(f"{name}_scores")
        b.emit(f"{out}, {scores} = {expr}")
        b.bind(node.outputs[0], out)
        b.bind(node.outputs[1], scores)
    else:
        b.assign(f"{expr}[0]", ref=node.outputs[0], reuse=q, hint=name)
