"""Stubs for what has no rule: a named module that raises NotImplementedError and holds
the layer's Keras config, weights and (when inspect finds it) its Python source."""

from __future__ import annotations

from typing import Any

from ..keras_model import GraphNode
from ..translator import Builder, camel, config_text, docstring_block, snake
from .common import arr


def _string_literal_lines(msg: str, width: int = 76) -> list[str]:
    import textwrap

    chunks = textwrap.wrap(msg, width, drop_whitespace=False) or [""]
    return [repr(ch) for ch in chunks]


def _python_source(layer: Any, max_lines: int = 40) -> str:
    """The Python behind a Lambda or a custom layer's call(), when inspect can find it."""
    import inspect
    import textwrap

    target = getattr(layer, "function", None) if type(layer).__name__ == "Lambda" else None
    if target is None and not (type(layer).__module__ or "").startswith("keras"):
        target = getattr(type(layer), "call", None)
    if target is None:
        return ""
    try:
        text = textwrap.dedent(inspect.getsource(target)).rstrip()
    except (OSError, TypeError):
        return ""
    lines = text.splitlines()
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], "..."]
    return "\n".join(lines)


def emit_stub(b: Builder, node: GraphNode, reason: str) -> None:
    """A named stub module that raises NotImplementedError, holding the layer's Keras config."""
    from ..translator import UnsupportedLayer

    layer = node.layer
    cls = type(layer).__name__
    try:
        config = dict(layer.get_config())
    except Exception as exc:  # noqa: BLE001 - custom layers may not implement get_config
        config = {"error": f"get_config() failed: {exc}"}
    b.unsupported.append(UnsupportedLayer(layer.name, cls, reason, config))
    stub = f"Untranslated{camel(layer.name)}"
    params, entries = [], []
    used: set[str] = set()
    attr_of = {id(v): k for k, v in vars(layer).items() if hasattr(v, "path")}
    for v in getattr(layer, "weights", []):
        pname = snake(attr_of.get(id(v), v.path.split("/")[-1]))
        while pname in used or pname in ("forward", "training"):
            pname += "_"
        used.add(pname)
        shape = tuple(int(s) for s in v.shape)
        if v.trainable:
            params.append(f"self.{pname} = nn.Parameter(torch.zeros({shape}))  # Keras {v.path}")
        else:
            params.append(
                f'self.register_buffer("{pname}", torch.zeros({shape}))  # Keras {v.path}'
            )
        entries.append((v, pname, not v.trainable))
    msg = f"Keras layer {layer.name!r} ({cls}) is not translated: {reason}"
    shapes_in = ", ".join(str((None, *r.shape)) for r in node.inputs)
    shapes_out = ", ".join(str((None, *r.shape)) for r in node.outputs)
    shown = {k: v for k, v in config.items() if k not in ("dtype", "trainable", "autocast")}
    if isinstance(shown.get("function"), dict):  # a Lambda's marshalled bytecode: show source
        shown["function"] = getattr(getattr(layer, "function", None), "__name__", "?")
    source = _python_source(layer)
    doc_text = (
        f"TODO: port Keras layer {layer.name!r} ({cls}); the translator has no exact rule.\n\n"
        f"Why: {reason}\n\n"
        f"Inputs {shapes_in} -> outputs {shapes_out}, Keras layout (channels-last). Implement "
        "forward() to match Keras on the same inputs; the weights below load in Keras layout, "
        "unchanged.\n\n"
        f"Keras config:\n{config_text(shown)}"
    )
    if source:
        doc_text += f"\n\nKeras code:\n{source}"
    body = [
        f"class {stub}(nn.Module):",
        '    r"""' + docstring_block(doc_text).lstrip(),
        '    """',
        "",
    ]
    body += ["    def __init__(self):", "        super().__init__()"]
    body += [f"        {p}" for p in params]
    body += ["", "    def forward(self, *inputs):", "        raise NotImplementedError("]
    body += [f"            {ln}" for ln in _string_literal_lines(msg)]
    body += ["        )"]
    b.helper(stub, "\n".join(body) + "\n")
    attr = b.add_module(layer, f"{stub}()", comment=f"TODO: untranslated Keras {cls}, see {stub}")
    for v, pname, is_buf in entries:
        b.weight(
            layer,
            v,
            f"{attr}.{pname}",
            arr(v),
            "as is (Keras layout; untranslated layer)",
            buffer=is_buf,
        )
    args = ", ".join(b.value(r, "last").var for r in node.inputs)
    outs = node.outputs
    if len(outs) == 1:
        b.assign(f"self.{attr}({args})", ref=outs[0], hint=layer.name)
    else:
        names = [b.fresh_var(f"{layer.name}_{i}") for i in range(len(outs))]
        b.emit(f"{', '.join(names)} = self.{attr}({args})")
        for r, nm in zip(outs, names):
            b.bind(r, nm)
