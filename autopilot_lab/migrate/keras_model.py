"""Loading a Keras model and reading its functional graph.

Everything that touches Keras internals lives here, so the translator sees a plain list of
`GraphNode`s in topological order (nested models inlined, shared layers kept as one object).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "GraphNode",
    "MigrationError",
    "TensorRef",
    "load_keras_model",
    "model_graph",
]


class MigrationError(ValueError):
    """A model cannot be migrated: the message says what, where, and what to do."""


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import keras
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MigrationError(
            "Keras is not installed: install the 'tf' extra (pip install 'autopilot-lab[tf]') "
            "to migrate Keras models"
        ) from exc
    return keras


def load_keras_model(obj_or_path: Any) -> Any:
    """Return a built, graph-based `keras.Model` from a model object or a saved file.

    Accepts a `keras.Model` (functional or Sequential), a `.keras` archive, a legacy `.h5`
    file, or a SavedModel folder. Raises `MigrationError` naming the path or layer and what to
    do when the model cannot be read as a graph of layers.
    """
    if isinstance(obj_or_path, (str, os.PathLike)):
        path = check_model_path(obj_or_path)  # before TensorFlow is imported: seconds saved
        keras = _keras()
        if path.is_dir():
            return _load_saved_model_dir(path, keras)
    else:
        keras = _keras()
        if isinstance(obj_or_path, keras.Model):
            return _check_graph_model(obj_or_path, where="the given model object")
        if isinstance(obj_or_path, keras.layers.Layer):
            raise MigrationError(
                f"expected a keras.Model, got the layer {obj_or_path.name!r} "
                f"({type(obj_or_path).__name__}); wrap it: "
                f"keras.Sequential([keras.Input(shape), layer])"
            )
        raise MigrationError(
            f"expected a keras.Model or a path to a .keras/.h5 file or SavedModel folder, "
            f"got {type(obj_or_path).__name__}"
        )
    try:
        with warnings.catch_warnings():
            # a model saved before it trained has an unbuilt optimizer: Keras says it skips
            # loading its variables, in every run's output; migration uses its config only
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            try:
                model = keras.models.load_model(path, compile=True)
            except Exception:  # noqa: BLE001 - e.g. a legacy .h5 whose loss won't deserialize
                model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        hint = ""
        text = str(exc).strip() or type(exc).__name__
        if "File not found" in text and path.is_file():  # Keras' words for an unreadable zip
            text = "the file is not a valid .keras archive (corrupt or not saved by Keras)"
        if "Could not locate" in text or "custom_objects" in text or "Unknown" in text:
            hint = (
                "; the file uses a custom layer or function: import the module that defines "
                "it (decorated with @keras.saving.register_keras_serializable) before loading, "
                "or load it yourself with custom_objects= and pass the model object"
            )
        raise MigrationError(
            f"Keras could not load {str(path)!r}: {text.splitlines()[0]}{hint}"
        ) from exc
    return _check_graph_model(model, where=repr(str(path)))


_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def check_model_path(path_like: str | os.PathLike) -> Path:
    """The path of a Keras model file or SavedModel folder, checked without TensorFlow:
    it exists, has a model suffix, is not empty and starts as its format must (a .keras file
    is a zip archive, an .h5 file HDF5). Raises ``MigrationError`` naming the path."""
    path = Path(path_like)
    where = repr(str(path))
    if not path.exists():
        raise MigrationError(
            f"model file {where} does not exist; expected a .keras or .h5 file or a "
            f"SavedModel folder"
        )
    if path.is_dir():
        inside = sorted(path.glob("*.keras")) + sorted(path.glob("*.h5"))
        if not (path / "saved_model.pb").exists() and len(inside) != 1:
            raise MigrationError(
                f"folder {where} is not a SavedModel (no saved_model.pb) and holds "
                f"{'no' if not inside else len(inside)} .keras/.h5 files; pass the model file "
                f"itself"
            )
        return path
    suffix = path.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise MigrationError(
            f"{where} is not a Keras model file: expected the suffix .keras, .h5 or "
            f"a SavedModel folder, got {suffix or 'no suffix'!r}"
        )
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            hdf5 = head == _HDF5_MAGIC or any(  # HDF5 may also start at 512, 1024, 2048...
                fh.seek(at) == at and fh.read(8) == _HDF5_MAGIC
                for at in (512 << i for i in range(12)) if at < size)
    except OSError as exc:
        raise MigrationError(f"cannot read model file {where}: {exc.strerror or exc}") from None
    if size == 0:
        raise MigrationError(f"model file {where} is empty (0 bytes); save the model again "
                             f"with model.save({path.name!r})")
    if suffix == ".keras" and head[:4] != _ZIP_MAGIC:
        raise MigrationError(
            f"{where} is not a .keras archive: a .keras file is a zip archive and this one "
            f"({size} bytes) does not start like one; it is corrupt or not a Keras model: "
            f"save it again with model.save({path.name!r})"
        )
    if suffix in (".h5", ".hdf5") and not hdf5:
        raise MigrationError(
            f"{where} is not an HDF5 file ({size} bytes without the HDF5 signature); it is "
            f"corrupt or not a Keras model: save it again with model.save({path.name!r})"
        )
    return path


def _load_saved_model_dir(path: Path, keras: Any) -> Any:
    if not (path / "saved_model.pb").exists():
        candidates = sorted(path.glob("*.keras")) + sorted(path.glob("*.h5"))
        if len(candidates) == 1:
            return load_keras_model(candidates[0])
        raise MigrationError(
            f"folder {str(path)!r} is not a SavedModel (no saved_model.pb) and holds no single "
            f".keras/.h5 file; pass the model file itself"
        )
    # Keras 3 cannot rebuild layers from a SavedModel; a Keras 2 SavedModel keeps its layer
    # graph in keras_metadata.pb, readable by tf_keras when installed.
    if (path / "keras_metadata.pb").exists():
        try:
            import tf_keras  # noqa: F401
        except ImportError:
            tf_keras = None
        if tf_keras is not None:
            raise MigrationError(
                f"{str(path)!r} is a Keras 2 SavedModel; re-save it as .keras first: "
                f"tf_keras.models.load_model({str(path)!r}) then convert its layers to Keras 3 "
                f"(keras.models.clone_model is not enough across versions) or rebuild the "
                f"architecture in Keras 3 and copy weights by name"
            )
        raise MigrationError(
            f"{str(path)!r} is a Keras 2 SavedModel: Keras 3 cannot read its layers. Load it "
            f"with Keras 2 (tf_keras) and save it as model.keras, or pass the model object"
        )
    raise MigrationError(
        f"{str(path)!r} is a SavedModel without Keras layer metadata (e.g. from model.export() "
        f"or tf.saved_model.save): it holds a TensorFlow graph, not Keras layers, so there is "
        f"nothing to translate layer by layer; save the Keras model with model.save('m.keras')"
    )


def _check_graph_model(model: Any, *, where: str) -> Any:
    graph = _functional_of(model)
    if graph is None:
        keras = _keras()
        if isinstance(model, keras.Sequential):
            raise MigrationError(
                f"Sequential model {model.name!r} ({where}) is not built: its input shape is "
                f"unknown; start it with keras.Input(shape) or call model.build((None, ...))"
            )
        return _traced(model, where)
    return model


def _traced(model: Any, where: str) -> Any:
    """A subclassed model as the layer graph its call() builds on a symbolic input: the same
    layer objects (and weights), called as call() calls them, and the ops between them. A
    call() that is not traceable (Python decisions on tensor values, several inputs) ends in
    a MigrationError that says what failed and what to do."""
    keras = _keras()
    cls = type(model).__name__
    shapes = list((getattr(model, "_build_shapes_dict", None) or {}).values())
    if len(shapes) != 1 or not isinstance(shapes[0], (tuple, list)) or not shapes[0] or \
            isinstance(shapes[0][0], (tuple, list)):
        built = getattr(model, "built", False)
        raise MigrationError(
            f"model {model.name!r} ({where}) is a subclassed keras.Model ({cls}) "
            + ("with several inputs, which are not traced yet" if shapes else
               "whose call() could not be traced into a layer graph when Keras built it (it "
               "recorded no input shape: a Python decision on a tensor's value?)" if built else
               "that was never called, so its input shape is unknown; call it once on a batch "
               "(model(x)) and pass it again")
            + "; or rebuild it with the functional API (keras.Input -> layers -> "
            "keras.Model(inputs, outputs)), or let --agent llm port its call()")
    try:
        inp = keras.Input(tuple(shapes[0][1:]), name="inputs")
        graph = keras.Model(inp, model.call(inp), name=model.name)
    except Exception as exc:  # noqa: BLE001 - whatever call() does on a symbolic tensor
        raise MigrationError(
            f"model {model.name!r} ({where}) is a subclassed keras.Model ({cls}) whose call() "
            f"could not be traced into a layer graph ({type(exc).__name__}: "
            f"{str(exc)[:300]}); rebuild it with the functional API, or let --agent llm port "
            f"its call()") from None
    if getattr(model, "compiled", False):
        graph.compile(optimizer=model.optimizer, loss=model.loss)
    graph._autopilot_traced_from = cls  # the translation says so in its notes
    return graph


def _functional_of(model: Any) -> Any:
    """The Functional graph behind a model (Sequential keeps one in `_functional`)."""
    keras = _keras()
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if hasattr(model, "_nodes_by_depth") and getattr(model, "_inputs", None):
        return model
    return None


@dataclass(frozen=True)
class TensorRef:
    """A symbolic tensor of the graph: `key` is unique per call site (nested models inlined)."""

    key: Any
    shape: tuple  # without the batch axis
    dtype: str
    masked: bool = False
    name: str = ""  # the Keras layer that produced it (InputLayer name for inputs)


@dataclass
class GraphNode:
    """One call of one layer (or Keras op): arguments hold `TensorRef`s in place of tensors."""

    layer: Any
    args: tuple
    kwargs: dict
    outputs: list[TensorRef]
    scope: str = ""  # "outer_model/" prefix for layers of an inlined nested model
    inputs: list[TensorRef] = field(default_factory=list)


def _ref(tensor: Any, key: Any) -> TensorRef:
    keras = _keras()
    mask = (
        keras.backend.get_keras_mask(tensor) if hasattr(keras.backend, "get_keras_mask") else None
    )
    history = getattr(tensor, "_keras_history", None)
    name = history[0].name if history else ""
    return TensorRef(
        key=key,
        shape=tuple(tensor.shape[1:]),
        dtype=str(tensor.dtype),
        masked=mask is not None,
        name=name,
    )


def model_graph(model: Any) -> tuple[list[TensorRef], list[GraphNode], list[TensorRef]]:
    """Inputs, nodes in topological order, and outputs of a graph model (nested inlined)."""
    graph = _functional_of(model)
    if graph is None:
        _check_graph_model(model, where="the given model")
    inputs = [_ref(t, id(t)) for t in graph.inputs]
    nodes: list[GraphNode] = []
    outputs = _walk(graph, {id(t): ref for t, ref in zip(graph.inputs, inputs)}, "", nodes, [0])
    return inputs, nodes, outputs


def _creation_index(node: Any) -> int:
    """Keras numbers tensors as they are created (keras_tensor_17): the order of the code."""
    match = re.search(r"_(\d+)$", node.outputs[0].name or "") if node.outputs else None
    return int(match.group(1)) if match else -1


def _ordered_nodes(graph: Any) -> list:
    """The graph's calls in the order the Keras code made them (a topological order), or by
    depth when that order cannot be read."""
    by_depth = [
        node
        for depth in sorted(graph._nodes_by_depth, reverse=True)
        for node in graph._nodes_by_depth[depth]
        if node.operation is not None and not node.is_input
    ]
    ordered = sorted(by_depth, key=_creation_index)
    seen = {id(t) for t in graph.inputs}
    for node in ordered:
        if any(id(t) not in seen for t in node.arguments.keras_tensors):
            return by_depth
        seen.update(id(t) for t in node.outputs)
    return ordered


def _walk(graph: Any, env: dict, scope: str, nodes: list, counter: list) -> list[TensorRef]:
    """Append `graph`'s nodes to `nodes`; `env` maps id(KerasTensor) of its inputs to refs."""
    keras = _keras()
    from keras.src import tree

    call_tag = counter[0]
    counter[0] += 1

    def key_of(t: Any) -> Any:
        return id(t) if not scope else (call_tag, id(t))

    for node in _ordered_nodes(graph):
        op = node.operation
        in_tensors = node.arguments.keras_tensors
        if any(id(t) not in env for t in in_tensors):
            continue

        def sub(x: Any) -> Any:
            return env[id(x)] if isinstance(x, keras.KerasTensor) else x

        args = tree.map_structure(sub, node.arguments.args)
        kwargs = tree.map_structure(sub, node.arguments.kwargs)
        in_refs = [env[id(t)] for t in in_tensors]
        inner = _functional_of(op) if isinstance(op, keras.Model) else None
        if inner is not None:
            inner_env = {id(t): ref for t, ref in zip(inner.inputs, in_refs)}
            if len(inner.inputs) != len(in_refs):
                raise MigrationError(
                    f"nested model {op.name!r} takes {len(inner.inputs)} inputs but is "
                    f"called with {len(in_refs)}; cannot inline it"
                )
            outs = _walk(inner, inner_env, f"{scope}{op.name}/", nodes, counter)
            for t, ref in zip(node.outputs, outs):
                env[id(t)] = ref
            continue
        if isinstance(op, keras.Model):
            raise MigrationError(
                f"nested model {op.name!r} ({type(op).__name__}) is subclassed and cannot "
                f"be traced; rebuild it with the functional API"
            )
        out_refs = [_ref(t, key_of(t)) for t in node.outputs]
        for t, ref in zip(node.outputs, out_refs):
            env[id(t)] = ref
        nodes.append(
            GraphNode(
                layer=op,
                args=args,
                kwargs=kwargs,
                outputs=out_refs,
                scope=scope,
                inputs=in_refs,
            )
        )
    return [env[id(t)] for t in graph.outputs]
