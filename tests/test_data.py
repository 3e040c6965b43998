"""Tasks and loaders: every spec kind, the split, the preprocessing, and every bad-input error."""

from __future__ import annotations

import hashlib
import json
import re
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from autopilot_lab import data
from autopilot_lab.data import DataError, load_task, task_from_arrays

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
needs_shared = pytest.mark.shared  # skipped with its reason where the folder is absent


@pytest.fixture(autouse=True)
def _no_env_folder(monkeypatch):
    monkeypatch.delenv(data.ENV_DATASETS, raising=False)


def _check_split(task: data.Task) -> None:
    parts = [task.split[p] for p in data.PARTS]
    joined = np.concatenate(parts)
    assert all(p.dtype == np.int64 for p in parts)
    assert len(joined) == task.n_rows and len(np.unique(joined)) == task.n_rows


# ---------------------------------------------------------------- loading each spec kind


@pytest.mark.parametrize("name, kind, shape, classes", [
    ("iris", "multiclass", (150, 4), ("setosa", "versicolor", "virginica")),
    ("breast_cancer", "binary", (569, 30), ("malignant", "benign")),
    ("wine", "multiclass", (178, 13), ("class_0", "class_1", "class_2")),
    ("digits", "multiclass", (1797, 64), tuple(range(10))),
    ("diabetes", "regression", (442, 10), None),
])
def test_sklearn_specs(name, kind, shape, classes):
    task = load_task(f"sklearn:{name}")
    assert (task.name, task.spec, task.kind, task.X.shape) == (name, f"sklearn:{name}", kind, shape)
    assert task.X.dtype == np.float32 and len(task.feature_names) == shape[1]
    assert task.classes == classes
    if kind == "regression":
        assert task.y.dtype == np.float32 and task.n_classes is None and task.n_outputs == 1
    else:
        assert task.y.dtype == np.int64 and task.n_outputs == len(classes)
        assert set(np.unique(task.y)) == set(range(len(classes)))
    _check_split(task)


def test_california_housing_needs_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path))
    with pytest.raises(DataError, match="needs a one-time download") as err:
        load_task("sklearn:california_housing")
    assert str(tmp_path) in str(err.value) and "local:" in str(err.value)


@needs_shared
def test_local_from_shared_folder():
    task = load_task("local:breast_cancer", datasets_dir=SHARED)
    assert (task.kind, task.n_rows, task.n_features, task.classes) == ("binary", 286, 9, (0, 1))
    assert load_task("local:irish", datasets_dir=SHARED).openml_dataset_id == 451
    reg = load_task("local:1027_ESL", datasets_dir=SHARED)
    assert reg.kind == "regression" and reg.y.dtype == np.float32
    assert any("regression per manifest" in n for n in reg.preprocessing_notes)


@needs_shared
def test_shared_folder_found_relative_to_cwd(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert data.datasets_dir() == SHARED
    assert len(data.list_local()) > 4


def test_bundled_fallback(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ../shared/datasets here
    assert data.datasets_dir() == data.PACKAGE_DATASETS
    names = {r["name"]: r for r in data.list_local()}
    assert set(names) == {"iris", "breast_cancer", "1027_ESL", "penguins", "529_pollen"}
    assert names["iris"]["n_rows"] == 150 and names["1027_ESL"]["n_classes"] is None
    task = load_task("local:iris")
    assert task.kind == "multiclass" and task.n_rows == 150
    assert any("bundled copy" in n for n in task.preprocessing_notes)


def test_env_var_chooses_folder(monkeypatch, tmp_path):
    (tmp_path / "manifest.csv").write_text(
        (data.PACKAGE_DATASETS / "manifest.csv").read_text().splitlines()[0] + "\n"
        + "toy,regression,30,2,,,,toy.parquet,x\n")
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30),
                  "target": rng.normal(size=30)}).to_parquet(tmp_path / "toy.parquet")
    monkeypatch.setenv(data.ENV_DATASETS, str(tmp_path))
    assert data.datasets_dir() == tmp_path.resolve()
    assert load_task("local:toy").kind == "regression"
    monkeypatch.setenv(data.ENV_DATASETS, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"\$AUTOPILOT_DATASETS points at .*no manifest.csv"):
        data.datasets_dir()


def test_bundled_files_match_manifest_and_readme():
    folder = data.PACKAGE_DATASETS
    readme = (folder / "README.md").read_text()
    total = 0
    for row in data.list_local(folder):
        blob = (folder / row["file"]).read_bytes()
        total += len(blob)
        assert hashlib.sha256(blob).hexdigest() == row["sha256"], row["name"]
        assert row["sha256"] in readme
        frame = pd.read_parquet(folder / row["file"])
        assert frame.shape == (row["n_rows"], row["n_features"] + 1)
    assert total < 1_000_000


@needs_shared
def test_bundled_manifest_rows_equal_shared():
    shared = {r["name"]: r for r in data.list_local(SHARED)}
    for row in data.list_local(data.PACKAGE_DATASETS):
        assert row == shared[row["name"]]


# ---------------------------------------------------------------- split


def test_split_is_deterministic_and_sized():
    a, b = load_task("sklearn:breast_cancer", seed=3), load_task("sklearn:breast_cancer", seed=3)
    for part in data.PARTS:
        np.testing.assert_array_equal(a.split[part], b.split[part])
    np.testing.assert_array_equal(a.X, b.X)
    other = load_task("sklearn:breast_cancer", seed=4)
    assert not np.array_equal(a.split["test"], other.split["test"])
    assert {p: len(a.split[p]) for p in data.PARTS} == {"train": 341, "valid": 114, "test": 114}
    _check_split(a)
    small = load_task("sklearn:iris", test_size=0.3, valid_size=0.1)
    assert {p: len(small.split[p]) for p in data.PARTS} == {"train": 90, "valid": 15, "test": 45}


def test_split_is_stratified():
    task = load_task("local:breast_cancer", datasets_dir=data.PACKAGE_DATASETS)
    overall = task.y.mean()
    for part in data.PARTS:
        _, y = task.part(part)
        assert abs(y.sum() - overall * len(y)) <= 1, part  # within one row of the ratio


def test_part_returns_rows_of_the_split():
    task = load_task("sklearn:iris")
    X, y = task.part("valid")
    np.testing.assert_array_equal(X, task.X[task.split["valid"]])
    np.testing.assert_array_equal(y, task.y[task.split["valid"]])


# ---------------------------------------------------------------- preprocessing


def test_penguins_missing_values_get_train_medians():
    task = load_task("local:penguins", datasets_dir=data.PACKAGE_DATASETS)
    raw = pd.read_parquet(data.PACKAGE_DATASETS / "penguins.parquet")
    assert not np.isnan(task.X).any()
    note = next(n for n in task.preprocessing_notes if "median of the train split" in n)
    assert "sex (11)" in note and "body_mass_g (2)" in note
    train = task.split["train"]
    for col in ("sex", "body_mass_g"):
        j = task.feature_names.index(col)
        missing = raw[col].isna().to_numpy()
        expected = np.float32(raw[col].iloc[train].median())
        assert np.all(task.X[missing, j] == expected)
        np.testing.assert_array_equal(task.X[~missing, j],
                                      raw[col].to_numpy(np.float32)[~missing])


def test_csv_with_strings_booleans_and_missing(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    colors = np.array(["red", "green", "blue", None], dtype=object)[np.arange(n) % 4]
    frame = pd.DataFrame({"color": colors, "flag": np.arange(n) % 3 == 0,
                          "size": rng.normal(size=n),
                          "label": np.where(np.arange(n) % 2 == 0, "yes", "no")})
    path = tmp_path / "toy.csv"
    frame.to_csv(path, index=False)
    task = load_task(f"csv:{path}", target_col="label")
    assert (task.name, task.kind, task.classes) == ("toy", "binary", ("no", "yes"))
    np.testing.assert_array_equal(task.y, (np.arange(n) % 2 == 0).astype(np.int64))
    color = task.X[:, task.feature_names.index("color")]
    known = pd.notna(colors)
    codes = {"blue": 0, "green": 1, "red": 2}
    np.testing.assert_array_equal(color[known], [codes[c] for c in colors[known]])
    assert set(color[~known]) == {np.median(color[task.split["train"]][
        known[task.split["train"]]])}
    np.testing.assert_array_equal(task.X[:, task.feature_names.index("flag")],
                                  (np.arange(n) % 3 == 0).astype(np.float32))
    notes = " | ".join(task.preprocessing_notes)
    assert "ordinal codes over sorted categories: color (3)" in notes
    assert "boolean columns -> 0/1: flag" in notes and "color (10)" in notes
    assert "kind inferred: non-numeric target" in notes


def test_parquet_kind_inference_and_override(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=150), "const": 1.0,
                          "target": np.arange(150) % 25})
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    reg = load_task(f"parquet:{path}")
    assert reg.kind == "regression" and reg.n_features == 2  # constant column kept
    assert any("numeric target with 25 distinct values" in n for n in reg.preprocessing_notes)
    assert load_task(f"parquet:{path}", kind="classification").n_classes == 25
    frame.assign(target=np.arange(150) % 3).to_parquet(path)
    cls = load_task(f"parquet:{path}")
    assert cls.kind == "multiclass" and cls.classes == (0, 1, 2)


def test_rows_with_missing_target_dropped(tmp_path):
    frame = pd.DataFrame({"a": np.arange(50.0), "target": np.arange(50) % 2})
    frame["target"] = frame["target"].astype(float)
    frame.loc[[3, 7], "target"] = np.nan
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    task = load_task(f"csv:{path}")
    assert task.n_rows == 48 and task.kind == "binary" and task.classes == (0, 1)
    assert "dropped 2 rows with a missing target" in task.preprocessing_notes


def test_task_from_arrays():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    task = task_from_arrays(X, X[:, 0] * 2.5, name="lin", feature_names=["p", "q", "r"])
    assert (task.kind, task.spec, task.feature_names) == ("regression", "arrays:lin",
                                                          ("p", "q", "r"))
    frame = pd.DataFrame(X, columns=["u", "v", "w"])
    labels = np.where(X[:, 1] > 0, "pos", "neg")
    cls = task_from_arrays(frame, labels, kind="binary")
    assert cls.classes == ("neg", "pos") and cls.feature_names == ("u", "v", "w")


def test_save_npz_and_summary(tmp_path):
    task = load_task("sklearn:iris")
    path = task.save_npz(tmp_path / "sub" / "data.npz")
    assert path == tmp_path / "sub" / "data.npz"
    with np.load(path) as npz:
        assert set(npz.files) == {"X_train", "y_train", "X_valid", "y_valid", "X_test",
                                  "y_test", "kind", "n_classes"}
        np.testing.assert_array_equal(npz["X_test"], task.part("test")[0])
        assert str(npz["kind"]) == "multiclass" and int(npz["n_classes"]) == 3
    summary = json.loads(json.dumps(task.summary()))
    assert summary["split"] == {"train": 90, "valid": 30, "test": 30}
    assert summary["classes"] == ["setosa", "versicolor", "virginica"]
    assert (summary["rows"], summary["features"], summary["kind"]) == (150, 4, "multiclass")
    reg = load_task("sklearn:diabetes").save_npz(tmp_path / "reg.npz")
    with np.load(reg) as npz:
        assert int(npz["n_classes"]) == 0 and npz["y_train"].dtype == np.float32


# ---------------------------------------------------------------- bad input


def _csv(tmp_path: Path, frame: pd.DataFrame) -> str:
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return f"csv:{path}"


def test_spec_errors():
    with pytest.raises(DataError, match=r"unknown data source 'hf'.*allowed: sklearn:<name>"):
        load_task("hf:iris")
    with pytest.raises(DataError, match="has no source prefix"):
        load_task("iris")
    with pytest.raises(DataError, match="names nothing after 'local:'"):
        load_task("local:")
    with pytest.raises(DataError, match=r"unknown scikit-learn dataset 'iriss'.*did you mean iris"):
        load_task("sklearn:iriss")
    with pytest.raises(DataError, match="target_col='x' does not apply to sklearn"):
        load_task("sklearn:iris", target_col="x")
    with pytest.raises(DataError, match="test_size=0.5 and valid_size=0.5"):
        load_task("sklearn:iris", test_size=0.5, valid_size=0.5)
    with pytest.raises(DataError, match="unknown kind 'ordinal'"):
        load_task("sklearn:iris", kind="ordinal")
    with pytest.raises(DataError, match="kind 'binary' was asked for, but the target has 3"):
        load_task("sklearn:iris", kind="binary")
    with pytest.raises(DataError, match="unknown split part 'dev'; use one of train, valid, test"):
        load_task("sklearn:iris").part("dev")


def test_unknown_local_name_lists_close_matches_and_folder():
    with pytest.raises(DataError) as err:
        load_task("local:irs", datasets_dir=data.PACKAGE_DATASETS)
    msg = str(err.value)
    assert "no dataset 'irs'" in msg and "close matches: iris" in msg
    assert str(data.PACKAGE_DATASETS) in msg and "the datasets_dir argument" in msg
    with pytest.raises(DataError, match="has no manifest.csv"):
        load_task("local:iris", datasets_dir=Path(__file__).parent)


def test_file_errors(tmp_path):
    with pytest.raises(DataError, match="csv file not found: .*missing.csv"):
        load_task(f"csv:{tmp_path / 'missing.csv'}")
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0, 1, 0]})
    with pytest.raises(DataError, match=r"target column 'target' not found in .*columns: a, b"):
        load_task(_csv(tmp_path, frame))
    with pytest.raises(DataError, match="did you mean bb"):
        load_task(_csv(tmp_path, frame.rename(columns={"b": "bb"})), target_col="b")
    (tmp_path / "empty.csv").write_text("a,target\n")
    with pytest.raises(DataError, match="empty.csv is empty"):
        load_task(f"csv:{tmp_path / 'empty.csv'}")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="cannot read .*junk.parquet as parquet"):
        load_task(f"parquet:{tmp_path / 'junk.parquet'}")
    with pytest.raises(DataError, match="has only the target column"):
        load_task(_csv(tmp_path, frame[["b"]].rename(columns={"b": "target"})))


def test_target_errors(tmp_path):
    base = pd.DataFrame({"a": np.arange(30.0)})
    with pytest.raises(DataError, match=r"single class \('x'\) in 30 rows"):
        load_task(_csv(tmp_path, base.assign(target="x")))
    rare = np.array(["a"] * 14 + ["b"] * 14 + ["c"] * 2)
    with pytest.raises(DataError, match=r"fewer than 3 rows .*'c' \(2\)"):
        load_task(_csv(tmp_path, base.assign(target=rare)))
    with pytest.raises(DataError, match="every target value is missing"):
        load_task(_csv(tmp_path, base.assign(target=np.nan)))
    with pytest.raises(DataError, match="regression target must be numeric"):
        load_task(_csv(tmp_path, base.assign(target=rare)), kind="regression")
    with pytest.raises(DataError, match="cannot split 6 rows stratified by class"):
        task_from_arrays(np.zeros((6, 1)), [0, 0, 0, 1, 1, 1], test_size=0.2)
    with pytest.raises(DataError, match="y must have one value per row of X; got 2 values"):
        task_from_arrays(np.zeros((6, 1)), [0, 1])
    with pytest.raises(DataError, match=r"y must be 1-D \(one value per row\); got shape"):
        task_from_arrays(np.zeros((6, 1)), np.zeros((6, 2)))
    with pytest.raises(DataError, match="X must be 2-D"):
        task_from_arrays(np.zeros(6), np.zeros(6))
    dates = pd.DataFrame({"d": pd.date_range("2024-01-01", periods=30), "y": np.arange(30.0)})
    with pytest.raises(DataError, match="feature column 'd' has unsupported dtype"):
        task_from_arrays(dates[["d"]], dates["y"])


# ---------------------------------------------------------------- openml


def test_openml_bad_id():
    with pytest.raises(DataError, match="needs an integer task id"):
        load_task("openml:credit-g")
    with pytest.raises(DataError, match="target_col='x' does not apply to openml"):
        load_task("openml:31", target_col="x")


def _unreachable_openml(openml, monkeypatch, tmp_path) -> None:
    """OpenML as it is offline, wherever the test runs: a server address on this machine
    where nothing listens (connection refused) and an empty cache."""
    with socket.socket() as probe:  # a port nothing listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(openml.config, "server", f"http://127.0.0.1:{port}/api/v1/xml")
    monkeypatch.setattr(openml.config, "_root_cache_directory", tmp_path)  # nothing cached
    monkeypatch.setenv(data.ENV_OPENML_TIMEOUT, "10")


def test_openml_unreachable_is_a_clear_error(monkeypatch, tmp_path):
    openml = pytest.importorskip("openml")
    _unreachable_openml(openml, monkeypatch, tmp_path)
    retries = openml.config.connection_n_retries
    with pytest.raises(DataError) as err:
        load_task("openml:31")
    msg = str(err.value)
    assert "task 31" in msg and ("unreachable" in msg or "no answer" in msg)
    assert "local:" in msg and str(tmp_path) in msg
    assert openml.config.connection_n_retries == retries


def test_openml_task_uses_openml_split(monkeypatch):
    openml = pytest.importorskip("openml")
    n = 100
    X = pd.DataFrame({"num": np.arange(n, dtype=float),
                      "cat": pd.Categorical(np.array(["b", "a"])[np.arange(n) % 2])})
    y = pd.Series(pd.Categorical(np.array(["bad", "good"])[(np.arange(n) // 2) % 2]))
    test_idx = np.arange(0, n, 5)
    train_idx = np.setdiff1d(np.arange(n), test_idx)
    fake = SimpleNamespace(
        task_type_id=openml.tasks.TaskType.SUPERVISED_CLASSIFICATION, dataset_id=31,
        get_X_and_y=lambda dataset_format: (X, y),
        get_train_test_split_indices=lambda fold, repeat, sample: (train_idx, test_idx),
        get_dataset=lambda: SimpleNamespace(name="credit-g"))
    monkeypatch.setattr(openml.tasks, "get_task", lambda task_id, **kw: fake)
    task = load_task("openml:31", seed=0)
    assert (task.name, task.kind, task.classes) == ("credit-g", "binary", ("bad", "good"))
    assert (task.openml_task_id, task.openml_dataset_id) == (31, 31)
    np.testing.assert_array_equal(task.split["test"], test_idx)
    assert len(task.split["valid"]) == 20 and len(task.split["train"]) == 60
    assert np.isin(task.split["valid"], train_idx).all()
    np.testing.assert_array_equal(task.X[:, 1], np.arange(n) % 2 == 0)  # "a" -> 0, "b" -> 1
    assert any("OpenML's own split" in note for note in task.preprocessing_notes)


@needs_shared
def test_local_suite_lists_every_manifest_row_as_a_local_spec(shared_datasets):
    specs = data.load_suite(f"local-suite:{shared_datasets}")
    names = [r["name"] for r in data.list_local(shared_datasets)]
    assert specs == [f"local:{n}" for n in names] and len(specs) >= 100
    task = load_task(specs[0], datasets_dir=shared_datasets)  # loadable from that folder
    assert task.name == names[0]
    bundled = data.load_suite("local-suite:", datasets_dir=data.PACKAGE_DATASETS)
    assert "local:iris" in bundled and len(bundled) == len(data.list_local(data.PACKAGE_DATASETS))


def test_openml_suite_alias_reads_the_suite_through_openml(monkeypatch):
    openml = pytest.importorskip("openml")
    asked = []

    def get_suite(suite_id):
        asked.append(suite_id)
        return SimpleNamespace(tasks=[3, 6, 11])

    monkeypatch.setattr(openml.study, "get_suite", get_suite)
    assert data.load_suite("openml-suite:OpenML-CC18") == ["openml:3", "openml:6", "openml:11"]
    assert data.load_suite("openml-suite:271") == ["openml:3", "openml:6", "openml:11"]
    assert asked == [99, 271]


def test_openml_suite_unreachable_and_bad_suite_specs_are_clear_errors(monkeypatch, tmp_path):
    openml = pytest.importorskip("openml")
    _unreachable_openml(openml, monkeypatch, tmp_path)
    with pytest.raises(DataError, match="suite 99 could not be loaded: it is not cached"):
        data.load_suite("openml-suite:OpenML-CC18")
    for bad, words in (("cc18", "no source prefix"), ("openml-suite:", "names no suite"),
                       ("kaggle-suite:x", "unknown suite source")):
        with pytest.raises(DataError, match=words):
            data.load_suite(bad)


# ---------------------------------------------------------------- npz


def test_npz_arrays_are_a_task_and_bad_ones_say_what_is_wrong(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    good = tmp_path / "good.npz"
    np.savez(good, x_features=x, y=y)
    task = load_task(f"npz:{good}")
    assert task.kind == "binary" and task.X.shape == (90, 4) and task.n_features == 4
    assert task.feature_names[0] == "x_features_0"
    np.testing.assert_array_equal(np.sort(task.X[:, 0]), np.sort(x[:, 0]))
    cases = {
        "no_y.npz": ({"x": x}, "needs the features as x"),
        "two_inputs.npz": ({"x_a": x, "x_b": x, "y": y}, "several inputs (x_a, x_b)"),
        "image.npz": ({"x": rng.normal(size=(90, 4, 4, 1)), "y": y},
                      "has shape (90, 4, 4, 1)"),
        "short_y.npz": ({"x": x, "y": y[:10]}, "y has shape (10,) for 90 rows"),
        "objects.npz": ({"x": np.array([{"a": 1}] * 90, dtype=object), "y": y},
                        "no pickled objects"),
    }
    for name, (arrays, words) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(DataError, match=re.escape(words)):
            load_task(f"npz:{tmp_path / name}")
    with pytest.raises(DataError, match="npz file not found"):
        load_task(f"npz:{tmp_path / 'absent.npz'}")
