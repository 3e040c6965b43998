"""Walk a Keras graph and emit one readable PyTorch module (`model.py`) plus its weights.

The walk keeps track of each tensor's layout: Keras is channels-last, torch convolutions are
channels-first, so a tensor is permuted only where a layer needs the other layout (once after
the input, once before Flatten or a Dense, ...), the way a person would write it.
"""

from __future__ import annotations

import builtins
import json
import keyword
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .keras_model import GraphNode, MigrationError, TensorRef, load_keras_model, model_graph

__all__ = ["Translation", "UnsupportedLayer", "Unsupported", "Builder", "Value", "translate"]


@dataclass(frozen=True)
class UnsupportedLayer:
    """A Keras layer the translator has no exact rule for; model.py holds a stub for it."""

    name: str
    cls: str
    reason: str
    config: dict


@dataclass(frozen=True)
class Translation:
    """The emitted source, its weights, and the maps that tie them back to Keras."""

    source: str
    class_name: str
    state_dict: dict[str, np.ndarray]
    weight_map: tuple[dict, ...]
    layer_map: dict[str, str]
    inputs: tuple[dict, ...]
    outputs: tuple[dict, ...]
    unsupported: tuple[UnsupportedLayer, ...]
    recipe: dict
    notes: tuple[str, ...]

    def torch_state_dict(self) -> dict:
        """The state_dict as torch tensors, ready for `model.load_state_dict`."""
        import torch

        # np.require, not np.ascontiguousarray: that makes a 0-d (scalar) weight 1-d
        return {k: torch.from_numpy(np.require(v, requirements="C"))
                for k, v in self.state_dict.items()}


class Unsupported(Exception):
    """Raised by a layer rule: this call of the layer cannot be translated exactly (why)."""


# Names the emitted forward must not shadow.
_RESERVED = {"self", "torch", "nn", "F", "math", "x", "input", "sum", "max", "min", "type", "id"}
_LAYOUT_LETTERS = {3: ("NLC", "NCL"), 4: ("NHWC", "NCHW"), 5: ("NDHWC", "NCDHW")}


def snake(name: str) -> str:
    """A valid snake_case identifier from a Keras name."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    s = re.sub(r"[^0-9a-zA-Z]+", "_", s).strip("_").lower() or "layer"
    if s[0].isdigit():
        s = f"layer_{s}"
    if keyword.iskeyword(s):
        s = f"{s}_"
    return s


def camel(name: str) -> str:
    parts = [p for p in re.split(r"[^0-9a-zA-Z]+", name) if p]
    s = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    return f"Model{s}" if s[0].isdigit() else s


@dataclass
class Value:
    """A tensor of the emitted forward: its variable, Keras shape (no batch) and layout."""

    var: str
    shape: tuple
    layout: str  # "last": Keras layout; "first": Keras' last axis moved to dim 1
    dtype: str = "float32"
    masked: bool = False

    @property
    def rank(self) -> int:
        return len(self.shape) + 1

    def torch_dim(self, keras_axis: int) -> int:
        """The torch dim of a Keras axis (batch included, negative allowed) in this layout."""
        a = keras_axis % self.rank
        if self.layout == "last" and a == self.rank - 1:
            return -1
        if self.layout == "last" or a == 0:
            return a
        return 1 if a == self.rank - 1 else a + 1


@dataclass
class _Record:
    vars: dict = field(default_factory=dict)  # layout -> Value
    remaining: int = 0
    is_output: bool = False


class Builder:
    """Collects what the rules emit: modules, forward lines, weights, init code, helpers."""

    def __init__(self, class_name: str):
        self.class_name = class_name
        self.modules: dict[str, str] = {}  # attr -> constructor expression
        self.module_comments: dict[str, str] = {}
        self.init_extra: list[str] = []  # lines in __init__ after the modules
        self.init_types: set[str] = set()  # default-init families used ("linear", "rnn", ...)
        self.init_classes: set[str] = set()  # torch classes the 'linear' family covers
        self.init_lines: list[str] = []  # explicit lines in _init_weights
        self.helpers: dict[str, str] = {}  # name -> source of a helper class or function
        self.lines: list[str] = []
        self.state_dict: dict[str, np.ndarray] = {}
        self.weight_map: list[dict] = []
        self.layer_map: dict[str, str] = {}
        self.unsupported: list[UnsupportedLayer] = []
        self.notes: list[str] = []
        self.imports: set[str] = set()
        self._attrs: dict[int, str] = {}
        self._names: set[str] = set()
        self._vars: set[str] = set(_RESERVED) - {"x"}
        self._records: dict[Any, _Record] = {}
        self._mapped_vars: set[int] = set()
        self._node: GraphNode | None = None
        self._conversion_noted = False

    # ----- names -----------------------------------------------------------------------------
    def attr_name(self, layer: Any, scope: str = "") -> str:
        """The (stable, unique) submodule attribute for a Keras layer."""
        if id(layer) in self._attrs:
            return self._attrs[id(layer)]
        import torch.nn as nn

        base = snake(layer.name)
        if hasattr(nn.Module, base) or base in _RESERVED:
            base = f"{base}_layer"
        name = base
        if name in self._names and scope:
            name = f"{snake(scope)}_{base}"
        i = 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        self._attrs[id(layer)] = name
        return name

    def fresh_var(self, hint: str) -> str:
        base = snake(hint)
        if base in _RESERVED or hasattr(builtins, base):
            base = f"{base}_out"
        name, i = base, 1
        while name in self._vars:
            name = f"{base}_{i}"
            i += 1
        self._vars.add(name)
        return name

    # ----- modules, weights, init ---------------------------------------------------------------
    def has_module(self, layer: Any) -> bool:
        return id(layer) in self._attrs and self._attrs[id(layer)] in self.modules

    def add_module(
        self, layer: Any, ctor: str, *, comment: str = "", key: str | None = None
    ) -> str:
        """Declare `self.<attr> = ctor` once per layer (shared layers reuse it). Returns attr."""
        attr = self.attr_name(layer, self._node.scope if self._node else "")
        if key is not None:
            attr = key
        if attr not in self.modules:
            self.modules[attr] = ctor
            if comment:
                self.module_comments[attr] = comment
            self._map_layer(layer, attr)
        return attr

    def _map_layer(self, layer: Any, attr: str) -> None:
        scope = self._node.scope if self._node else ""
        self.layer_map[f"{scope}{layer.name}"] = attr

    def map_functional(self, layer: Any) -> None:
        """A layer emitted as plain tensor code (no submodule): layer_map gets ''."""
        scope = self._node.scope if self._node else ""
        self.layer_map.setdefault(f"{scope}{layer.name}", "")

    def weight(
        self,
        layer: Any,
        variable: Any,
        key: str,
        array: np.ndarray,
        transform: str,
        *,
        buffer: bool = False,
    ) -> None:
        """Record one Keras weight as state_dict[key] (already in torch layout)."""
        if key in self.state_dict:
            return
        self.state_dict[key] = np.require(np.asarray(array, dtype=np.float32), requirements="C")
        path = getattr(variable, "path", None) or getattr(variable, "name", str(variable))
        self.weight_map.append(
            {
                "keras_layer": layer.name,
                "keras_weight": path,
                "torch": key,
                "transform": transform,
                "buffer": buffer,
                "shape": tuple(int(d) for d in np.shape(array)),
            }
        )
        if variable is not None and hasattr(variable, "path"):
            self._mapped_vars.add(id(variable))

    def extra_tensor(self, key: str, array: np.ndarray, why: str) -> None:
        """A torch parameter/buffer with no Keras weight behind it (e.g. nn.LSTM's bias_hh)."""
        if key not in self.state_dict:
            self.state_dict[key] = np.require(np.asarray(array, dtype=np.float32), requirements="C")
            self.notes.append(f"{key}: no Keras counterpart ({why})")

    def default_init(self, family: str, torch_cls: str | None = None) -> None:
        """Use the default-init loop for `family` ('linear', 'embedding', 'rnn')."""
        self.init_types.add(family)
        if torch_cls:
            self.init_classes.add(torch_cls)

    def init_line(self, line: str) -> None:
        if line not in self.init_lines:
            self.init_lines.append(line)

    def helper(self, name: str, source: str) -> str:
        self.helpers.setdefault(name, source)
        return name

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def use(self, module: str) -> None:
        """Mark an import the emitted code needs: 'F' or 'math'."""
        self.imports.add(module)

    # ----- forward code ------------------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.lines.append(line)

    def value(self, ref: TensorRef, layout: str | None = None) -> Value:
        """The Value of a graph tensor, permuted to `layout` ('first'/'last') when asked."""
        rec = self._records[ref.key]
        if layout is None:
            return next(iter(rec.vars.values()))
        if len(ref.shape) <= 1:
            return next(iter(rec.vars.values()))  # rank <= 2: one layout only
        if layout in rec.vars:
            return rec.vars[layout]
        src = next(iter(rec.vars.values()))
        rank = src.rank
        if layout == "first":
            perm = (0, rank - 1, *range(1, rank - 1))
        else:
            perm = (0, *range(2, rank), 1)
        letters = _LAYOUT_LETTERS.get(rank)
        if letters:
            comment = (
                f"{letters[0]} -> {letters[1]}"
                if layout == "first"
                else (f"{letters[1]} -> {letters[0]}")
            )
        else:
            comment = (
                "channels-last -> channels-first" if layout == "first" else "back to channels-last"
            )
        if not self._conversion_noted and layout == "first":
            self.emit("# Keras tensors are channels-last; torch convolutions want channels-first")
            self._conversion_noted = True
        if self._reusable(ref, src):
            name = src.var
            rec.vars.clear()
        else:
            name = self.fresh_var(f"{src.var}_{'cf' if layout == 'first' else 'cl'}")
        self.emit(f"{name} = {src.var}.permute{perm}  # {comment}")
        val = Value(name, src.shape, layout, src.dtype, src.masked)
        rec.vars[layout] = val
        return val

    def _reusable(self, ref: TensorRef, val: Value) -> bool:
        rec = self._records[ref.key]
        node = self._node
        uses = 1
        if node is not None:
            uses = sum(1 for r in node.inputs if r.key == ref.key)
        return rec.remaining <= 1 and not rec.is_output and uses <= 1 and len(rec.vars) <= 1

    def assign(
        self,
        expr: str,
        *,
        ref: TensorRef,
        layout: str = "last",
        reuse: Value | list[Value] | None = None,
        hint: str | None = None,
        comment: str = "",
    ) -> Value:
        """Emit `<var> = expr` for the output `ref`.

        The chain variable `x` is overwritten when no later layer needs its old value (the
        nanoGPT style); every other output is named after its Keras layer.
        """
        candidates = reuse if isinstance(reuse, list) else [reuse] if reuse else []
        name = next((v.var for v in candidates if self._can_overwrite(v)), None)
        if name is None:
            name = self.fresh_var(hint or ref.name or "y")
        self.emit(f"{name} = {expr}" + (f"  # {comment}" if comment else ""))
        return self.bind(ref, name, layout)

    def _can_overwrite(self, val: Value) -> bool:
        if val.var != "x" or self._node is None:
            return False
        for r in self._node.inputs:
            if val.var in [v.var for v in self._records[r.key].vars.values()]:
                return self._reusable(r, val)
        return False

    def derive(self, x: Value, expr: str, *, hint: str, comment: str = "") -> Value:
        """Emit an intermediate `x = expr` (in place when no later layer still needs `x`)."""
        name = x.var if self._can_overwrite(x) else self.fresh_var(hint)
        self.emit(f"{name} = {expr}" + (f"  # {comment}" if comment else ""))
        return Value(name, x.shape, x.layout, x.dtype, x.masked)

    def bind(self, ref: TensorRef, var: str, layout: str = "last") -> Value:
        """Declare that `var` holds the graph tensor `ref` in `layout`."""
        if len(ref.shape) <= 1:
            layout = "last"
        rec = self._records.setdefault(ref.key, _Record())
        val = Value(var, tuple(ref.shape), layout, ref.dtype, ref.masked)
        rec.vars = {layout: val}
        return val

    def input(self, node: GraphNode, i: int = 0, layout: str | None = None) -> Value:
        return self.value(node.inputs[i], layout)

    # ----- bookkeeping used by translate() ----------------------------------------------------
    def _start(self, inputs: list[TensorRef], nodes: list[GraphNode], outputs: list[TensorRef]):
        for node in nodes:
            for key in {r.key for r in node.inputs}:
                self._records.setdefault(key, _Record()).remaining += 1
        for ref in outputs:
            self._records.setdefault(ref.key, _Record()).is_output = True

    def _finish_node(self, node: GraphNode) -> None:
        for key in {r.key for r in node.inputs}:
            self._records[key].remaining -= 1

    def _checkpoint(self) -> tuple:
        return (
            len(self.lines),
            dict(self.modules),
            list(self.init_extra),
            set(self.init_types),
            list(self.init_lines),
            dict(self.helpers),
            set(self.init_classes),
            dict(self.state_dict),
            list(self.weight_map),
            dict(self.layer_map),
            list(self.notes),
            set(self.imports),
            {k: (dict(r.vars), r.remaining) for k, r in self._records.items()},
            set(self._vars),
            set(self._mapped_vars),
            self._conversion_noted,
        )

    def _rollback(self, cp: tuple) -> None:
        (
            n,
            self.modules,
            self.init_extra,
            self.init_types,
            self.init_lines,
            self.helpers,
            self.init_classes,
            self.state_dict,
            self.weight_map,
            self.layer_map,
            self.notes,
            self.imports,
            recs,
            self._vars,
            self._mapped_vars,
            self._conversion_noted,
        ) = cp
        del self.lines[n:]
        for k, (vars_, remaining) in recs.items():
            self._records[k].vars = vars_
            self._records[k].remaining = remaining


# ----- the walk ---------------------------------------------------------------------------------
def translate(model: Any, *, class_name: str | None = None) -> Translation:
    """Translate a Keras model (object or path) into PyTorch source, weights and a recipe."""
    from . import layers as rules
    from .recipe import keras_fit_config

    model = load_keras_model(model)
    name = class_name or camel(model.name)
    if not name.isidentifier() or keyword.iskeyword(name):
        raise MigrationError(f"class_name {name!r} is not a valid Python class name")
    inputs, nodes, outputs = model_graph(model)
    b = Builder(name)
    b._start(inputs, nodes, outputs)

    arg_names = []
    for i, ref in enumerate(inputs):
        var = "x" if len(inputs) == 1 else b.fresh_var(ref.name or f"input_{i}")
        b._vars.add(var)
        arg_names.append(var)
        b.bind(ref, var, "last")
        b.layer_map.setdefault(ref.name, "")

    for node in nodes:
        b._node = node
        cp = b._checkpoint()
        reason = None
        rule = rules.rule_for(node.layer)
        if rule is None:
            reason = rules.missing_reason(node.layer)
        else:
            masked = [r for r in node.inputs if r.masked]
            if node.kwargs.get("mask") is not None:
                # an explicit mask= argument: no rule reads it, so honouring it is not
                # translated; a plain mean or sum in its place would be silently wrong
                reason = ("it is called with an explicit mask= argument, which the "
                          "translation does not honour; masking is not translated")
            elif masked and rules.mask_sensitive(node.layer):
                reason = (
                    "its input carries a Keras mask (Embedding(mask_zero=True) or Masking "
                    "upstream) and the layer's result depends on it; masking is not translated"
                )
            else:
                try:
                    rule(b, node)
                except Unsupported as exc:
                    reason = str(exc)
        if reason is not None:
            b._rollback(cp)
            rules.emit_stub(b, node, reason)
        b._finish_node(node)
    b._node = None

    returns = [b.value(ref, "last").var for ref in outputs]
    forward_sig = ", ".join(["self", *arg_names])

    missing = [v for v in model.weights if id(v) not in b._mapped_vars]
    for v in missing:
        b.note(f"Keras weight {v.path} has no torch counterpart")

    traced = getattr(model, "_autopilot_traced_from", None)
    if traced:
        b.note(f"translated from the layer graph that {traced}.call() builds on a symbolic "
               "input (a subclassed model): the same layers and weights")
    while name in b.helpers:  # a model named after a helper class ("dot_attention")
        name += "Model"
    b.class_name = name
    source = _render(b, forward_sig, returns, model)
    source = _format(source)
    recipe = keras_fit_config(model)
    return Translation(
        source=source,
        class_name=name,
        state_dict=b.state_dict,
        weight_map=tuple(b.weight_map),
        layer_map=b.layer_map,
        inputs=tuple(
            {"name": r.name, "arg": a, "shape": tuple(r.shape), "dtype": r.dtype}
            for r, a in zip(inputs, arg_names)
        ),
        outputs=tuple({"name": r.name, "shape": tuple(r.shape), "dtype": r.dtype} for r in outputs),
        unsupported=tuple(b.unsupported),
        recipe=recipe,
        notes=tuple(b.notes),
    )


# ----- rendering -------------------------------------------------------------------------------
_INIT_LOOP = {
    "linear": (
        "(nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, "
        "nn.ConvTranspose3d)",
        [
            "nn.init.xavier_uniform_(module.weight)  # Keras glorot_uniform",
            "if module.bias is not None:",
            "    nn.init.zeros_(module.bias)",
        ],
    ),
    "embedding": ("nn.Embedding", ["nn.init.uniform_(module.weight, -0.05, 0.05)"]),
    "rnn": (
        "(nn.LSTM, nn.GRU, nn.RNN)",
        [
            "for name, param in module.named_parameters():",
            '    if name.startswith("weight_ih"):',
            "        nn.init.xavier_uniform_(param)",
            '    elif name.startswith("weight_hh"):',
            "        nn.init.orthogonal_(param)",
            "    else:",
            "        nn.init.zeros_(param)",
            '    if name.startswith("bias_ih") and isinstance(module, nn.LSTM):',
            "        # Keras unit_forget_bias: the forget gate starts at 1",
            "        nn.init.ones_(param[module.hidden_size : 2 * module.hidden_size])",
        ],
    ),
}


def _render(b: Builder, forward_sig: str, returns: list[str], model: Any) -> str:
    out: list[str] = []
    out.append(
        f'"""PyTorch port of the Keras model {model.name!r}\n'
        "(translated by autopilot_lab.migrate).\n\n"
        "Inputs and outputs keep Keras' layout (channels-last); convolutions run channels-first\n"
        'inside forward(). Weights: load the translated state_dict with load_state_dict.\n"""\n'
    )
    code: list[str] = []
    for src in b.helpers.values():
        code.append("\n" + src.strip("\n") + "\n")
    code.append(f"\nclass {b.class_name}(nn.Module):")
    code.append(f'    """Keras model {model.name!r}: {_summary(model)}."""\n')
    code.append("    def __init__(self):")
    code.append("        super().__init__()")
    for attr, ctor in b.modules.items():
        if attr in b.module_comments:
            code.append(f"        # {b.module_comments[attr]}")
        code.append(f"        self.{attr} = {ctor}")
    for line in b.init_extra:
        code.append(f"        {line}")
    code.append("        self._init_weights()\n")
    code.append("    def _init_weights(self):")
    code.append(
        '        """Keras initialization: glorot_uniform kernels, zero biases, and so on."""'
    )
    body = []
    families = [f for f in ("linear", "embedding", "rnn") if f in b.init_types]
    if families:
        body.append("for module in self.modules():")
        for i, fam in enumerate(families):
            types, lines = _INIT_LOOP[fam]
            if fam == "linear" and b.init_classes:
                order = sorted(b.init_classes)
                types = order[0] if len(order) == 1 else f"({', '.join(order)})"
            kw = "if" if i == 0 else "elif"
            body.append(f"    {kw} isinstance(module, {types}):")
            body.extend(f"        {line}" for line in lines)
    body.extend(b.init_lines)
    if not body:
        body = ["pass"]
    code.extend(f"        {line}" for line in body)
    code.append("")
    code.append(f"    def forward({forward_sig}):")
    code.extend(f"        {line}" if line else "" for line in b.lines)
    if len(returns) == 1:
        code.append(f"        return {returns[0]}")
    else:
        code.append(f"        return {', '.join(returns)}")
    text = "\n".join(code)
    if re.search(r"\bmath\.", text):
        out.append("import math\n")
    if re.search(r"\btorch\.", text):
        out.append("import torch")
    if re.search(r"\bF\.", text):
        out.append("import torch.nn.functional as F")
    out.append("from torch import nn\n")
    out.extend(code)
    return "\n".join(out) + "\n"


def _summary(model: Any) -> str:
    n = sum(int(np.prod(v.shape)) for v in model.weights)
    return f"{len(model.layers)} layers, {n:,} parameters"


def ruff_binary() -> str | None:
    """The ruff executable next to this interpreter, or on PATH."""
    cand = Path(sys.executable).parent / "ruff"
    if cand.exists():
        return str(cand)
    return shutil.which("ruff")


def _format(source: str) -> str:
    """`ruff format` the emitted code when ruff is available (wraps long lines)."""
    ruff = ruff_binary()
    if ruff is None:
        return source
    try:
        proc = subprocess.run(
            [ruff, "format", "--isolated", "--line-length", "100", "-"],
            input=source,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return source
    return proc.stdout if proc.returncode == 0 and proc.stdout else source


def docstring_block(text: str, indent: str = "    ") -> str:
    """Text made safe for a docstring and wrapped to the line limit."""
    text = text.replace('"""', "'''")  # the docstring is raw: backslashes stay as written
    lines = []
    for line in text.splitlines():
        lines.extend(textwrap.wrap(line, 92 - len(indent), subsequent_indent="    ") or [""])
    return "\n".join(indent + ln if ln else "" for ln in lines)


def config_text(config: dict) -> str:
    return json.dumps(config, indent=2, default=str, sort_keys=False)
