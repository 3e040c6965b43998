"""Every bad input a clear error (issue 15): the CLI verbs and the Python API, one table each.

A CLI case must end in exit 2 (the README's "bad input"), exactly one ``autopilot: error:``
line on stderr naming what is wrong and where (the value, the file or the flag), nothing on
stdout, no traceback, and no run left in the store. An API case must raise a TypeError or a
ValueError (or FileNotFoundError, KeyError for an unknown run) whose message names the
argument, before any run is created. Cases call ``cli.main`` in this process (a subprocess
costs seconds of imports); only the real pipe and the environment of a fresh process run
``autopilot`` as a subprocess. Nothing here trains or imports TensorFlow: every check comes
before the sandbox and Keras.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from autopilot_lab import api
from autopilot_lab.candidate import Candidate, Recipe
from autopilot_lab.cli import main
from autopilot_lab.events import Event
from autopilot_lab.hints import Hint, HintKind
from autopilot_lab.scorecard import Scorecard, Verdict
from autopilot_lab.store import Store

ROOT = Path(__file__).resolve().parents[1]
AUTOPILOT = str(Path(sys.executable).parent / "autopilot")
MLP = "examples/tabular_mlp.py:TabularMLP"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ---------------------------------------------------------------- the bad files


def _csv(rows: list[str]) -> str:
    return "\n".join(rows) + "\n"


TWELVE = [f"{i},{i % 5},{i % 2}" for i in range(12)]  # a,b,target: two classes of six

BAD_FILES: dict[str, str | bytes] = {
    "syntax.py": "import torch\n\nclass Net(torch.nn.Module)\n    pass\n",
    "noclass.py": "x = 1\n",
    "empty.py": "",
    "binary.py": bytes(range(128, 256)) * 4,
    "plain.py": "class Net:\n    def forward(self, x):\n        return x\n",
    "garbage.keras": b"\x00\x01 not a zip archive " * 20,
    "empty.keras": b"",
    "garbage.h5": b"not an HDF5 file " * 20,
    "model.txt": "a text file\n",
    "inf.csv": _csv(["a,b,target", "1,inf,0", *TWELVE]),
    "big.csv": _csv(["a,b,target", "1,1e300,0", *TWELVE]),
    "bigtarget.csv": _csv(["a,b,target", *[f"{i},{i},{i * 1.5}" for i in range(30)],
                           "1,1,1e300"]),
    "notarget.csv": _csv(["a,b,label", *TWELVE]),
    "empty.csv": "",
    "header.csv": "a,b,target\n",
    "oneclass.csv": _csv(["a,target", *[f"{i},0" for i in range(12)]]),
    "nantarget.csv": _csv(["a,target", *[f"{i}," for i in range(12)]]),
    "onlytarget.csv": _csv(["target", *[str(i % 2) for i in range(12)]]),
    "bytes.csv": bytes(range(128, 256)) * 8,
    "recipe_list.json": "[1, 2]",
    "recipe_bad.json": "{lr: 0.1}",
    "recipe_types.json": '{"epochs": "ten"}',
    "a_file": "a file where a folder is expected\n",
    "cand_model_only/model.py": "import torch\n",
    "corrupt_home/autopilot.db": bytes(range(256)) * 8,
    "text_home/autopilot.db": "this is not a database\n",
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of bad files, made once for the module (cases only read them; a store case
    may add an empty runs/ folder beside a bad database)."""
    d = tmp_path_factory.mktemp("bad")
    for name, content in BAD_FILES.items():
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    for folder in ("folder.keras", "cand_empty", "dbdir_home/autopilot.db"):
        (d / folder).mkdir(parents=True)
    with zipfile.ZipFile(d / "zip.keras", "w") as z:  # a zip, so it passes the cheap checks
        z.writestr("hello.txt", "not a Keras model")
    return d


def _fake_run(home: Path, iterations: int = 2, hints: int = 1) -> str:
    """A finished run with ``iterations`` scored iterations, recorded through the store's
    events (nothing trains); ``hints`` hints per iteration make ``show`` long."""
    with Store(home) as store:
        run_id = store.create_run("improve", {"objective": "improve", "max_iters": 3},
                                  "rules", 3)
        for n in range(1, iterations + 1):
            cand = Candidate(files={"model.py": "class Net:\n    pass\n"}, entry="Net")
            verdict = Verdict("static", 0, True, True, 1.0, hints=tuple(
                Hint(HintKind.STYLE, "static", f"ruff E{i}", "x" * 100, "no finding",
                     "y" * 200, where=f"model.py:{i}") for i in range(hints)))
            card = Scorecard((verdict,))
            for e in (Event("iteration_started", run_id, {"iteration": n}),
                      Event("candidate_proposed", run_id, {"iteration": n, "agent": "rules",
                                                            "candidate": cand.to_dict()}),
                      Event("check_finished", run_id, {"iteration": n,
                                                       "verdict": verdict.to_dict(True)}),
                      Event("iteration_finished", run_id, {
                          "iteration": n, "scorecard": card.to_dict(True),
                          "score": card.score, "best_iteration": 1,
                          "best_score": card.score})):
                store.subscriber(e)
        store.subscriber(Event("run_finished", run_id, {"status": "finished",
                                                        "reason": "iteration budget spent"}))
    return run_id


def _runs(home: Path) -> list[str]:
    folder = home / "runs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _assert_one_line_error(code: int, out: str, err: str, needles: list[str]) -> str:
    """Exit 2, stdout empty, stderr one ``autopilot: error:`` line holding every needle."""
    assert "Traceback" not in out + err, err
    assert code == 2, f"exit {code}\nstdout: {out}\nstderr: {err}"
    assert out.strip() == "", f"bad input printed on stdout: {out}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    line = lines[0]
    assert line.startswith("autopilot: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


# ---------------------------------------------------------------- the CLI table


@dataclass(frozen=True)
class Cli:
    """``autopilot ARGV`` must fail with exit 2 and one error line holding every needle.
    ``{d}`` is the folder of bad files, ``{run}`` a finished run of two iterations."""

    id: str
    argv: tuple[str, ...]
    needles: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


def improve(*extra: str, model: str = MLP, data: str = "sklearn:iris") -> tuple[str, ...]:
    return ("improve", model, "--data", data, *extra)


CLI_CASES = [
    # improve: the model
    Cli("model-missing", improve(model="{d}/missing.py:Net"),
        ("model file", "missing.py", "not found")),
    Cli("model-is-a-folder", improve(model="{d}"), ("{d}", "is a folder")),
    Cli("model-empty-file", improve(model="{d}/empty.py:Net"), ("empty.py is empty", "'Net'")),
    Cli("model-empty-file-no-class", improve(model="{d}/empty.py"), ("empty.py is empty",)),
    Cli("model-class-missing", improve(model="examples/tabular_mlp.py:Nope"),
        ("tabular_mlp.py defines no class 'Nope'", "TabularMLP")),
    Cli("model-no-module-class", improve(model="{d}/noclass.py"),
        ("noclass.py defines 0 nn.Module classes",)),
    Cli("model-syntax-error-no-class", improve(model="{d}/syntax.py"),
        ("syntax.py does not parse", "line 3")),
    Cli("model-not-text", improve(model="{d}/binary.py:Net"),
        ("cannot read model file", "binary.py", "UTF-8")),
    Cli("model-class-not-a-name", improve(model="examples/tabular_mlp.py:1Net"),
        ("'1Net'", "not a Python class name")),
    Cli("improve-without-data", ("improve", MLP), ("needs MODEL", "--data")),
    # improve: the data
    Cli("data-no-prefix", improve(data="iris"), ("'iris'", "no source prefix")),
    Cli("data-unknown-source", improve(data="nope:x"), ("unknown data source 'nope'",)),
    Cli("data-unknown-sklearn", improve(data="sklearn:nope"),
        ("unknown scikit-learn dataset 'nope'",)),
    Cli("data-csv-missing", improve(data="csv:{d}/missing.csv"),
        ("csv file not found", "missing.csv")),
    Cli("data-csv-is-a-folder", improve(data="csv:{d}"), ("{d}", "is a folder")),
    Cli("data-csv-no-target-column", improve(data="csv:{d}/notarget.csv"),
        ("target column 'target' not found", "notarget.csv", "label")),
    Cli("data-csv-empty", improve(data="csv:{d}/empty.csv"), ("empty.csv is empty",)),
    Cli("data-csv-header-only", improve(data="csv:{d}/header.csv"), ("header.csv is empty",)),
    Cli("data-csv-one-class", improve(data="csv:{d}/oneclass.csv"), ("single class",)),
    Cli("data-csv-nan-targets", improve(data="csv:{d}/nantarget.csv"),
        ("every target value is missing",)),
    Cli("data-csv-binary-garbage", improve(data="csv:{d}/bytes.csv"),
        ("cannot read", "bytes.csv")),
    Cli("data-csv-inf-feature", improve(data="csv:{d}/inf.csv"),
        ("inf.csv", "feature column 'b'", "infinite", "row 1")),
    Cli("data-csv-1e300-feature", improve(data="csv:{d}/big.csv"),
        ("big.csv", "feature column 'b'", "1e+300", "float32")),
    Cli("data-csv-1e300-target", improve(data="csv:{d}/bigtarget.csv"),
        ("bigtarget.csv", "target column", "1e+300")),
    Cli("data-csv-only-target", improve(data="csv:{d}/onlytarget.csv"),
        ("only the target column",)),
    Cli("data-parquet-garbage", improve(data="parquet:{d}/bytes.csv"),
        ("cannot read", "bytes.csv", "parquet")),
    Cli("data-local-unknown", improve(data="local:no_such_dataset"),
        ("no dataset 'no_such_dataset'",)),
    Cli("data-datasets-dir-missing", improve("--datasets-dir", "{d}/nope", data="local:iris"),
        ("{d}/nope", "no manifest.csv")),
    Cli("data-openml-not-a-number", improve(data="openml:abc"), ("integer task id",)),
    # improve: the target
    Cli("target-garbage", improve("--target", "garbage"), ("cannot parse target 'garbage'",)),
    Cli("target-unreachable", improve("--target", "roc_auc>=2", data="sklearn:breast_cancer"),
        ("'roc_auc>=2'", "can never be met")),
    Cli("target-wrong-way", improve("--target", "rmse>=3", data="sklearn:diabetes"),
        ("'rmse>=3'", "points the wrong way")),
    Cli("target-wrong-kind", improve("--target", "rmse<=3"),
        ("'rmse<=3'", "does not fit a multiclass task")),
    Cli("target-baseline-not-a-number", improve("--target", "baseline-x"),
        ("'baseline-x'", "'x' is not a number")),
    Cli("target-nan", improve("--target", "balanced_accuracy>=nan"), ("finite",)),
    # improve: numbers
    Cli("epochs-zero", improve("--epochs", "0"), ("--epochs", "'0'", "from 1")),
    Cli("epochs-negative", improve("--epochs", "-3"), ("--epochs", "'-3'")),
    Cli("epochs-float", improve("--epochs", "2.5"), ("--epochs", "'2.5'")),
    Cli("epochs-huge", improve("--epochs", "99999999999"), ("--epochs", "100000")),
    Cli("batch-size-zero", improve("--batch-size", "0"), ("--batch-size", "'0'")),
    Cli("batch-size-huge", improve("--batch-size", "10000000000"), ("--batch-size",)),
    Cli("lr-zero", improve("--lr", "0"), ("--lr", "'0'", "> 0")),
    Cli("lr-negative", improve("--lr", "-1"), ("--lr", "'-1'")),
    Cli("lr-inf", improve("--lr", "inf"), ("--lr", "'inf'", "finite")),
    Cli("lr-nan", improve("--lr", "nan"), ("--lr", "'nan'")),
    Cli("lr-overflow", improve("--lr", "1e999"), ("--lr", "'1e999'")),
    Cli("lr-text", improve("--lr", "fast"), ("--lr", "'fast'")),
    Cli("weight-decay-negative", improve("--weight-decay", "-0.1"), ("--weight-decay",)),
    Cli("grad-clip-nan", improve("--grad-clip", "nan"), ("--grad-clip",)),
    Cli("early-stopping-negative", improve("--early-stopping", "-1"), ("--early-stopping",)),
    Cli("max-iters-zero", improve("--max-iters", "0"), ("--max-iters", "'0'")),
    Cli("max-iters-float", improve("--max-iters", "1.5"), ("--max-iters", "'1.5'")),
    Cli("max-iters-huge", improve("--max-iters", "1000000"), ("--max-iters", "1000")),
    Cli("seed-negative", improve("--seed", "-1"), ("--seed", "'-1'")),
    Cli("optimizer-unknown", improve("--optimizer", "lion"), ("--optimizer", "'lion'")),
    Cli("preprocessing-unknown", improve("--preprocessing", "minmax"),
        ("--preprocessing", "'minmax'")),
    Cli("agent-unknown", improve("--agent", "gpt"), ("--agent", "'gpt'")),
    Cli("agent-replay-unknown-run", improve("--agent", "replay:r-nope"), ("no run 'r-nope'",)),
    # improve: --init
    Cli("init-without-equals", improve("--init", "hidden"), ("--init", "'hidden'")),
    Cli("init-empty-key", improve("--init", "=3"), ("--init", "'=3'")),
    Cli("init-empty-value", improve("--init", "hidden="), ("--init", "'hidden='", "no value")),
    Cli("init-key-not-a-name", improve("--init", "two words=3"), ("--init", "'two words=3'")),
    # improve: --recipe
    Cli("recipe-inline-list", improve("--recipe", "[1, 2]"), ("--recipe", "JSON object", "list")),
    Cli("recipe-file-list", improve("--recipe", "{d}/recipe_list.json"),
        ("--recipe", "recipe_list.json", "JSON object", "list")),
    Cli("recipe-inline-bad-json", improve("--recipe", "{lr: 0.1}"),
        ("--recipe", "not valid JSON")),
    Cli("recipe-file-bad-json", improve("--recipe", "{d}/recipe_bad.json"),
        ("--recipe", "recipe_bad.json", "not valid JSON")),
    Cli("recipe-wrong-type", improve("--recipe", '{"lr": "x"}'),
        ("--recipe", "Recipe.lr must be a number", "'x'")),
    Cli("recipe-file-wrong-type", improve("--recipe", "{d}/recipe_types.json"),
        ("--recipe", "recipe_types.json", "Recipe.epochs must be an integer", "'ten'")),
    Cli("recipe-float-epochs", improve("--recipe", '{"epochs": 1.5}'),
        ("--recipe", "Recipe.epochs must be an integer", "1.5")),
    Cli("recipe-unknown-key", improve("--recipe", '{"learning_rate": 0.1}'),
        ("--recipe", "unknown recipe fields ['learning_rate']")),
    Cli("recipe-negative-lr", improve("--recipe", '{"lr": -1}'),
        ("--recipe", "Recipe.lr must be > 0", "-1")),
    Cli("recipe-text-for-bool", improve("--recipe", '{"nesterov": "yes"}'),
        ("--recipe", "Recipe.nesterov", "'yes'")),
    Cli("recipe-class-weight-list", improve("--recipe", '{"class_weight": [1, 2]}'),
        ("--recipe", "Recipe.class_weight")),
    Cli("recipe-missing-file", improve("--recipe", "{d}/nope.json"),
        ("--recipe", "nope.json", "no such file")),
    Cli("recipe-is-a-folder", improve("--recipe", "{d}"), ("--recipe", "{d}", "is a folder")),
    # improve --from
    Cli("from-unknown-run", ("improve", "--from", "r-nope"), ("no run 'r-nope'",)),
    Cli("from-and-model", ("improve", MLP, "--from", "{run}"), ("leave out MODEL",)),
    Cli("from-and-recipe-flag", ("improve", "--from", "{run}", "--epochs", "5"),
        ("--from", "leave out --recipe, the recipe flags")),
    # migrate
    Cli("migrate-missing-file", ("migrate", "{d}/nope.keras"), ("nope.keras", "does not exist")),
    Cli("migrate-garbage-keras", ("migrate", "{d}/garbage.keras"),
        ("garbage.keras", "not a .keras archive")),
    Cli("migrate-empty-keras", ("migrate", "{d}/empty.keras"),
        ("empty.keras", "is empty (0 bytes)")),
    Cli("migrate-keras-path-is-a-folder", ("migrate", "{d}/folder.keras"),
        ("folder.keras", "not a SavedModel")),
    Cli("migrate-wrong-extension", ("migrate", "{d}/model.txt"),
        ("model.txt", "not a Keras model file", "'.txt'")),
    Cli("migrate-garbage-h5", ("migrate", "{d}/garbage.h5"), ("garbage.h5", "not an HDF5 file")),
    Cli("migrate-epochs-zero", ("migrate", "{d}/zip.keras", "--epochs", "0"),
        ("--epochs", "'0'")),
    Cli("migrate-epochs-float", ("migrate", "{d}/zip.keras", "--epochs", "1.5"),
        ("--epochs", "'1.5'")),
    Cli("migrate-batch-size-negative", ("migrate", "{d}/zip.keras", "--batch-size", "-32"),
        ("--batch-size", "'-32'")),
    Cli("migrate-max-iters-zero", ("migrate", "{d}/zip.keras", "--max-iters", "0"),
        ("--max-iters", "'0'")),
    Cli("migrate-class-weight-list", ("migrate", "{d}/zip.keras", "--class-weight", "[1]"),
        ("--class-weight", "'[1]'")),
    Cli("migrate-start-missing", ("migrate", "{d}/zip.keras", "--start", "{d}/nope"),
        ("start folder", "{d}/nope", "does not exist")),
    Cli("migrate-start-is-a-file", ("migrate", "{d}/zip.keras", "--start", "{d}/a_file"),
        ("start", "a_file", "is a file")),
    Cli("migrate-start-incomplete",
        ("migrate", "{d}/zip.keras", "--start", "{d}/cand_model_only"),
        ("cand_model_only", "lacks weights.pt")),
    # verify
    Cli("verify-missing-model", ("verify", "{d}/nope.keras", "{d}/cand_empty"),
        ("nope.keras", "does not exist")),
    Cli("verify-missing-folder", ("verify", "{d}/zip.keras", "{d}/nope"),
        ("candidate_dir folder", "{d}/nope", "does not exist")),
    Cli("verify-folder-is-a-file", ("verify", "{d}/zip.keras", "{d}/a_file"),
        ("candidate_dir", "a_file", "is a file")),
    Cli("verify-empty-folder", ("verify", "{d}/zip.keras", "{d}/cand_empty"),
        ("cand_empty", "lacks model.py, weights.pt")),
    Cli("verify-epochs-zero", ("verify", "{d}/zip.keras", "{d}/cand_empty", "--epochs", "0"),
        ("--epochs", "'0'")),
    # runs and the store
    Cli("runs-limit-zero", ("runs", "--limit", "0"), ("--limit", "'0'")),
    Cli("runs-limit-negative", ("runs", "--limit", "-1"), ("--limit", "'-1'")),
    Cli("runs-status-unknown", ("runs", "--status", "bogus"), ("status", "'bogus'")),
    Cli("home-is-a-file", ("--home", "{d}/a_file", "runs"),
        ("a_file", "is a file, not a folder", "--home")),
    Cli("home-env-is-a-file", ("runs",), ("a_file", "is a file", "$AUTOPILOT_HOME"),
        env={"AUTOPILOT_HOME": "{d}/a_file"}),
    Cli("store-corrupt-db", ("--home", "{d}/corrupt_home", "runs"),
        ("corrupt_home/autopilot.db", "not a database")),
    Cli("store-db-not-sqlite", ("--home", "{d}/text_home", "runs"),
        ("text_home/autopilot.db", "not a SQLite database")),
    Cli("store-db-is-a-folder", ("--home", "{d}/dbdir_home", "runs"),
        ("dbdir_home/autopilot.db", "unable to open database file")),
    Cli("db-url-unparsable", ("runs",), ("$AUTOPILOT_DB_URL", "'nonsense'", "not a database URL"),
        env={"AUTOPILOT_DB_URL": "nonsense"}),
    Cli("db-url-unknown-driver", ("runs",), ("mysql+nodriver", "$AUTOPILOT_DB_URL"),
        env={"AUTOPILOT_DB_URL": "mysql+nodriver://u@localhost/db"}),
    Cli("db-url-in-memory", ("runs",), ("in-memory",), env={"AUTOPILOT_DB_URL": "sqlite://"}),
    Cli("db-url-under-a-file", ("runs",), ("a_file is a file", "$AUTOPILOT_DB_URL"),
        env={"AUTOPILOT_DB_URL": "sqlite:///{d}/a_file/x.db"}),
    # show, resume, doctor, the command itself
    Cli("show-unknown-run", ("show", "r-nope"), ("no run 'r-nope'", "autopilot runs")),
    Cli("show-home-is-a-file", ("--home", "{d}/a_file", "show", "r-x"), ("is a file",)),
    Cli("resume-unknown-run", ("resume", "r-nope"), ("no run 'r-nope'",)),
    Cli("resume-max-iters-zero", ("resume", "{run}", "--max-iters", "0"),
        ("--max-iters", "'0'")),
    Cli("resume-max-iters-float", ("resume", "{run}", "--max-iters", "1.5"),
        ("--max-iters", "'1.5'")),
    Cli("resume-max-iters-below-done", ("resume", "{run}", "--max-iters", "1"),
        ("max_iters=1", "2 iterations", "{run}")),
    Cli("doctor-unknown-flag", ("doctor", "--bogus"), ("unrecognized arguments: --bogus",)),
    Cli("unknown-command", ("frobnicate",), ("invalid choice: 'frobnicate'",)),
    Cli("home-without-value", ("--home",), ("--home", "expected one argument")),
]


def _fill(text: str, d: Path, run: str) -> str:
    return text.replace("{d}", str(d)).replace("{run}", run)


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_cli_bad_input_is_one_line_and_exit_2(case: Cli, bad: Path, home: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A bad input is named on one line, exit 2; no traceback, no output, no new run."""
    monkeypatch.chdir(ROOT)
    run_id = _fake_run(home) if any("{run}" in a for a in case.argv) else ""
    for key, value in case.env.items():
        monkeypatch.setenv(key, _fill(value, bad, run_id))
    before = _runs(home)
    capsys.readouterr()
    code = main([_fill(a, bad, run_id) for a in case.argv])
    out, err = capsys.readouterr()
    _assert_one_line_error(code, out, err, [_fill(n, bad, run_id) for n in case.needles])
    assert _runs(home) == before, "a bad input left a run in the store"


def test_the_table_is_large_enough() -> None:
    """Issue 15 asks for at least 60 bad inputs; ids must stay unique to be rerun by name."""
    ids = [c.id for c in CLI_CASES] + [c.id for c in API_CASES]
    assert len(ids) >= 60 and len(ids) == len(set(ids))


# ---------------------------------------------------------------- the API table


@dataclass(frozen=True)
class Call:
    """``call(d, run)`` must raise ``error`` with every needle in its message."""

    id: str
    call: Callable[[Path, str], Any]
    error: type[BaseException]
    needles: tuple[str, ...]


def _improve(model: Any = MLP, data: Any = "sklearn:iris", **kw: Any
             ) -> Callable[[Path, str], Any]:
    return lambda d, run: api.improve(model, data, **kw)


def _migrate(keras: str = "{d}/zip.keras", **kw: Any) -> Callable[[Path, str], Any]:
    return lambda d, run: api.migrate(_fill(keras, d, run),
                                      **{k: _fill(v, d, run) if isinstance(v, str) else v
                                         for k, v in kw.items()})


SRC = {"model.py": "class Net:\n    pass\n"}

API_CASES = [
    Call("api-improve-model-int", _improve(model=123), TypeError, ("model must be", "int")),
    Call("api-improve-model-none", _improve(model=None), TypeError, ("model must be",)),
    Call("api-improve-data-int", _improve(data=123), TypeError, ("data must be", "123")),
    Call("api-improve-max-iters-float", _improve(max_iters=1.5), TypeError,
         ("max_iters must be an integer", "1.5")),
    Call("api-improve-max-iters-zero", _improve(max_iters=0), ValueError, ("max_iters", "0")),
    Call("api-improve-max-iters-text", _improve(max_iters="3"), TypeError, ("max_iters",)),
    Call("api-improve-max-iters-bool", _improve(max_iters=True), TypeError, ("max_iters",)),
    Call("api-improve-max-iters-huge", _improve(max_iters=10**20), ValueError, ("max_iters",)),
    Call("api-improve-agent-unknown", _improve(agent="gpt"), ValueError, ("agent 'gpt'",)),
    Call("api-improve-agent-none", _improve(agent=None), TypeError, ("agent must be",)),
    Call("api-improve-agent-replay-unknown", _improve(agent="replay:r-nope"), KeyError,
         ("no run 'r-nope'",)),
    Call("api-improve-seed-negative", _improve(seed=-1), ValueError, ("seed", "-1")),
    Call("api-improve-seed-float", _improve(seed=0.5), TypeError, ("seed must be an integer",)),
    Call("api-improve-target-number", _improve(target=0.9), TypeError,
         ("target must be a text", "0.9")),
    Call("api-improve-target-bad", _improve(target="accuracy>=2"), ValueError,
         ("'accuracy>=2'", "can never be met")),
    Call("api-improve-recipe-text", _improve(recipe="adam"), TypeError,
         ("recipe must be a Recipe", "'adam'")),
    Call("api-improve-recipe-wrong-type", _improve(recipe={"lr": "x"}), TypeError,
         ("Recipe.lr must be a number",)),
    Call("api-improve-recipe-unknown-key", _improve(recipe={"nope": 1}), ValueError,
         ("unknown recipe fields ['nope']",)),
    Call("api-improve-init-kwargs-list", _improve(init_kwargs=[1]), TypeError,
         ("init_kwargs must be a dict",)),
    Call("api-improve-init-kwargs-bad-key", _improve(init_kwargs={1: 2}), ValueError,
         ("init_kwargs keys",)),
    Call("api-improve-entry-int", _improve(entry=5), TypeError, ("entry must be a class name",)),
    Call("api-improve-datasets-dir-int", _improve(datasets_dir=5), TypeError,
         ("datasets_dir must be a path",)),
    Call("api-migrate-model-int", lambda d, run: api.migrate(42), TypeError,
         ("keras_model must be", "int")),
    Call("api-migrate-garbage-keras", _migrate("{d}/garbage.keras"), ValueError,
         ("not a .keras archive",)),
    Call("api-migrate-fit-epochs-zero", _migrate(fit={"epochs": 0}), ValueError,
         ("fit['epochs']", "0")),
    Call("api-migrate-fit-epochs-float", _migrate(fit={"epochs": 2.5}), TypeError,
         ("fit['epochs'] must be an integer",)),
    Call("api-migrate-fit-batch-negative", _migrate(fit={"batch_size": -1}), ValueError,
         ("fit['batch_size']",)),
    Call("api-migrate-fit-list", _migrate(fit=[1]), TypeError, ("fit must be a dict",)),
    Call("api-migrate-fit-class-weight-bad", _migrate(fit={"class_weight": {"a": 1}}),
         ValueError, ("fit['class_weight']", "'a'")),
    Call("api-migrate-start-missing", _migrate(start="{d}/nope"), FileNotFoundError,
         ("start folder", "does not exist")),
    Call("api-migrate-start-file", _migrate(start="{d}/a_file"), NotADirectoryError,
         ("start", "is a file")),
    Call("api-migrate-max-iters-float", _migrate(max_iters=1.5), TypeError, ("max_iters",)),
    Call("api-verify-folder-missing",
         lambda d, run: api.verify(d / "zip.keras", d / "nope"), FileNotFoundError,
         ("candidate_dir folder", "does not exist")),
    Call("api-verify-folder-incomplete",
         lambda d, run: api.verify(d / "zip.keras", d / "cand_model_only"), FileNotFoundError,
         ("lacks weights.pt",)),
    Call("api-run-not-an-objective", lambda d, run: api.run("improve"), TypeError,
         ("objective must be an Objective",)),
    Call("api-resume-run-id-int", lambda d, run: api.resume(5), TypeError, ("run_id",)),
    Call("api-resume-unknown-run", lambda d, run: api.resume("r-nope"), KeyError,
         ("no run 'r-nope'",)),
    Call("api-resume-max-iters-zero", lambda d, run: api.resume(run, max_iters=0), ValueError,
         ("max_iters", "0")),
    Call("api-resume-max-iters-float", lambda d, run: api.resume(run, max_iters=1.5),
         TypeError, ("max_iters must be an integer",)),
    Call("api-resume-max-iters-below-done", lambda d, run: api.resume(run, max_iters=1),
         ValueError, ("max_iters=1", "2 iterations")),
    Call("recipe-epochs-float", lambda d, run: Recipe(epochs=1.5), TypeError,
         ("Recipe.epochs must be an integer",)),
    Call("recipe-lr-inf", lambda d, run: Recipe(lr=float("inf")), ValueError,
         ("Recipe.lr must be a finite number",)),
    Call("recipe-lr-text", lambda d, run: Recipe(lr="0.1"), TypeError,
         ("Recipe.lr must be a number",)),
    Call("recipe-batch-size-zero", lambda d, run: Recipe(batch_size=0), ValueError,
         ("Recipe.batch_size must be > 0",)),
    Call("recipe-epochs-huge", lambda d, run: Recipe(epochs=10**11), ValueError,
         ("Recipe.epochs", "100000")),
    Call("recipe-betas-one", lambda d, run: Recipe(betas=(0.9,)), ValueError,
         ("Recipe.betas must be two numbers",)),
    Call("recipe-ctor-class-weight-list", lambda d, run: Recipe(class_weight=[1, 2]), TypeError,
         ("Recipe.class_weight must be a dict",)),
    Call("recipe-penalties-numbers", lambda d, run: Recipe(penalties=[1]), TypeError,
         ("Recipe.penalties",)),
    Call("recipe-bool-text", lambda d, run: Recipe(from_logits="yes"), TypeError,
         ("Recipe.from_logits must be true or false",)),
    Call("recipe-from-list", lambda d, run: Recipe.from_dict([1, 2]), TypeError,
         ("a recipe must be a dict", "list")),
    Call("candidate-files-text", lambda d, run: Candidate(files="x", entry="Net"), TypeError,
         ("Candidate files must be a dict",)),
    Call("candidate-files-bytes", lambda d, run: Candidate(files={"model.py": b"x"},
                                                           entry="Net"),
         TypeError, ("Candidate files",)),
    Call("candidate-entry-none", lambda d, run: Candidate(files=SRC, entry=None), TypeError,
         ("Candidate entry must be a class name",)),
    Call("candidate-recipe-dict", lambda d, run: Candidate(files=SRC, entry="Net",
                                                           recipe={"lr": 0.1}),
         TypeError, ("Candidate recipe must be a Recipe",)),
    Call("candidate-init-kwargs-list", lambda d, run: Candidate(files=SRC, entry="Net",
                                                                init_kwargs=[1]),
         TypeError, ("Candidate init_kwargs",)),
    Call("candidate-no-main-file", lambda d, run: Candidate(files={"a.py": ""}, entry="Net"),
         ValueError, ("no main file 'model.py'",)),
]


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.id)
def test_api_bad_argument_is_a_named_error(case: Call, bad: Path, home: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong type is a TypeError, a wrong value a ValueError (or the file's error), each
    naming the argument; raised before any run is created."""
    monkeypatch.chdir(ROOT)
    run_id = _fake_run(home) if "resume" in case.id else "r-none"
    before = _runs(home)
    with pytest.raises(case.error) as info:
        case.call(bad, run_id)
    message = str(info.value.args[0]) if info.value.args else ""
    for needle in case.needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert _runs(home) == before, "a bad argument left a run in the store"


# ---------------------------------------------------------------- outside the tables


def test_a_run_that_fails_on_its_candidate_says_why_on_screen(
        bad: Path, home: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A model file with a syntax error under an explicit class name really starts a run
    (an agent may repair it); its end must print the reason, not only "static FAIL"."""
    monkeypatch.chdir(ROOT)
    code = main(["improve", f"{bad}/syntax.py:Net", "--data", "sklearn:iris",
                 "--max-iters", "1", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 3, out + err
    assert "Traceback" not in out + err
    assert "why: iteration 1 failed the static gate" in out
    assert "SYNTAX_ERROR" in out and "model.py:3" in out


def test_a_class_that_is_no_module_says_why_on_screen(
        bad: Path, home: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The neighbour: ``Net`` exists but is no nn.Module; the run says which gate and why."""
    monkeypatch.chdir(ROOT)
    code = main(["improve", f"{bad}/plain.py:Net", "--data", "sklearn:iris",
                 "--max-iters", "1", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 3, out + err
    assert "why: iteration 1 failed the static gate" in out
    assert "make Net a subclass of torch.nn.Module" in out


def test_show_into_a_closed_pipe_is_one_line_not_a_traceback(home: Path) -> None:
    """``autopilot show RUN | head -1`` through a real pipe: the reader leaves after one line
    while ``show`` still writes (a long run), which used to raise BrokenPipeError twice."""
    run_id = _fake_run(home, iterations=2, hints=400)  # far more than a pipe buffer
    env = {**os.environ, "AUTOPILOT_HOME": str(home)}
    show = subprocess.Popen([AUTOPILOT, "show", run_id], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-1"], stdin=show.stdout, stdout=subprocess.PIPE)
    assert show.stdout is not None and show.stderr is not None
    show.stdout.close()  # head alone reads it now, as in a shell pipeline
    first, _ = head.communicate(timeout=120)
    err = show.stderr.read().decode()
    code = show.wait(timeout=120)
    assert first.decode().startswith(f"run {run_id}")
    _assert_one_line_error(code, "", err, ["broken pipe"])


@pytest.mark.parametrize("env, needles", [
    ({"AUTOPILOT_HOME": "{d}/a_file"}, ["a_file is a file", "$AUTOPILOT_HOME"]),
    ({"AUTOPILOT_DB_URL": "postgresql://u:secret@127.0.0.1:1/db"},
     ["postgresql://u:***@127.0.0.1:1/db", "$AUTOPILOT_DB_URL"]),
], ids=["home-is-a-file", "db-url-password-hidden"])
def test_store_settings_in_a_fresh_process(env: dict[str, str], needles: list[str], bad: Path,
                                           tmp_path: Path) -> None:
    """The environment as a new ``autopilot`` process reads it: one line, exit 2, and a
    database password never printed."""
    full = {**os.environ, "AUTOPILOT_HOME": str(tmp_path / "home"),
            **{k: _fill(v, bad, "") for k, v in env.items()}}
    proc = subprocess.run([AUTOPILOT, "runs"], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=120)
    line = _assert_one_line_error(proc.returncode, proc.stdout, proc.stderr,
                                  [_fill(n, bad, "") for n in needles])
    assert "secret" not in line


@pytest.fixture
def read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder nobody may write in. Root ignores mode bits, so for root the refusal the OS
    gives everyone else is raised by ``Path.mkdir`` inside it."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if IS_ROOT:
        real_mkdir = Path.mkdir

        def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
            if self == folder or folder in self.parents:
                raise PermissionError(13, "Permission denied", str(self))
            real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    yield folder
    folder.chmod(0o755)


def test_a_store_in_a_read_only_folder_is_one_line(
        read_only: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Even ``runs``, which only reads, needs its store: a read-only folder says so."""
    code = main(["--home", str(read_only / "store"), "runs"])
    out, err = capsys.readouterr()
    _assert_one_line_error(code, out, err, [str(read_only / "store"), "no permission"])


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only folders and files")
def test_an_existing_store_made_read_only_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store that exists but may no longer be written (its folder and database read-only):
    ``runs`` names the database and says it is read-only."""
    home = tmp_path / "home"
    Store(home).close()
    for path in (home / "autopilot.db", home):
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        code = main(["--home", str(home), "runs"])
    finally:
        home.chmod(0o755)
        (home / "autopilot.db").chmod(0o644)
    out, err = capsys.readouterr()
    _assert_one_line_error(code, out, err, ["autopilot.db", "read-only"])
