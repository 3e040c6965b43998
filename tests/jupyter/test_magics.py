"""The magic in an in-process IPython shell: help, parsing, model detection, the source of a
notebook class, data from variables, dispatch and its errors, runs side by side."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")
from IPython.core.error import UsageError  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

from autopilot_lab import api  # noqa: E402
from autopilot_lab.data import load_task  # noqa: E402
from autopilot_lab.jupyter import runner  # noqa: E402
from autopilot_lab.jupyter.model_detect import (  # noqa: E402
    NotebookError,
    data_spec,
    torch_model_source,
)

# a model the static check refuses in a second (it imports os): a run of it is cheap
LEAKY_CELL = textwrap.dedent('''\
    import os
    import torch
    from torch import nn


    class Leaky(nn.Module):
        def __init__(self, n_features: int, n_outputs: int):
            super().__init__()
            self.lin = nn.Linear(n_features, n_outputs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) * float(os.environ.get("SCALE", "1"))
    ''')


@pytest.fixture
def shell(home):
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "autopilot_lab")
    before = set(sh.user_ns)
    yield sh
    for name in set(sh.user_ns) - before:
        del sh.user_ns[name]


def cell(shell, line: str, body: str = ""):
    return shell.run_cell_magic("autopilot", line, textwrap.dedent(body))


def test_help_documents_every_option(shell):
    text = shell.object_inspect_text("%%autopilot")
    for option in ("--model", "--data", "--target-col", "--target", "--max-iters", "--agent",
                   "--recipe", "--fit", "--seed", "--interactive", "--wait", "--status"):
        assert option in text
    for command in ("improve", "migrate", "runs", "show", "resume", "stop", "insert"):
        assert command in text
    assert "{rules,llm,auto}" in text


def test_notebook_class_becomes_a_self_contained_module(shell):
    shell.run_cell(textwrap.dedent('''\
        import math
        import torch
        import torch.nn.functional as F
        from torch import nn
        from torch.nn import Linear as Dense

        WIDTH = 16
        SCALES = (1.0, 0.5)
        unused = torch.zeros(3)


        def scaled(x):
            return x * SCALES[0] / math.sqrt(WIDTH)


        class Block(nn.Module):
            def __init__(self, n):
                super().__init__()
                self.lin = Dense(n, n)

            def forward(self, x):
                return F.relu(self.lin(x))


        class Net(nn.Module):
            def __init__(self, n_features, n_outputs):
                super().__init__()
                self.inp = nn.Linear(n_features, WIDTH)
                self.block = Block(WIDTH)
                self.out = nn.Linear(WIDTH, n_outputs)

            def forward(self, x):
                x = 3 * x  # a local x: not the notebook's
                return self.out(self.block(scaled(self.inp(x))))
        '''))
    source, entry = torch_model_source(shell.user_ns["Net"](4, 2), shell.user_ns)
    assert entry == "Net"
    assert source == textwrap.dedent('''\
        import math
        import torch.nn.functional as F
        from torch import nn
        from torch.nn.modules.linear import Linear as Dense


        SCALES = (1.0, 0.5)
        WIDTH = 16


        class Block(nn.Module):
            def __init__(self, n):
                super().__init__()
                self.lin = Dense(n, n)

            def forward(self, x):
                return F.relu(self.lin(x))


        def scaled(x):
            return x * SCALES[0] / math.sqrt(WIDTH)


        class Net(nn.Module):
            def __init__(self, n_features, n_outputs):
                super().__init__()
                self.inp = nn.Linear(n_features, WIDTH)
                self.block = Block(WIDTH)
                self.out = nn.Linear(WIDTH, n_outputs)

            def forward(self, x):
                x = 3 * x  # a local x: not the notebook's
                return self.out(self.block(scaled(self.inp(x))))
        ''')


def test_class_without_methods_and_unwritable_names(shell):
    shell.run_cell(LEAKY_CELL)
    shell.run_cell("class Wide(Leaky):\n    scale = 2\n")
    source, entry = torch_model_source(shell.user_ns["Wide"], shell.user_ns)
    assert entry == "Wide" and source.endswith("class Wide(Leaky):\n    scale = 2\n")
    assert "class Leaky(nn.Module):" in source and "import os\n" in source

    shell.run_cell(textwrap.dedent('''\
        mask = torch.ones(3)


        class Masked(nn.Module):
            def forward(self, x):
                return x * mask
        '''))
    with pytest.raises(NotebookError, match="Masked uses 'mask', a Tensor defined in the "
                                            "notebook, which cannot be written as source"):
        torch_model_source(shell.user_ns["Masked"], shell.user_ns)
    with pytest.raises(NotebookError, match="torch.nn.modules.container.Sequential, a class of "
                                            "torch itself"):
        torch_model_source(shell.user_ns["nn"].Sequential(), shell.user_ns)


def test_model_detection_last_expression_single_and_ambiguous(shell):
    from autopilot_lab.jupyter.model_detect import model_from_cell

    found = model_from_cell(shell, LEAKY_CELL + "\nmodel = Leaky(3, 1)\nmodel\n")
    assert found.origin == "the cell's last expression" and found.framework == "torch"

    # a class and its instance are one model; a helper class used by it is none
    found = model_from_cell(shell, textwrap.dedent('''\
        class Helper(nn.Module):
            def forward(self, x):
                return x


        class Main(nn.Module):
            def __init__(self, n_features, n_outputs):
                super().__init__()
                self.h = Helper()

            def forward(self, x):
                return self.h(x)


        main = Main(3, 1)
        '''))
    assert found.origin == "main" and type(found.obj).__name__ == "Main"

    with pytest.raises(NotebookError, match=r"the cell defined 2 models: A \(class A\), "
                                            r"B \(class B\); name the one to use with --model"):
        model_from_cell(shell, "class A(nn.Module):\n    pass\n\n\nclass B(nn.Module):\n"
                               "    pass\n")
    assert model_from_cell(shell, "", name="A").origin == "A"
    with pytest.raises(NotebookError, match="the cell defined no Keras model or PyTorch"):
        model_from_cell(shell, "x = 1\n")
    with pytest.raises(NotebookError, match="--model x: 'x' is a int, not a Keras model"):
        model_from_cell(shell, "", name="x")
    with pytest.raises(NotebookError, match="the cell raised ZeroDivisionError"):
        model_from_cell(shell, "1 / 0\n")


def test_keras_model_is_recognised_and_sent_to_migrate(shell, monkeypatch):
    pytest.importorskip("keras")
    from autopilot_lab.jupyter.model_detect import model_from_cell

    body = ("import keras\nkmodel = keras.Sequential([keras.Input((4,)), "
            "keras.layers.Dense(2)])\n")
    found = model_from_cell(shell, body)
    assert (found.origin, found.framework) == ("kmodel", "keras")
    with pytest.raises(UsageError, match="improve takes a torch model; this is a keras model: "
                                         "use %%autopilot migrate"):
        shell.run_line_magic("autopilot", "improve --data sklearn:iris --model kmodel")
    with pytest.raises(UsageError, match="migrate takes no --target"):
        shell.run_line_magic("autopilot", "migrate --model kmodel --target roc_auc>=0.9")
    monkeypatch.delattr(api, "migrate")
    with pytest.raises(UsageError, match="^migrate lands with issue 4$"):
        shell.run_line_magic("autopilot", "migrate --data sklearn:iris --model kmodel")


def test_data_from_variables(shell, home):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    spec = data_spec((X, y), {}, home)
    assert spec.startswith(f"parquet:{home / 'data'}")
    task = load_task(spec)
    assert (task.n_rows, task.n_features, task.kind) == (60, 3, "binary")
    assert data_spec((X, y), {}, home) == spec  # same data, same file

    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "label": y})
    spec = data_spec("frame", {"frame": frame}, home, target_col="label")
    assert load_task(spec).feature_names == ("a", "b")
    with pytest.raises(NotebookError, match="name its target column with --target-col"):
        data_spec("frame", {"frame": frame}, home)
    with pytest.raises(NotebookError, match="--target-col nope: no such column in frame; "
                                            "columns: a, b, label"):
        data_spec("frame", {"frame": frame}, home, target_col="nope")
    assert data_spec("sklearn:iris", {}, home) == "sklearn:iris"
    with pytest.raises(NotebookError, match="no variable 'nothing' in the notebook, and not a "
                                            "task spec"):
        data_spec("nothing", {}, home)


def test_usage_errors_are_precise(shell):
    with pytest.raises(UsageError, match="improve needs --data"):
        cell(shell, "improve", LEAKY_CELL)
    with pytest.raises(UsageError, match="improve takes no --fit"):
        cell(shell, "improve --data sklearn:iris --fit '{\"epochs\": 3}'", LEAKY_CELL)
    with pytest.raises(UsageError, match="--recipe nope: not a variable in the notebook, inline "
                                         "JSON, or a JSON file"):
        cell(shell, "improve --data sklearn:iris --recipe nope", LEAKY_CELL)
    with pytest.raises(UsageError, match="--interactive waits for decisions made in the panel"):
        cell(shell, "improve --data sklearn:iris --interactive --wait", LEAKY_CELL)
    with pytest.raises(UsageError, match="%autopilot improve needs a model: put its code in the "
                                         "cell below %%autopilot improve, or name it with"):
        shell.run_line_magic("autopilot", "improve --data sklearn:iris")
    with pytest.raises(UsageError, match="is a line magic"):
        cell(shell, "runs", "x = 1")
    with pytest.raises(UsageError, match="%autopilot show needs a run id"):
        shell.run_line_magic("autopilot", "show")
    with pytest.raises(UsageError, match="no run 'r-nope' in"):
        shell.run_line_magic("autopilot", "show r-nope")
    with pytest.raises(UsageError, match="unknown dataset|no sklearn dataset|nope"):
        cell(shell, "improve --data sklearn:nope", LEAKY_CELL)
    with pytest.raises(UsageError, match="No closing quotation"):
        cell(shell, 'improve --target "roc_auc', LEAKY_CELL)


def test_wait_runs_to_the_end_and_line_commands_see_it(shell, home):
    result = cell(shell, "improve --data sklearn:breast_cancer --target roc_auc>=0.9 --wait "
                         "--max-iters 3", LEAKY_CELL)
    assert result.status == "finished" and len(result.history) == 1
    assert [h.kind.name for h in result.scorecard.hints][0] == "IMPORT_ERROR"
    assert "the agent has no further proposal" in result.reason
    assert result.best_candidate.source.startswith("import os\nimport torch\nfrom torch import nn")

    listed = shell.run_line_magic("autopilot", "runs")
    assert listed.loc[0, "run"] == result.run_id and listed.loc[0, "status"] == "finished"
    shown = shell.run_line_magic("autopilot", f"show {result.run_id}")
    assert isinstance(shown, runner.NotebookRun) and shown.status == "finished"
    assert "IMPORT_ERROR" in [h.kind.name for h in shown.panel.iteration_hints[1]]

    shell.rl_next_input = None
    shell.run_line_magic("autopilot", f"insert {result.run_id}")
    assert shell.rl_next_input.startswith(result.best_candidate.source.rstrip())


def test_several_interactive_runs_at_once(shell):
    first = cell(shell, "improve --data sklearn:breast_cancer --interactive --max-iters 2",
                 LEAKY_CELL)
    second = shell.run_line_magic("autopilot", "improve --data sklearn:iris --interactive "
                                               "--max-iters 2 --model Leaky")
    try:
        for run in (first, second):
            deadline = 120
            while run.waiting_after is None and deadline > 0:
                run._thread.join(0.25)
                deadline -= 0.25
        assert {first.run_id, second.run_id} <= set(runner.active_runs())
        assert first.status == second.status == "waiting"
    finally:
        first.stop()
        shell.run_line_magic("autopilot", f"stop {second.run_id}")
    assert first.wait(60).status == second.wait(60).status == "stopped"
    assert first.run_id not in runner.active_runs()
