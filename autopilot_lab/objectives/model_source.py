"""Turn what a user hands us as "the model" into (source text, class name).

Accepted: ``"path/to/model.py:ClassName"``, a path with ``entry=``, source text (the single
``nn.Module`` class in it, or ``entry=``), or a class / instance defined in an importable file.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import os
from pathlib import Path
from typing import Any


class ModelSourceError(ValueError):
    """The model argument could not be turned into source code and a class name."""


def resolve_model(model: Any, entry: str | None = None) -> tuple[str, str]:
    """(source text, class name) of ``model``; a ``ModelSourceError`` (a ValueError) names
    the file or the class when they cannot be had, a ``TypeError`` a model of the wrong type."""
    if entry is not None and (not isinstance(entry, str) or not entry.isidentifier()):
        raise TypeError(f"entry must be a class name (a Python identifier), got {entry!r}")
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
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be 'path/to/model.py:ClassName', source text, or an "
                        f"nn.Module class or instance; got {type(model).__name__} {model!r:.60}")
    text = os.fspath(model)
    if "\n" not in text and ("class " not in text):
        path_part, _, cls_part = text.partition(":") if text.count(":") == 1 else (text, "", "")
        path = Path(path_part)
        if cls_part and not cls_part.isidentifier():
            raise ModelSourceError(f"{text!r} names the class {cls_part!r}, which is not a "
                                   "Python class name; expected 'path/to/model.py:ClassName'")
        if path.is_dir():
            raise ModelSourceError(f"model file {path} is a folder; expected "
                                   "'path/to/model.py:ClassName'")
        if not path.is_file():
            raise ModelSourceError(
                f"model file {path} not found; expected 'path/to/model.py:ClassName' or "
                "source text defining an nn.Module")
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else (
                "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e))
            raise ModelSourceError(f"cannot read model file {path}: {why}") from None
        name = entry or cls_part
        if name:
            _check_defined(source, name, str(path))
            return source, name
        return source, _single_module_class(source, str(path))
    if entry:
        _check_defined(text, entry, "the model source")
        return text, entry
    return text, _single_module_class(text, "the model source")


def _check_defined(source: str, name: str, where: str) -> None:
    """Refuse a class name the source does not define at its top level (an empty file, a
    typo): found here, it is a bad input, not a run whose first candidate fails. Source that
    does not parse is left to the run, where the static check reports the syntax error."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    if name in classes:
        return
    if not source.strip():
        raise ModelSourceError(f"{where} is empty: it defines no class {name!r}")
    close = difflib.get_close_matches(name, classes, n=2, cutoff=0.5)
    raise ModelSourceError(f"{where} defines no class {name!r}; classes there: "
                           f"{', '.join(classes) or 'none'}"
                           + (f" (did you mean {', '.join(close)}?)" if close else ""))


def _single_module_class(source: str, where: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ModelSourceError(f"{where} does not parse (SyntaxError: {e.msg} at line "
                               f"{e.lineno}) and names no class; fix it or pass "
                               "'file.py:ClassName' / entry='ClassName'") from None
    if not source.strip():
        raise ModelSourceError(f"{where} is empty: it defines no nn.Module class")
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)
               and any(ast.unparse(b).split(".")[-1] == "Module" for b in n.bases)]
    if len(classes) == 1:
        return classes[0]
    raise ModelSourceError(
        f"{where} defines {len(classes)} nn.Module classes ({', '.join(classes) or 'none'}); "
        "name the one to use, e.g. 'model.py:ClassName' or entry='ClassName'")
