"""What a notebook cell names: the model (in the namespace or the cell), its source, the data.

A class defined in a notebook cell has no file, so ``inspect.getsource`` fails on it. Its
methods, though, are compiled from cell files that IPython registers in ``linecache``; the class
source is cut from there, and the names it uses (imports, helper classes and functions,
constants) are written out above it, so that the candidate is a self-contained module.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import inspect
import io
import json
import linecache
import math
import symtable
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopilot_lab.objectives.model_source import resolve_model

_CONSTANT_TYPES = (bool, int, float, complex, str, bytes, type(None))


class NotebookError(ValueError):
    """A notebook request that cannot be carried out; the message says what to do instead."""


@dataclass(frozen=True)
class FoundModel:
    """A model found in the notebook: where it came from, the object, its framework."""

    origin: str
    obj: Any
    framework: str


# ---- what is a model ----------------------------------------------------------------------


def framework_of(obj: Any) -> str | None:
    """``"torch"`` for an ``nn.Module`` subclass or instance, ``"keras"`` for a Keras model
    instance, else ``None``. Only frameworks the notebook already imported are consulted."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "nn"):
        module = torch.nn.Module
        if (isinstance(obj, type) and issubclass(obj, module) and obj is not module) \
                or isinstance(obj, module):
            return "torch"
    for name in ("keras", "tf_keras"):
        keras = sys.modules.get(name)
        model = getattr(keras, "Model", None)
        if isinstance(model, type) and isinstance(obj, model):
            return "keras"
    return None


def _describe(obj: Any) -> str:
    if isinstance(obj, type):
        return f"class {obj.__name__}"
    return f"{type(obj).__name__} instance"


# ---- finding the model -------------------------------------------------------------------


def snapshot(namespace: Mapping[str, Any]) -> dict[str, int]:
    """Identity of every public value, to tell later what a cell (re)defined."""
    return {k: id(v) for k, v in namespace.items() if not k.startswith("_")}


def model_from_cell(shell: Any, cell: str, name: str | None = None) -> FoundModel:
    """Run ``cell`` in the user namespace, then take the model: ``name`` if given, else the
    cell's last expression, else the single model the cell defined."""
    namespace = shell.user_ns
    before = snapshot(namespace)
    result = shell.run_cell(cell, store_history=False)
    if not result.success:
        error = result.error_before_exec or result.error_in_exec
        raise NotebookError(f"the cell raised {type(error).__name__}: {error}; no run was "
                            "started")
    if name:
        return named_model(namespace, name)
    framework = framework_of(result.result)
    if framework is not None:
        return FoundModel("the cell's last expression", result.result, framework)
    changed = {k: v for k, v in namespace.items()
               if not k.startswith("_") and before.get(k) != id(v)}
    return single_model(changed)


def named_model(namespace: Mapping[str, Any], name: str) -> FoundModel:
    if name not in namespace:
        raise NotebookError(f"--model {name}: no variable {name!r} in the notebook")
    obj = namespace[name]
    framework = framework_of(obj)
    if framework is None:
        raise NotebookError(f"--model {name}: {name!r} is a {type(obj).__name__}, not a Keras "
                            "model or a PyTorch nn.Module (class or instance)")
    return FoundModel(name, obj, framework)


def single_model(defined: Mapping[str, Any]) -> FoundModel:
    """The one model among ``defined`` (name -> value). A class and its instances count once;
    a model that is part of another (a submodule, a helper class) does not count."""
    models = {k: v for k, v in defined.items() if framework_of(v)}
    instances = [v for v in models.values() if not isinstance(v, type)]
    inner = [m for inst in instances for m in _children(inst)]
    inner_ids = {id(m) for m in inner}
    covered = {type(m) for m in inner} | {type(i) for i in instances}
    helpers = set().union(*(_global_names(v) - {k} for k, v in models.items()
                            if isinstance(v, type)))
    kept = {k: v for k, v in models.items()
            if id(v) not in inner_ids
            and not (isinstance(v, type) and (v in covered or k in helpers))}
    if len(kept) == 1:
        ((k, v),) = kept.items()
        return FoundModel(k, v, framework_of(v))
    if not kept:
        raise NotebookError("the cell defined no Keras model or PyTorch nn.Module; end the "
                            "cell with the model, or name it with --model NAME")
    listed = ", ".join(f"{k} ({_describe(v)})" for k, v in sorted(kept.items()))
    raise NotebookError(f"the cell defined {len(kept)} models: {listed}; name the one to use "
                        "with --model NAME")


def _children(model: Any) -> list[Any]:
    """Sub-models of a torch module (itself excluded); Keras models have none we track."""
    modules = getattr(model, "modules", None)
    if framework_of(model) != "torch" or modules is None:
        return []
    return [m for m in modules() if m is not model]


# ---- the source of a notebook class ------------------------------------------------------


def torch_model_source(model: Any, namespace: Mapping[str, Any]) -> tuple[str, str]:
    """(module source, class name) for a PyTorch model class or instance.

    A class from a file gives that file; a class defined in the notebook gives a module with
    the imports, constants and notebook helpers it uses, then the class. An instance stands
    for its class: its weights and constructor arguments are not carried over (the harness
    passes the data's feature and output counts).
    """
    cls = model if isinstance(model, type) else type(model)
    module = cls.__module__ or ""
    if module == "torch" or module.startswith("torch."):
        raise NotebookError(
            f"the model is a {module}.{cls.__qualname__}, a class of torch itself; define an "
            "nn.Module subclass in the notebook (or a file) so that its source can be improved")
    if module != "__main__":
        return resolve_model(cls)
    return NotebookModule(namespace).build(cls), cls.__name__


class NotebookModule:
    """Writes a notebook class and everything it refers to as one module of source."""

    def __init__(self, namespace: Mapping[str, Any]):
        self.namespace = namespace
        self.imports: dict[str, str] = {}
        self.constants: dict[str, str] = {}
        self.definitions: dict[str, str] = {}
        self._visiting: set[str] = set()

    def build(self, cls: type) -> str:
        self._define(cls.__name__, cls)
        # plain imports first, then from-imports, each sorted (isort's order)
        imports = sorted(self.imports.values(), key=lambda s: (s.startswith("from "), s))
        blocks = ["\n".join(imports)]
        if self.constants:
            blocks.append("\n".join(f"{k} = {v}" for k, v in sorted(self.constants.items())))
        blocks += list(self.definitions.values())
        return "\n\n\n".join(b.strip("\n") for b in blocks if b) + "\n"

    def _define(self, name: str, obj: type | types.FunctionType) -> None:
        if name in self.definitions or name in self._visiting:
            return
        self._visiting.add(name)
        source = definition_source(obj)
        for ref in sorted(_global_names_in(source) - {name}):
            self._refer(ref, obj.__name__)
        self.definitions[name] = source
        self._visiting.discard(name)

    def _refer(self, name: str, user: str) -> None:
        if name not in self.namespace:
            return  # undefined here too: the static and build checks will say so
        value = self.namespace[name]
        if isinstance(value, types.ModuleType):
            self.imports[name] = _import_line(name, value.__name__)
        elif isinstance(value, (type, types.FunctionType)) and value.__module__ == "__main__":
            self._define(name, value)
        elif isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)) \
                and _importable(value):
            self.imports[name] = _from_import_line(name, value)
        elif _is_constant(value):
            self.constants[name] = repr(value)
        else:
            raise NotebookError(
                f"{user} uses {name!r}, a {type(value).__name__} defined in the notebook, "
                "which cannot be written as source; pass it as a constructor argument or "
                "define it inside the class")


def definition_source(obj: type | types.FunctionType) -> str:
    """The source of a class or function defined in a notebook cell (decorators included)."""
    if isinstance(obj, types.FunctionType):
        return inspect.getsource(obj).rstrip() + "\n"
    for filename, lineno in _code_locations(obj):
        source = _class_in(linecache.getlines(filename), obj.__name__, lineno)
        if source:
            return source
    for lines in reversed(_cell_files()):
        source = _class_in(lines, obj.__name__, None)
        if source:
            return source
    raise NotebookError(f"cannot find the source of class {obj.__name__} in the notebook's "
                        "cells; run its cell again, or put it in a file")


def _code_locations(cls: type) -> list[tuple[str, int]]:
    out = []
    for value in vars(cls).values():
        fn = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        fn = fn.fget if isinstance(fn, property) else fn
        code = getattr(fn, "__code__", None)
        if code is not None:
            out.append((code.co_filename, code.co_firstlineno))
    return out


def _cell_files() -> list[list[str]]:
    """Sources IPython registered in linecache for cells (no file on disk), oldest first."""
    return [entry[2] for name, entry in list(linecache.cache.items())
            if len(entry) == 4 and entry[2] and not Path(name).is_file()]


def _class_in(lines: list[str], name: str, lineno: int | None) -> str | None:
    """The last top-level ``class name`` in ``lines`` (the one holding ``lineno`` if given)."""
    try:
        tree = ast.parse("".join(lines))
    except SyntaxError:
        return None
    found = None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name and (
                lineno is None or node.lineno <= lineno <= (node.end_lineno or node.lineno)):
            found = node
    if found is None:
        return None
    start = min([found.lineno] + [d.lineno for d in found.decorator_list])
    return "".join(lines[start - 1:found.end_lineno]).rstrip() + "\n"


def _global_names(obj: Any) -> set[str]:
    try:
        return _global_names_in(definition_source(obj))
    except (NotebookError, OSError, TypeError):
        return set()


def _global_names_in(source: str) -> set[str]:
    """Names the source reads from module scope (symtable's globals, all nested scopes)."""
    table = symtable.symtable(source, "<notebook>", "exec")
    out: set[str] = set()

    def walk(t: symtable.SymbolTable) -> None:
        for sym in t.get_symbols():
            if sym.is_referenced() and sym.is_global() and not (
                    t.get_type() == "module" and sym.is_assigned()):
                out.add(sym.get_name())
        for child in t.get_children():
            walk(child)

    walk(table)
    return {n for n in out if not hasattr(builtins, n)}


def _import_line(name: str, module: str) -> str:
    if name == module:
        return f"import {module}"
    parent, _, last = module.rpartition(".")
    if parent and last == name:
        return f"from {parent} import {last}"
    return f"import {module} as {name}"


def _importable(value: Any) -> bool:
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", "")
    return bool(module) and "." not in qualname and "<" not in qualname \
        and getattr(sys.modules.get(module), qualname, None) is value


def _from_import_line(name: str, value: Any) -> str:
    alias = "" if name == value.__qualname__ else f" as {name}"
    return f"from {value.__module__} import {value.__qualname__}{alias}"


def _is_constant(value: Any) -> bool:
    if isinstance(value, _CONSTANT_TYPES):
        return not isinstance(value, float) or math.isfinite(value)  # repr(nan) is no literal
    if isinstance(value, (tuple, list, frozenset)):
        return all(_is_constant(v) for v in value)
    if isinstance(value, dict):
        return all(_is_constant(k) and _is_constant(v) for k, v in value.items())
    return False


# ---- the data and the recipe -------------------------------------------------------------


def data_spec(data: Any, namespace: Mapping[str, Any], home: Path,
              target_col: str | None = None) -> str:
    """A task spec for ``--data``: a spec as given (``sklearn:iris``...), or ``(X, y)`` or a
    DataFrame (with ``target_col``), by value or by the name of a notebook variable, written
    once to ``<home>/data/<name>-<digest>.parquet`` so that the run can be resumed from its
    spec."""
    if isinstance(data, str) and data not in namespace:
        if ":" in data:
            if target_col:
                raise NotebookError("--target-col applies to a DataFrame variable; a task "
                                    f"spec ({data}) fixes its own target")
            return data
        raise NotebookError(
            f"--data {data}: no variable {data!r} in the notebook, and not a task spec "
            "(sklearn:<name>, local:<name>, openml:<task id>, csv:<path>, parquet:<path>, "
            "npz:<path>)")
    name, value = (data, namespace[data]) if isinstance(data, str) else ("data", data)
    buffer = io.BytesIO()
    _frame(name, value, target_col).to_parquet(buffer, index=False)
    blob = buffer.getvalue()
    path = Path(home) / "data" / f"{name}-{hashlib.sha256(blob).hexdigest()[:16]}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return f"parquet:{path}"


def _frame(name: str, value: Any, target_col: str | None) -> Any:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        if not target_col:
            raise NotebookError(f"--data {name} is a DataFrame: name its target column with "
                                "--target-col COLUMN")
        if target_col not in value.columns:
            raise NotebookError(f"--target-col {target_col}: no such column in {name}; columns: "
                                f"{', '.join(map(str, value.columns[:20]))}")
        if "target" in value.columns and target_col != "target":
            raise NotebookError(f"{name} has a feature column named 'target' besides the target "
                                f"{target_col!r}; rename it")
        frame = value.rename(columns={target_col: "target"})
        frame.columns = [str(c) for c in frame.columns]
        return frame
    if isinstance(value, tuple) and len(value) == 2:
        if target_col:
            raise NotebookError(f"--target-col applies to a DataFrame; {name} is an (X, y) pair")
        X, y = value
        if isinstance(X, pd.DataFrame):
            frame = X.copy()
            frame.columns = [str(c) for c in frame.columns]
        else:
            frame = pd.DataFrame(_as_2d(name, X))
            frame.columns = [f"x{c}" for c in frame.columns]
        if "target" in frame.columns:
            raise NotebookError(f"X of {name} has a column named 'target'; rename it")
        frame["target"] = list(y.values if hasattr(y, "values") else y)
        return frame
    raise NotebookError(f"--data {name} is a {type(value).__name__}; expected (X, y) or a "
                        "DataFrame with --target-col")


def _as_2d(name: str, X: Any) -> Any:
    import numpy as np

    arr = np.asarray(X)
    if arr.ndim != 2:
        raise NotebookError(f"X of {name} has shape {arr.shape}; expected (rows, features)")
    return arr


def option_value(option: str, text: str, namespace: Mapping[str, Any]) -> Any:
    """A structured option (``--recipe``, ``--fit``): a notebook variable, inline JSON, or a
    JSON file."""
    if text in namespace:
        return namespace[text]
    if text.lstrip().startswith("{"):
        return _json(text, option)
    path = Path(text).expanduser()
    if path.is_file():
        return _json(path.read_text(), f"{option} {path}")
    raise NotebookError(f"{option} {text}: not a variable in the notebook, inline JSON, or a "
                        "JSON file")


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise NotebookError(f"{where}: invalid JSON ({e})") from None

