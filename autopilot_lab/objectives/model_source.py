"""Turn what a user hands us as "the model" into (source text, class name).

Accepted: ``"path/to/model.py:ClassName"``, a path with ``entry=``, source text (the single
``nn.Module`` class in it, or ``entry=``), or a class / instance defined in an importable file.
"""

from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path
from typing import Any


class ModelSourceError(ValueError):
    """The model argument could not be turned into source code and a class name."""


def resolve_model(model: Any, entry: str | None = None) -> tuple[str, str]:
    if isinstance(model, type) or (not isinstance(model, (str, os.PathLike))
                                   and hasattr(model, "forward")):
        cls = model if isinstance(model, type) else type(model)
        try:
            source = inspect.getsource(inspect.getmodule(cls))
        except (OSError, TypeError) as e:
            raise ModelSourceError(
                f"cannot read the source of {cls.__name__} ({e}); pass the model as "
                "'file.py:ClassName' or as source text") from e
        return source, entry or cls.__name__
    text = str(model)
    if "\n" not in text and ("class " not in text):
        path_part, _, cls_part = text.partition(":") if text.count(":") == 1 else (text, "", "")
        path = Path(path_part)
        if not path.is_file():
            raise ModelSourceError(
                f"model file {path} not found; expected 'path/to/model.py:ClassName' or "
                "source text defining an nn.Module")
        source = path.read_text()
        return source, entry or cls_part or _single_module_class(source, str(path))
    return text, entry or _single_module_class(text, "the model source")


def _single_module_class(source: str, where: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        raise ModelSourceError(f"{where} does not parse and names no class; pass "
                               "entry='ClassName'") from None
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)
               and any(ast.unparse(b).split(".")[-1] == "Module" for b in n.bases)]
    if len(classes) == 1:
        return classes[0]
    raise ModelSourceError(
        f"{where} defines {len(classes)} nn.Module classes ({', '.join(classes) or 'none'}); "
        "name the one to use, e.g. 'model.py:ClassName' or entry='ClassName'")
