"""Rules for the recurrent layers: LSTM, GRU, SimpleRNN and Bidirectional."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import weights as W
from ..keras_model import GraphNode
from ..translator import Builder, Unsupported
from .common import _activation_name, _init_cfg, arr, cfg
from .registry import register


def _rnn_spec(layer: Any) -> tuple[str, int, dict]:
    """(torch class, units, config) after checking the recurrent layer maps exactly."""
    c = cfg(layer)
    kind = type(layer).__name__
    if kind not in ("LSTM", "GRU", "SimpleRNN"):
        raise Unsupported(f"recurrent layer {kind} is not translated")
    if c.get("stateful"):
        raise Unsupported(f"{kind}(stateful=True) carries state across batches")
    act = _activation_name(c.get("activation"))
    if kind == "SimpleRNN":
        if act not in ("tanh", "relu"):
            raise Unsupported(f"SimpleRNN activation {act!r}: nn.RNN has tanh or relu")
    else:
        rec = _activation_name(c.get("recurrent_activation"))
        if act != "tanh" or rec != "sigmoid":
            raise Unsupported(
                f"{kind} with activation={act!r}, recurrent_activation={rec!r}: nn.{kind} "
                f"hard-codes tanh/sigmoid"
            )
    if kind == "GRU" and not c.get("reset_after", True):
        raise Unsupported(
            "GRU(reset_after=False) applies the reset gate before the recurrent "
            "kernel; nn.GRU only has the reset_after=True form"
        )
    torch_cls = {"LSTM": "nn.LSTM", "GRU": "nn.GRU", "SimpleRNN": "nn.RNN"}[kind]
    return torch_cls, int(c["units"]), c


def _rnn_weights(b: Builder, layer: Any, attr: str, suffix: str, kind: str, bias: bool) -> None:
    cell = layer.cell
    k, r = arr(cell.kernel), arr(cell.recurrent_kernel)
    gate = ""
    if kind == "GRU":
        k, r = W.gru_gates(k), W.gru_gates(r)
        gate = "; gates z,r,h -> r,z,n"
    elif kind == "LSTM":
        gate = "; gates i,f,c,o -> i,f,g,o (same order)"
    b.weight(layer, cell.kernel, f"{attr}.weight_ih_{suffix}", k.T, f"transpose(1, 0){gate}")
    b.weight(
        layer, cell.recurrent_kernel, f"{attr}.weight_hh_{suffix}", r.T, f"transpose(1, 0){gate}"
    )
    if not bias:
        return
    bb = arr(cell.bias)
    if kind == "GRU":
        bb = W.gru_gates(bb)
        b.weight(layer, cell.bias, f"{attr}.bias_ih_{suffix}", bb[0], "row 0 (input bias)" + gate)
        b.weight(
            layer, cell.bias, f"{attr}.bias_hh_{suffix}", bb[1], "row 1 (recurrent bias)" + gate
        )
        return
    b.weight(layer, cell.bias, f"{attr}.bias_ih_{suffix}", bb, "as is" + gate)
    b.extra_tensor(
        f"{attr}.bias_hh_{suffix}",
        np.zeros_like(bb),
        f"Keras {kind} has one bias; torch's second bias stays frozen at 0",
    )
    line = f"self.{attr}.bias_hh_{suffix}.requires_grad_(False)"
    if not any(ln.startswith("# Keras") and "one bias" in ln for ln in b.init_extra):
        b.init_extra.append("# Keras RNNs have one bias: bias_ih plays it, bias_hh stays 0")
    b.init_extra.append(line)


def _rnn_notes(b: Builder, layer: Any, c: dict) -> None:
    if c.get("dropout") or c.get("recurrent_dropout"):
        b.note(
            f"{layer.name}: Keras dropout={c.get('dropout')}, recurrent_dropout="
            f"{c.get('recurrent_dropout')} inside the recurrence are not reproduced "
            f"(inference is exact; training differs)"
        )
    for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
        name, _ = _init_cfg(c.get(key))
        if name not in ("GlorotUniform", "Orthogonal", "Zeros"):
            b.note(f"{layer.name}: {key}={name} not reproduced (torch loop init used)")


def _rnn_ctor(torch_cls: str, n_in: int, units: int, c: dict, bidirectional: bool) -> str:
    args = [str(n_in), str(units), "batch_first=True"]
    if torch_cls == "nn.RNN" and _activation_name(c.get("activation")) == "relu":
        args.append('nonlinearity="relu"')
    if not c.get("use_bias", True):
        args.append("bias=False")
    if bidirectional:
        args.append("bidirectional=True")
    return f"{torch_cls}({', '.join(args)})"


@register(
    "LSTM",
    "GRU",
    "SimpleRNN",
    family="recurrent",
    torch="nn.LSTM / nn.GRU / nn.RNN",
    notes="batch_first; return_sequences, return_state, initial_state, go_backwards; other "
    "activations and GRU reset_after=False as an explicit loop (KerasGRULoop, KerasLSTMLoop: "
    "return_sequences, go_backwards), outside Bidirectional",
)
def recurrent(b: Builder, node: GraphNode) -> None:
    layer = node.layer
    if _needs_loop(type(layer).__name__, cfg(layer)):
        _recurrent_loop(b, node)
        return
    torch_cls, units, c = _rnn_spec(layer)
    kind = type(layer).__name__
    if node.kwargs.get("mask") is not None:
        raise Unsupported(f"{kind} called with an explicit mask")
    x = b.value(node.args[0], "last")
    # go_backwards: Keras reads the steps last to first and returns them in that order
    steps = f"{x.var}.flip(1)" if c.get("go_backwards") else x.var
    init = node.kwargs.get("initial_state")
    if init is None and len(node.args) > 1:
        init = node.args[1]
    attr = b.add_module(layer, _rnn_ctor(torch_cls, int(x.shape[-1]), units, c, False))
    _rnn_weights(b, layer, attr, "l0", kind, c.get("use_bias", True))
    b.default_init("rnn")
    _rnn_notes(b, layer, c)
    call = f"self.{attr}({steps}"
    if init is not None:
        states = [
            b.value(r, "last").var for r in (init if isinstance(init, (list, tuple)) else [init])
        ]
        states = [f"{s}.unsqueeze(0)" for s in states]
        call += f", ({', '.join(states)})" if kind == "LSTM" else f", {states[0]}"
    call += ")"
    seq = c.get("return_sequences", False)
    outs = node.outputs
    if not c.get("return_state"):
        if seq:
            b.assign(f"{call}[0]", ref=outs[0], reuse=x, hint=layer.name)
        else:
            y = b.assign(f"{call}[0]", ref=outs[0], reuse=x, hint=layer.name)
            b.emit(f"{y.var} = {y.var}[:, -1]  # return_sequences=False: the last step")
        return
    out = b.fresh_var(layer.name)
    h = b.fresh_var(f"{layer.name}_h")
    if kind == "LSTM":
        cc = b.fresh_var(f"{layer.name}_c")
        b.emit(f"{out}, ({h}, {cc}) = {call}")
    else:
        b.emit(f"{out}, {h} = {call}")
    if not seq:
        b.emit(f"{out} = {out}[:, -1]  # return_sequences=False: the last step")
    b.bind(outs[0], out)
    b.emit(f"{h} = {h}[0]")
    b.bind(outs[1], h)
    if kind == "LSTM":
        b.emit(f"{cc} = {cc}[0]")
        b.bind(outs[2], cc)


@register(
    "Bidirectional",
    family="recurrent",
    torch="nn.LSTM/GRU/RNN(bidirectional=True)",
    notes="merge_mode concat/sum/ave/mul/None; return_state not supported",
)
def bidirectional(b: Builder, node: GraphNode) -> None:
    layer = node.layer
    fwd, bwd = layer.forward_layer, layer.backward_layer
    torch_cls, units, c = _rnn_spec(fwd)
    _, units_b, cb = _rnn_spec(bwd)
    kind = type(fwd).__name__
    if type(bwd) is not type(fwd) or units_b != units:
        raise Unsupported("Bidirectional with different forward and backward layers")
    if c.get("return_state") or c.get("go_backwards"):
        raise Unsupported("Bidirectional with return_state / go_backwards forward layer")
    if any(v is not None for k, v in node.kwargs.items() if k != "training"):
        raise Unsupported("Bidirectional called with a mask or initial state")
    x = b.input(node, 0, "last")
    attr = b.add_module(layer, _rnn_ctor(torch_cls, int(x.shape[-1]), units, c, True))
    _rnn_weights(b, fwd, attr, "l0", kind, c.get("use_bias", True))
    _rnn_weights(b, bwd, attr, "l0_reverse", kind, c.get("use_bias", True))
    b.layer_map.setdefault(fwd.name, attr)
    b.layer_map.setdefault(bwd.name, attr)
    b.default_init("rnn")
    _rnn_notes(b, fwd, c)
    mode = layer.merge_mode
    seq = c.get("return_sequences", False)
    if seq:
        y = b.assign(f"self.{attr}({x.var})[0]", ref=node.outputs[0], reuse=x, hint=layer.name)
        both = y.var
    else:
        h = b.fresh_var(f"{layer.name}_h")
        if kind == "LSTM":
            b.emit(f"_, ({h}, _) = self.{attr}({x.var})  # final states: [forward, backward]")
        else:
            b.emit(f"_, {h} = self.{attr}({x.var})  # final states: [forward, backward]")
        if mode == "concat":
            b.assign(f"torch.cat([{h}[0], {h}[1]], dim=-1)", ref=node.outputs[0], hint=layer.name)
            return
        both = None
    if mode == "concat":
        return
    if seq:
        fw, bw = b.fresh_var("forward"), b.fresh_var("backward")
        b.emit(f"{fw}, {bw} = {both}.chunk(2, dim=-1)")
    else:
        fw, bw = f"{h}[0]", f"{h}[1]"
    if mode is None:
        b.bind(node.outputs[0], fw)
        b.bind(node.outputs[1], bw)
        return
    expr = {"sum": f"{fw} + {bw}", "ave": f"({fw} + {bw}) / 2", "mul": f"{fw} * {bw}"}.get(mode)
    if expr is None:
        raise Unsupported(f"Bidirectional merge_mode={mode!r}")
    b.assign(expr, ref=node.outputs[0], hint=layer.name)


GRU_LOOP = '''
class KerasGRULoop(nn.Module):
    """Keras' GRU step by step, for what nn.GRU cannot express: reset_after=False (the reset
    gate scales the state before the recurrent kernel) and other activations. Kernels in
    Keras' layout and gate order (z, r, h); batch first; with go_backwards the steps (and a
    returned sequence) run from the last to the first, as in Keras."""

    def __init__(self, input_size, units, bias=True, reset_after=True, activation=None,
                 recurrent_activation=None, return_sequences=False, go_backwards=False):
        super().__init__()
        self.units, self.reset_after = units, reset_after
        self.return_sequences, self.go_backwards = return_sequences, go_backwards
        self.activation = activation or nn.Tanh()
        self.recurrent_activation = recurrent_activation or nn.Sigmoid()
        self.kernel = nn.Parameter(torch.empty(input_size, 3 * units))
        self.recurrent_kernel = nn.Parameter(torch.empty(units, 3 * units))
        shape = (2, 3 * units) if reset_after else (3 * units,)
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(self, x):
        u, act, gate = self.units, self.activation, self.recurrent_activation
        xs = x @ self.kernel
        rec_bias = 0.0
        if self.bias is not None:
            xs = xs + (self.bias[0] if self.reset_after else self.bias)
            rec_bias = self.bias[1] if self.reset_after else 0.0
        h = x.new_zeros(x.shape[0], u)
        steps = range(x.shape[1] - 1, -1, -1) if self.go_backwards else range(x.shape[1])
        outputs = []
        for t in steps:
            x_z, x_r, x_h = xs[:, t].split(u, dim=-1)
            if self.reset_after:
                r_z, r_r, r_h = (h @ self.recurrent_kernel + rec_bias).split(u, dim=-1)
                z, r = gate(x_z + r_z), gate(x_r + r_r)
                candidate = act(x_h + r * r_h)
            else:
                rec_z, rec_r, rec_h = self.recurrent_kernel.split(u, dim=-1)
                z, r = gate(x_z + h @ rec_z), gate(x_r + h @ rec_r)
                candidate = act(x_h + (r * h) @ rec_h)
            h = z * h + (1 - z) * candidate
            outputs.append(h)
        return torch.stack(outputs, dim=1) if self.return_sequences else h
'''

LSTM_LOOP = '''
class KerasLSTMLoop(nn.Module):
    """Keras' LSTM step by step, for activations nn.LSTM hard-codes (tanh, sigmoid). Kernels
    in Keras' layout and gate order (i, f, c, o); batch first; go_backwards as in Keras."""

    def __init__(self, input_size, units, bias=True, activation=None,
                 recurrent_activation=None, return_sequences=False, go_backwards=False):
        super().__init__()
        self.units, self.return_sequences, self.go_backwards = (units, return_sequences,
                                                                go_backwards)
        self.activation = activation or nn.Tanh()
        self.recurrent_activation = recurrent_activation or nn.Sigmoid()
        self.kernel = nn.Parameter(torch.empty(input_size, 4 * units))
        self.recurrent_kernel = nn.Parameter(torch.empty(units, 4 * units))
        self.bias = nn.Parameter(torch.zeros(4 * units)) if bias else None

    def forward(self, x):
        u, act, gate = self.units, self.activation, self.recurrent_activation
        xs = x @ self.kernel
        if self.bias is not None:
            xs = xs + self.bias
        h = c = x.new_zeros(x.shape[0], u)
        steps = range(x.shape[1] - 1, -1, -1) if self.go_backwards else range(x.shape[1])
        outputs = []
        for t in steps:
            i, f, g, o = (xs[:, t] + h @ self.recurrent_kernel).split(u, dim=-1)
            c = gate(f) * c + gate(i) * act(g)
            h = gate(o) * act(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1) if self.return_sequences else h
'''


def _needs_loop(kind: str, c: dict) -> bool:
    """A GRU or LSTM nn.GRU / nn.LSTM cannot express: other activations, or reset_after=False."""
    if kind not in ("GRU", "LSTM"):
        return False
    acts = (_activation_name(c.get("activation")), _activation_name(
        c.get("recurrent_activation")))
    return acts != ("tanh", "sigmoid") or (kind == "GRU" and not c.get("reset_after", True))


def _recurrent_loop(b: Builder, node: GraphNode) -> None:
    """GRU or LSTM as an explicit loop in Keras' layout (outside Bidirectional)."""
    from .common import ACTIVATIONS, init_weight

    layer, c = node.layer, cfg(node.layer)
    kind = type(layer).__name__
    mods = []
    for key in ("activation", "recurrent_activation"):
        name = _activation_name(c.get(key))
        module = ACTIVATIONS.get("gelu" if name == "gelu_approximate" else name, (None, None))[1]
        if module is None:
            raise Unsupported(f"{kind} with {key}={name!r}: no torch module for it")
        mods.append(f"{key}={module}")
    if c.get("stateful") or c.get("return_state"):
        raise Unsupported(f"{kind} as an explicit loop with stateful or return_state")
    if node.kwargs.get("initial_state") is not None or len(node.args) > 1:
        raise Unsupported(f"{kind} as an explicit loop with an initial_state")
    x = b.value(node.args[0], "last")
    units, bias = int(c["units"]), c.get("use_bias", True)
    b.helper(f"Keras{kind}Loop", GRU_LOOP if kind == "GRU" else LSTM_LOOP)
    args = [str(int(x.shape[-1])), str(units)]
    if not bias:
        args.append("bias=False")
    if kind == "GRU" and not c.get("reset_after", True):
        args.append("reset_after=False")
    args += mods
    if c.get("return_sequences"):
        args.append("return_sequences=True")
    if c.get("go_backwards"):
        args.append("go_backwards=True")
    attr = b.add_module(layer, f"Keras{kind}Loop({', '.join(args)})")
    cell = layer.cell
    gates = "z, r, h" if kind == "GRU" else "i, f, c, o"
    for var, key, default in ((cell.kernel, "kernel", "GlorotUniform"),
                              (cell.recurrent_kernel, "recurrent_kernel", "Orthogonal")):
        shape = tuple(int(d) for d in var.shape)
        b.weight(layer, var, f"{attr}.{key}", arr(var), f"as is (Keras layout, gates {gates})")
        init_weight(b, layer, c.get(f"{key}_initializer") or default, f"self.{attr}.{key}",
                    shape, shape, default="(always)")
    if bias:
        b.weight(layer, cell.bias, f"{attr}.bias", arr(cell.bias), "as is")
    _rnn_notes(b, layer, c)
    b.assign(f"self.{attr}({x.var})", ref=node.outputs[0], reuse=x, hint=layer.name)
