"""Tasks: load a tabular data set from a spec, encode it and split it deterministically.

Specs: ``sklearn:<name>``, ``local:<name>``, ``openml:<task id>``, ``csv:<path>``,
``parquet:<path>``, ``npz:<path>`` (arrays ``x`` or one ``x_<input name>``, and ``y``). Every
loader ends in the same preprocessing, recorded in
``Task.preprocessing_notes``: rows with a missing target are dropped; string/categorical feature
columns become ordinal codes over their sorted categories; booleans become 0/1; missing feature
values get the median of the train split; constant columns are kept. Nothing else is done.

Labels: a classification target becomes 0..k-1 in the sorted order of its original values
(sklearn sets keep sklearn's own codes and names), kept in ``Task.classes``; a regression target
is float32. Bad input raises ``DataError`` with what went wrong, where, and what to do.
"""

from __future__ import annotations

import csv
import difflib
import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

ENV_DATASETS = "AUTOPILOT_DATASETS"
ENV_OPENML_TIMEOUT = "AUTOPILOT_OPENML_TIMEOUT"
OPENML_TIMEOUT_S = 30.0
SHARED_DATASETS = Path("..") / "shared" / "datasets"
PACKAGE_DATASETS = Path(__file__).resolve().parent / "datasets"
PARTS = ("train", "valid", "test")
KINDS = ("binary", "multiclass", "regression")
MAX_INFERRED_CLASSES = 20
MIN_ROWS_PER_CLASS = 3  # a stratified train/valid/test split needs each class in every part
SPEC_FORMS = ("sklearn:<name>", "local:<name>", "openml:<task id>", "csv:<path>",
              "parquet:<path>", "npz:<path>")
SKLEARN_DATASETS = {  # name -> (sklearn.datasets function, task type)
    "breast_cancer": ("load_breast_cancer", "classification"),
    "iris": ("load_iris", "classification"),
    "wine": ("load_wine", "classification"),
    "digits": ("load_digits", "classification"),
    "diabetes": ("load_diabetes", "regression"),
    "california_housing": ("fetch_california_housing", "regression"),
}


class DataError(ValueError):
    """Bad data or a bad spec; the message says what, where, and what to do."""


@dataclass(frozen=True, eq=False)
class Task:
    """A supervised tabular task: encoded features, labels, and a fixed train/valid/test split."""

    name: str
    spec: str
    kind: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    classes: tuple | None
    split: dict[str, np.ndarray]
    openml_dataset_id: int | None = None
    openml_task_id: int | None = None
    preprocessing_notes: tuple[str, ...] = ()

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    @property
    def n_outputs(self) -> int:
        return self.n_classes or 1

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """X, y of one split part ("train", "valid" or "test")."""
        if name not in self.split:
            raise DataError(f"unknown split part {name!r}; use one of {', '.join(self.split)}")
        idx = self.split[name]
        return self.X[idx], self.y[idx]

    def save_npz(self, path: str | os.PathLike) -> Path:
        """Write the split parts for a sandboxed candidate; keys X_<part>, y_<part>, kind,
        n_classes (0 for regression)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for name in PARTS:
            arrays[f"X_{name}"], arrays[f"y_{name}"] = self.part(name)
        with path.open("wb") as fh:  # a file object keeps np.savez from appending ".npz"
            np.savez(fh, **arrays, kind=np.array(self.kind),
                     n_classes=np.array(self.n_classes or 0))
        return path

    def summary(self) -> dict[str, Any]:
        """JSON-able description for reports."""
        return {
            "name": self.name, "spec": self.spec, "kind": self.kind,
            "rows": self.n_rows, "features": self.n_features, "n_classes": self.n_classes,
            "classes": None if self.classes is None else list(self.classes),
            "split": {k: int(len(v)) for k, v in self.split.items()},
            "openml_dataset_id": self.openml_dataset_id, "openml_task_id": self.openml_task_id,
            "notes": list(self.preprocessing_notes),
        }


@dataclass
class _Raw:
    """A loaded table before encoding and splitting."""

    name: str
    spec: str
    X: pd.DataFrame
    y: pd.Series
    kind_hint: str | None  # "classification" / "regression" / a KINDS entry, or None = infer
    notes: list[str] = field(default_factory=list)
    label_names: Sequence | None = None  # names of codes 0..k-1 when y is already coded
    openml_dataset_id: int | None = None
    openml_task_id: int | None = None
    fixed_split: tuple[np.ndarray, np.ndarray] | None = None  # (train, test) of the raw rows


# ---------------------------------------------------------------- public entry points


def load_task(spec: str, *, datasets_dir: str | os.PathLike | None = None,
              target_col: str | None = None, seed: int = 0, test_size: float = 0.2,
              valid_size: float = 0.2, kind: str | None = None) -> Task:
    """Load, encode and split the data set named by ``spec`` (see the module docstring).

    ``test_size`` and ``valid_size`` are fractions of all rows (rounded; the split is
    stratified by class for classification); for ``openml:`` the test part is OpenML's own and
    ``test_size`` is unused. ``kind`` overrides the task kind ("binary", "multiclass",
    "regression" or "classification"); by default it comes from the source or is inferred from
    the target (string/bool target, or integer-valued with <= 20 distinct values: classes).
    """
    _check_sizes(test_size, valid_size)
    if not isinstance(spec, str) or ":" not in spec:
        raise DataError(f"data spec {spec!r} has no source prefix; use one of "
                        f"{', '.join(SPEC_FORMS)}")
    prefix, _, rest = spec.partition(":")
    prefix, rest = prefix.strip().lower(), rest.strip()
    if prefix not in ("sklearn", "local", "openml", "csv", "parquet", "npz"):
        raise DataError(f"unknown data source {prefix!r} in spec {spec!r}; allowed: "
                        f"{', '.join(SPEC_FORMS)}")
    if not rest:
        raise DataError(f"data spec {spec!r} names nothing after '{prefix}:'; "
                        f"expected one of {', '.join(SPEC_FORMS)}")
    if target_col is not None and prefix in ("sklearn", "openml"):
        raise DataError(f"target_col={target_col!r} does not apply to {prefix}: specs, whose "
                        "target is fixed by the source; drop it or use csv:/parquet:/local:")
    if prefix == "sklearn":
        raw = _load_sklearn(rest, spec)
    elif prefix == "local":
        raw = _load_local(rest, spec, datasets_dir, target_col or "target")
    elif prefix == "openml":
        raw = _load_openml(rest, spec)
    elif prefix == "npz":
        if target_col is not None:
            raise DataError(f"target_col={target_col!r} does not apply to npz: specs, whose "
                            "target is the array y; drop it")
        raw = _load_npz(rest, spec)
    else:
        raw = _load_file(rest, spec, prefix, target_col or "target")
    if kind is not None:
        raw.kind_hint = _check_kind(kind)
    return _finish(raw, seed=seed, test_size=test_size, valid_size=valid_size)


def task_from_arrays(X: np.ndarray | pd.DataFrame, y: Sequence | np.ndarray | pd.Series, *,
                     name: str = "arrays", kind: str | None = None,
                     feature_names: Sequence[str] | None = None, seed: int = 0,
                     test_size: float = 0.2, valid_size: float = 0.2,
                     spec: str | None = None) -> Task:
    """Build a Task from in-memory data with the same preprocessing and split as load_task."""
    _check_sizes(test_size, valid_size)
    if isinstance(X, pd.DataFrame):
        frame = X.reset_index(drop=True)
    else:
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise DataError(f"X must be 2-D (rows, features); got shape {arr.shape}")
        frame = pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])
    if feature_names is not None:
        if len(feature_names) != frame.shape[1]:
            raise DataError(f"feature_names has {len(feature_names)} names but X has "
                            f"{frame.shape[1]} columns")
        frame.columns = [str(n) for n in feature_names]
    if isinstance(y, pd.Series):
        target = y.reset_index(drop=True)
    else:
        values = np.asarray(y)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise DataError(f"y must be 1-D (one value per row); got shape {values.shape}")
        target = pd.Series(values)
    if len(target) != len(frame):
        raise DataError(f"y must have one value per row of X; got {len(target)} values for "
                        f"{len(frame)} rows")
    raw = _Raw(name=name, spec=spec or f"arrays:{name}", X=frame, y=target,
               kind_hint=None if kind is None else _check_kind(kind))
    return _finish(raw, seed=seed, test_size=test_size, valid_size=valid_size)


def datasets_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The manifest folder for ``local:`` specs: ``explicit``, else $AUTOPILOT_DATASETS, else
    ``../shared/datasets`` from the current directory if present, else the bundled copy."""
    return _resolve_datasets_dir(explicit)[0]


def list_local(datasets_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Rows of the manifest in the resolved datasets folder, with numbers parsed."""
    folder, _ = _resolve_datasets_dir(datasets_dir)
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in ("n_rows", "n_features", "n_classes", "openml_dataset_id"):
            row[key] = int(float(row[key])) if row.get(key) not in (None, "") else None
    return rows


SUITE_FORMS = ("local-suite:<folder>", "openml-suite:<suite id or alias>")
OPENML_SUITE_ALIASES = {"openml-cc18": 99, "cc18": 99, "openml100": 14, "amlb": 271}


def load_suite(spec: str, *, datasets_dir: str | os.PathLike | None = None) -> list[str]:
    """The task specs of a suite, in a stable order.

    ``local-suite:<folder>``: one ``local:<name>`` per manifest row of ``<folder>`` (``.`` or
    an empty folder: ``datasets_dir`` as resolved for ``local:``); load each with
    ``datasets_dir=<folder>``. ``openml-suite:<id or alias>``: one ``openml:<task id>`` per
    task of the OpenML benchmark suite (``openml.study.get_suite``; aliases OpenML-CC18 -> 99,
    OpenML100 -> 14, AMLB -> 271), from the openml cache when the server is unreachable.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise DataError(f"suite spec {spec!r} has no source prefix; use one of "
                        f"{', '.join(SUITE_FORMS)}")
    prefix, _, rest = spec.partition(":")
    prefix, rest = prefix.strip().lower(), rest.strip()
    if prefix == "local-suite":
        folder = rest if rest not in ("", ".") else datasets_dir
        return [f"local:{row['name']}" for row in list_local(folder)]
    if prefix == "openml-suite":
        if not rest:
            raise DataError(f"suite spec {spec!r} names no suite; e.g. openml-suite:OpenML-CC18 "
                            "or openml-suite:99")
        return [f"openml:{t}" for t in _openml_suite_tasks(rest, spec)]
    raise DataError(f"unknown suite source {prefix!r} in {spec!r}; allowed: "
                    f"{', '.join(SUITE_FORMS)}")


def _openml_within(openml: Any, fetch: Callable[[], None], label: str, timeout: float,
                   offline: str) -> str:
    """Run ``fetch`` (an openml call) in a worker thread with one connection try and a
    deadline; returns the server/cache description for error messages."""
    saved_retries = openml.config.connection_n_retries
    openml.config.connection_n_retries = 1  # fail fast: openml retries 5x, waiting between
    try:
        worker = threading.Thread(target=fetch, name=f"openml-{label}", daemon=True)
        worker.start()
        worker.join(timeout)
    finally:
        openml.config.connection_n_retries = saved_retries
    where = f"server {openml.config.server}, cache {openml.config.get_cache_directory()}"
    if worker.is_alive():
        raise DataError(f"OpenML {label}: no answer within {timeout:g} s ({where}). "
                        f"{offline} ${ENV_OPENML_TIMEOUT} sets the wait.")
    return where


def _openml_call(spec: str, label: str, call: Callable[[Any], dict[str, Any]], offline: str,
                 instead: str) -> tuple[Any, dict[str, Any], str]:
    """``call(openml)`` through ``_openml_within``, with ``$AUTOPILOT_OPENML_TIMEOUT``'s wait:
    (the openml module, what ``call`` returned or ``{"error": exception}``, where it looked).
    ``instead`` names the offline alternative when the openml package is missing."""
    try:
        import openml
    except ImportError:
        raise DataError(f"{spec!r} needs the openml package: pip install "
                        f"'autopilot-lab[openml]', or use {instead}") from None
    timeout = float(os.environ.get(ENV_OPENML_TIMEOUT, OPENML_TIMEOUT_S))
    result: dict[str, Any] = {}

    def fetch() -> None:
        try:
            result.update(call(openml))
        except Exception as exc:  # re-raised by the caller, in the caller's thread
            result["error"] = exc

    where = _openml_within(openml, fetch, label, timeout, offline)
    return openml, result, where


def _openml_suite_tasks(text: str, spec: str) -> list[int]:
    alias = OPENML_SUITE_ALIASES.get(text.lower())
    suite_id: int | str = alias if alias is not None else (int(text) if text.isdigit() else text)
    offline = ("Run once with network access to fill the cache, or use a local copy "
               "(local-suite:<folder>).")
    _, result, where = _openml_call(
        spec, f"suite {suite_id}",
        lambda openml: {"tasks": list(openml.study.get_suite(suite_id).tasks or [])},
        offline, "local-suite:<folder>")
    exc = result.get("error")
    if exc is not None:
        raise DataError(f"OpenML suite {suite_id} could not be loaded: it is not cached and the "
                        f"server could not give it ({where}; {type(exc).__name__}: "
                        f"{str(exc)[:200]}). {offline}") from None
    if not result["tasks"]:
        raise DataError(f"OpenML suite {suite_id} lists no tasks")
    return [int(t) for t in result["tasks"]]


# ---------------------------------------------------------------- sources


def _resolve_datasets_dir(explicit: str | os.PathLike | None) -> tuple[Path, str]:
    """(folder, how it was chosen)."""
    if explicit is not None:
        origin = "the datasets_dir argument"
        return _manifest_folder(Path(explicit), origin), origin
    env = os.environ.get(ENV_DATASETS)
    if env:
        return _manifest_folder(Path(env), f"${ENV_DATASETS}"), f"${ENV_DATASETS}"
    shared = Path.cwd() / SHARED_DATASETS
    if (shared / "manifest.csv").is_file():
        return shared.resolve(), f"{SHARED_DATASETS.as_posix()} (from the current directory)"
    return PACKAGE_DATASETS, "the bundled copy (autopilot_lab/datasets)"


def _manifest_folder(folder: Path, origin: str) -> Path:
    if not (folder / "manifest.csv").is_file():
        raise DataError(f"{origin} points at {folder}, which has no manifest.csv; point it at a "
                        "datasets folder (like ../shared/datasets) or leave it unset")
    return folder.resolve()


def _load_local(name: str, spec: str, explicit_dir: str | os.PathLike | None,
                target_col: str) -> _Raw:
    folder, origin = _resolve_datasets_dir(explicit_dir)
    rows = list_local(folder)
    by_name = {r["name"]: r for r in rows}
    row = by_name.get(name) or next(
        (r for r in rows if r["name"].lower() == name.lower()), None)
    if row is None:
        close = difflib.get_close_matches(name, list(by_name), n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}" if close else "no close matches"
        raise DataError(f"no dataset {name!r} in {folder} (chosen via {origin}; manifest.csv "
                        f"lists {len(rows)}); {hint}. list_local() lists them all; another "
                        f"folder can be given with datasets_dir= or ${ENV_DATASETS}")
    path = folder / row["file"]
    if not path.is_file():
        raise DataError(f"manifest.csv in {folder} lists {row['file']} for {row['name']!r}, "
                        "but the file is missing; restore it or fix the manifest")
    X, y = _target_split(_read_table(path, "parquet"), target_col, f"{row['file']} in {folder}")
    task_type = row.get("task_type") or None
    if task_type not in (None, "classification", "regression"):
        raise DataError(f"manifest.csv in {folder} gives task_type {task_type!r} for "
                        f"{row['name']!r}; expected classification or regression")
    return _Raw(name=row["name"], spec=spec, X=X, y=y, kind_hint=task_type,
                openml_dataset_id=row["openml_dataset_id"],
                notes=[f"source: {row['file']} from {origin}"
                       + (f", {task_type} per manifest" if task_type else "")])


def _load_sklearn(name: str, spec: str) -> _Raw:
    import sklearn.datasets

    key = name.lower()
    if key not in SKLEARN_DATASETS:
        close = difflib.get_close_matches(key, list(SKLEARN_DATASETS), n=3, cutoff=0.5)
        raise DataError(f"unknown scikit-learn dataset {name!r} in {spec!r}; available: "
                        f"{', '.join(SKLEARN_DATASETS)}"
                        + (f" (did you mean {', '.join(close)}?)" if close else ""))
    func_name, task_type = SKLEARN_DATASETS[key]
    func = getattr(sklearn.datasets, func_name)
    if func_name.startswith("fetch_"):
        try:
            bunch = func(download_if_missing=False)
        except OSError as exc:
            raise DataError(
                f"sklearn:{key} needs a one-time download and is not cached in "
                f"{sklearn.datasets.get_data_home()} ({exc}); run "
                f"sklearn.datasets.{func_name}() once with network access, or use a bundled "
                "regression set such as local:1027_ESL") from None
    else:
        bunch = func()
    X = pd.DataFrame(bunch.data, columns=[str(c) for c in bunch.feature_names])
    names = getattr(bunch, "target_names", None) if task_type == "classification" else None
    return _Raw(name=key, spec=spec, X=X, y=pd.Series(bunch.target), kind_hint=task_type,
                label_names=None if names is None else [_py(v) for v in names],
                notes=[f"source: sklearn.datasets.{func_name}()"])


def _load_file(path_text: str, spec: str, fmt: str, target_col: str) -> _Raw:
    path = Path(path_text).expanduser()
    if path.is_dir():
        raise DataError(f"{fmt} path {path} is a folder; {fmt}:<path> takes a {fmt} file")
    if not path.is_file():
        raise DataError(f"{fmt} file not found: {path} (relative paths start at {Path.cwd()})")
    X, y = _target_split(_read_table(path, fmt), target_col, str(path))
    return _Raw(name=path.stem, spec=spec, X=X, y=y, kind_hint=None,
                notes=[f"source: {fmt} file {path.name}"])


def _load_npz(path_text: str, spec: str) -> _Raw:
    """``x`` (or the one ``x_<input name>``) of shape (rows, features) and ``y`` of shape
    (rows,) from a NumPy ``.npz`` file, read without pickle."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise DataError(f"npz file not found: {path} (relative paths start at {Path.cwd()})")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # a zip error, a pickled object array, not an npz at all
        raise DataError(f"cannot read {path} as npz (arrays saved with numpy.savez, no "
                        f"pickled objects): {type(exc).__name__}: {exc}") from None
    xs = {k: v for k, v in arrays.items() if k == "x" or k.startswith("x_")}
    if "y" not in arrays or not xs:
        raise DataError(f"{path} holds {', '.join(sorted(arrays)) or 'no arrays'}; an npz "
                        "task needs the features as x (or x_<input name>) and the labels as y")
    if len(xs) > 1:
        raise DataError(f"{path} holds several inputs ({', '.join(sorted(xs))}); a task holds "
                        "one feature matrix: keep one of them, or x alone")
    (name, x), y = next(iter(xs.items())), np.asarray(arrays["y"])
    if x.ndim != 2:
        raise DataError(f"{path}: {name} has shape {x.shape}; npz tasks take tabular features "
                        "of shape (rows, features) (inputs of other ranks are not supported "
                        "yet)")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: y has shape {y.shape} for {len(x)} rows of {name}; expected "
                        f"({len(x)},)")
    X = pd.DataFrame(x, columns=[f"{name}_{i}" for i in range(x.shape[1])])
    return _Raw(name=path.stem, spec=spec, X=X, y=pd.Series(y), kind_hint=None,
                notes=[f"source: npz file {path.name} ({name}, y)"])


def _read_table(path: Path, fmt: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"cannot read {path} as {fmt}: {type(exc).__name__}: {exc}") from None
    if df.shape[0] == 0:
        raise DataError(f"{path} is empty ({df.shape[1]} columns, no rows); nothing to learn")
    return df


def _target_split(df: pd.DataFrame, target_col: str, where: str) -> tuple[pd.DataFrame,
                                                                           pd.Series]:
    columns = [str(c) for c in df.columns]
    if target_col not in columns:
        close = difflib.get_close_matches(target_col, columns, n=3, cutoff=0.5)
        shown = ", ".join(columns[:30]) + (f", ... ({len(columns)} in all)"
                                           if len(columns) > 30 else "")
        raise DataError(f"target column {target_col!r} not found in {where}; columns: {shown}"
                        + (f" (did you mean {', '.join(close)}?)" if close else "")
                        + "; pass target_col=<name>")
    df = df.reset_index(drop=True)
    df.columns = columns
    X = df.drop(columns=[target_col])
    if X.shape[1] == 0:
        raise DataError(f"{where} has only the target column {target_col!r}; no features")
    return X, df[target_col]


def _load_openml(text: str, spec: str) -> _Raw:
    try:
        task_id = int(text)
    except ValueError:
        raise DataError(f"openml spec {spec!r} needs an integer task id, e.g. openml:31 "
                        "(a task id, not a dataset id or name)") from None
    def fetch(openml: Any) -> dict[str, Any]:
        task = openml.tasks.get_task(task_id, download_splits=True, download_data=True,
                                     download_qualities=False,
                                     download_features_meta_data=False)
        X, y = task.get_X_and_y(dataset_format="dataframe")
        train, test = task.get_train_test_split_indices(fold=0, repeat=0, sample=0)
        return {"X": X, "y": y, "train": train, "test": test, "task": task,
                "dataset": task.get_dataset()}

    offline = ("Run once with network access to fill the cache, or use a local copy "
               "(local:<name>, see list_local()).")
    openml, result, where = _openml_call(spec, f"task {task_id}", fetch, offline,
                                         "a local: dataset")
    exc = result.get("error")
    if exc is not None:
        raise _openml_error(exc, task_id, where, offline) from None
    task = result["task"]
    types = {openml.tasks.TaskType.SUPERVISED_CLASSIFICATION: "classification",
             openml.tasks.TaskType.SUPERVISED_REGRESSION: "regression"}
    if task.task_type_id not in types:
        raise DataError(f"OpenML task {task_id} is a {task.task_type_id.name} task; only "
                        "supervised classification and regression tasks are supported")
    if result["y"] is None:
        raise DataError(f"OpenML task {task_id} has no target column")
    X = result["X"].reset_index(drop=True)
    X.columns = [str(c) for c in X.columns]
    return _Raw(name=str(result["dataset"].name), spec=spec, X=X,
                y=pd.Series(result["y"]).reset_index(drop=True),
                kind_hint=types[task.task_type_id], openml_dataset_id=int(task.dataset_id),
                openml_task_id=task_id,
                fixed_split=(np.asarray(result["train"]), np.asarray(result["test"])),
                notes=[f"source: OpenML task {task_id} (dataset {task.dataset_id}); test = "
                       "OpenML's own split (repeat 0, fold 0); valid carved from its train "
                       "part; test_size unused"])


def _openml_error(exc: Exception, task_id: int, where: str, offline: str) -> DataError:
    import requests
    from openml.exceptions import OpenMLServerException

    if isinstance(exc, OpenMLServerException):
        return DataError(f"OpenML rejected task {task_id}: {exc.message} (code {exc.code}); "
                         "check the task id on https://www.openml.org/search?type=task")
    if isinstance(exc, (requests.exceptions.RequestException, ConnectionError, TimeoutError)):
        reason = str(exc).split("(Caused by ")[-1][:200]
        return DataError(f"OpenML is unreachable and task {task_id} is not cached ({where}; "
                         f"{type(exc).__name__}: {reason}). {offline}")
    return DataError(f"OpenML task {task_id} could not be loaded ({where}): "
                     f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- encoding and splitting


def _finish(raw: _Raw, *, seed: int, test_size: float, valid_size: float) -> Task:
    notes = list(raw.notes)
    if len(raw.X) == 0:
        raise DataError(f"{raw.spec}: the data has no rows; nothing to learn")
    if raw.X.shape[1] == 0:
        raise DataError(f"{raw.spec}: the data has no feature columns")
    for name in raw.X.columns:
        _check_finite(raw.X[name], f"{raw.spec}: feature column {str(name)!r}")
    _check_finite(raw.y, f"{raw.spec}: the target column")
    keep = raw.y.notna().to_numpy()
    if not keep.all():
        notes.append(f"dropped {int((~keep).sum())} rows with a missing target")
    if not keep.any():
        raise DataError(f"{raw.spec}: every target value is missing; nothing to learn")
    X_df, y_raw = raw.X.loc[keep].reset_index(drop=True), raw.y.loc[keep].reset_index(drop=True)

    kind, y, classes = _encode_target(y_raw, raw, notes)
    X = _encode_features(X_df, raw.spec, notes)
    if raw.fixed_split is None:
        split = _split(y, kind, seed, test_size, valid_size, raw.spec)
    else:
        split = _carve_valid(raw.fixed_split, keep, y, kind, seed, test_size, valid_size, raw.spec)
    _impute(X, X_df.columns, split["train"], notes)
    return Task(name=raw.name, spec=raw.spec, kind=kind, X=X.astype(np.float32), y=y,
                feature_names=tuple(str(c) for c in X_df.columns), classes=classes,
                split=split, openml_dataset_id=raw.openml_dataset_id,
                openml_task_id=raw.openml_task_id, preprocessing_notes=tuple(notes))


def _encode_target(y: pd.Series, raw: _Raw,
                   notes: list[str]) -> tuple[str, np.ndarray, tuple | None]:
    """(kind, encoded y, classes)."""
    hint = raw.kind_hint
    if hint is None:
        hint, why = _infer_kind(y)
        notes.append(f"kind inferred: {why} (pass kind= to override)")
    if hint == "regression":
        if not (pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)):
            raise DataError(f"{raw.spec}: a regression target must be numeric; it has dtype "
                            f"{y.dtype} (e.g. {y.iloc[0]!r}); pass kind='classification'?")
        values = y.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{raw.spec}: the regression target has infinite values")
        return "regression", values.astype(np.float32), None

    if _integral_float(y):
        y = y.astype(np.int64)
    classes = _sorted_labels(y.unique())
    codes = pd.Categorical(y, categories=list(classes)).codes.astype(np.int64)
    counts = np.bincount(codes, minlength=len(classes))
    if len(classes) < 2:
        raise DataError(f"{raw.spec}: the target has a single class ({classes[0]!r}) in "
                        f"{len(y)} rows; classification needs at least two")
    rare = [f"{c!r} ({n})" for c, n in zip(classes, counts) if n < MIN_ROWS_PER_CLASS]
    if rare:
        raise DataError(f"{raw.spec}: classes with fewer than {MIN_ROWS_PER_CLASS} rows cannot "
                        f"be split into train/valid/test: {_listing(rare)}; drop or merge them")
    if raw.label_names is not None:
        classes = tuple(raw.label_names[int(c)] for c in classes)
    kind = "binary" if len(classes) == 2 else "multiclass"
    if hint in KINDS and hint != kind:
        raise DataError(f"{raw.spec}: kind {hint!r} was asked for, but the target has "
                        f"{len(classes)} classes; use kind={kind!r}")
    return kind, codes, classes


def _infer_kind(y: pd.Series) -> tuple[str, str]:
    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        return "classification", f"non-numeric target ({y.dtype})"
    distinct = y.nunique()
    if (pd.api.types.is_integer_dtype(y) or _integral_float(y)) \
            and distinct <= MAX_INFERRED_CLASSES:
        return "classification", f"integer target with {distinct} distinct values"
    return "regression", f"numeric target with {distinct} distinct values"


def _integral_float(y: pd.Series) -> bool:
    if not pd.api.types.is_float_dtype(y):
        return False
    values = y.to_numpy(dtype=np.float64)
    return bool(np.isfinite(values).all() and (values == np.round(values)).all())


def _encode_features(X: pd.DataFrame, spec: str, notes: list[str]) -> np.ndarray:
    out = np.empty(X.shape, dtype=np.float64)
    categorical, boolean = [], []
    for j, name in enumerate(X.columns):
        col = X.iloc[:, j]
        if pd.api.types.is_bool_dtype(col):
            out[:, j] = col.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
            boolean.append(str(name))
        elif pd.api.types.is_numeric_dtype(col):
            out[:, j] = col.to_numpy(dtype=np.float64, na_value=np.nan)
        elif isinstance(col.dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(col) \
                or pd.api.types.is_string_dtype(col):
            cats = _sorted_labels(col.dropna().unique())
            codes = pd.Categorical(col, categories=list(cats)).codes.astype(np.float64)
            codes[codes < 0] = np.nan
            out[:, j] = codes
            categorical.append(f"{name} ({len(cats)})")
        else:
            raise DataError(f"{spec}: feature column {name!r} has unsupported dtype "
                            f"{col.dtype}; convert it to numbers or strings first")
    if categorical:
        notes.append("string/categorical columns -> ordinal codes over sorted categories: "
                     + _listing(categorical))
    if boolean:
        notes.append("boolean columns -> 0/1: " + _listing(boolean))
    return out


def _split(y: np.ndarray, kind: str, seed: int, test_size: float, valid_size: float,
           spec: str) -> dict[str, np.ndarray]:
    n = len(y)
    n_test, n_valid = _count(test_size, n), _count(valid_size, n)
    stratify = kind != "regression"
    try:
        if n - n_test - n_valid < 1:
            raise ValueError("no row left for training")
        rest, test = train_test_split(np.arange(n), test_size=n_test, random_state=seed,
                                      stratify=y if stratify else None)
        train, valid = train_test_split(rest, test_size=n_valid, random_state=seed,
                                        stratify=y[rest] if stratify else None)
    except ValueError as exc:
        raise DataError(_split_error(n, test_size, valid_size, stratify, spec, exc)) from None
    return {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}


def _carve_valid(fixed: tuple[np.ndarray, np.ndarray], keep: np.ndarray, y: np.ndarray,
                 kind: str, seed: int, test_size: float, valid_size: float,
                 spec: str) -> dict[str, np.ndarray]:
    """Map a source's (train, test) rows past dropped rows; valid_size of all rows is carved
    out of its train part."""
    new_pos = np.cumsum(keep) - 1
    train_full, test = (new_pos[i[keep[i]]].astype(np.int64) for i in fixed)
    n_valid = _count(valid_size, len(y))
    stratify = kind != "regression"
    try:
        if len(train_full) - n_valid < 1:
            raise ValueError(f"the source's train part has only {len(train_full)} rows")
        train, valid = train_test_split(train_full, test_size=n_valid, random_state=seed,
                                        stratify=y[train_full] if stratify else None)
    except ValueError as exc:
        raise DataError(_split_error(len(y), test_size, valid_size, stratify, spec,
                                     exc)) from None
    return {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}


def _count(fraction: float, n: int) -> int:
    """Rows for a split part: the fraction of n, rounded, at least one."""
    return max(1, round(fraction * n))


def _split_error(n: int, test_size: float, valid_size: float, stratify: bool, spec: str,
                 exc: Exception) -> str:
    train_size = 1 - test_size - valid_size
    how = "stratified by class" if stratify else "at random"
    return (f"{spec}: cannot split {n} rows {how} into train/valid/test "
            f"{train_size:.0%}/{valid_size:.0%}/{test_size:.0%}: {exc}. Use more rows or "
            "change test_size/valid_size")


def _impute(X: np.ndarray, columns: pd.Index, train: np.ndarray, notes: list[str]) -> None:
    """Fill missing feature values in place with the column's train-split median."""
    missing = np.isnan(X)
    cols = np.flatnonzero(missing.any(axis=0))
    if len(cols) == 0:
        return
    with warnings.catch_warnings():  # an all-missing train column warns; it gets 0 below
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.nanmedian(X[np.ix_(train, cols)], axis=0)
    filled, no_train_value = [], []
    for j, median in zip(cols, medians):
        if math.isnan(median):
            median = 0.0
            no_train_value.append(str(columns[j]))
        X[missing[:, j], j] = median
        filled.append(f"{columns[j]} ({int(missing[:, j].sum())})")
    notes.append("missing feature values -> median of the train split: " + _listing(filled))
    if no_train_value:
        notes.append("no train value to take a median of, filled with 0: "
                     + _listing(no_train_value))


# ---------------------------------------------------------------- small helpers


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_finite(column: pd.Series, what: str) -> None:
    """Refuse infinite numbers and numbers beyond float32's range (the dtype a Task holds and
    models train in, where 1e300 becomes inf) in a numeric column. Left in, they surface as a
    candidate's failure far from their cause. Missing values (NaN) are not refused here."""
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        return
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isinf(values) | (np.abs(np.nan_to_num(values, nan=0.0)) > FLOAT32_MAX)
    if not bad.any():
        return
    rows = np.flatnonzero(bad)
    example = float(values[rows[0]])
    n, s = len(rows), "s" if len(rows) > 1 else ""
    how = (f"{n} infinite value{s}" if math.isinf(example) else
           f"{n} value{s} beyond float32's range (+-{FLOAT32_MAX:.3g}), where models train "
           "and such values become inf")
    raise DataError(f"{what} has {how}, e.g. {example:g} in data row {rows[0] + 1}; fix or "
                    "drop those rows (a missing value may be left empty: it is imputed)")


def _check_sizes(test_size: float, valid_size: float) -> None:
    if not (0 < test_size < 1 and 0 < valid_size < 1 and test_size + valid_size < 1):
        raise DataError(f"test_size={test_size} and valid_size={valid_size} must be fractions "
                        "in (0, 1) that leave rows for training (test_size + valid_size < 1)")


def _check_kind(kind: str) -> str:
    allowed = (*KINDS, "classification")
    if kind not in allowed:
        raise DataError(f"unknown kind {kind!r}; use one of {', '.join(allowed)}")
    return kind


def _sorted_labels(values: Sequence) -> tuple:
    labels = [_py(v) for v in values]
    try:
        return tuple(sorted(labels))
    except TypeError:  # mixed types: order by text, deterministic
        return tuple(sorted(labels, key=lambda v: (type(v).__name__, str(v))))


def _py(value: Any) -> Any:
    """Plain Python scalar, so that classes stay JSON-able."""
    return value.item() if isinstance(value, np.generic) else value


def _listing(items: list[str], limit: int = 10) -> str:
    more = f", +{len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
