"""The two notebooks, executed top to bottom by nbclient on a real kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autopilot_lab.jupyter.runner import cell_text
from autopilot_lab.store import Store

from . import ROOT, WIDGET_VIEW

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def execute(name: str, tmp_path: Path, monkeypatch) -> tuple[Any, dict[int, dict]]:
    """Run notebooks/<name> in a fresh kernel (store in tmp_path); the executed notebook and
    the execute_reply of each code cell, by index."""
    monkeypatch.setenv("AUTOPILOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    replies: dict[int, dict] = {}
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
        on_cell_executed=lambda cell, cell_index, execute_reply: replies.__setitem__(
            cell_index, execute_reply))
    client.execute()
    return nb, replies


def text_of(cell: Any) -> str:
    out = []
    for o in cell.outputs:
        if o.output_type == "stream":
            out.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            out.append(o.data.get("text/plain", ""))
    return "".join(out)


def cell_with(nb: Any, source: str) -> tuple[int, Any]:
    (found,) = [(i, c) for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and source in c.source]
    return found


def check_notebook(nb: Any, replies: dict[int, dict], magic: str) -> tuple[str, Any]:
    """What both notebooks must show: the panel's widget views (with their state saved), a
    finished run that meets its target, and a new cell holding the best candidate. Returns
    the run id and its store."""
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if o.output_type == "error"]
    _, run_cell = cell_with(nb, magic)
    views = [o.data[WIDGET_VIEW]["model_id"] for o in run_cell.outputs
             if o.output_type in ("execute_result", "display_data") and WIDGET_VIEW in o.data]
    assert views, "the run cell shows the panel"
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    panel = state[views[0]]
    assert panel["model_name"] == "VBoxModel" and "autopilot-panel" in \
        panel["state"]["_dom_classes"]
    models = {s["model_name"] for s in state.values()}
    assert {"ButtonModel", "GridBoxModel", "TextareaModel", "AccordionModel"} <= models
    assert any(s["model_module"] == "anywidget" for s in state.values()), "the plotly figure"

    index, insert = cell_with(nb, "%autopilot insert")
    run_id = text_of(insert).split()[4]
    store = Store()
    row = store.get_run(run_id)
    assert row["status"] == "finished"
    best = max(store.iterations(run_id), key=lambda i: (i["score"], -i["n"]))
    assert best["targets_met"], f"the best candidate misses its target: {row['reason']}"
    (payload,) = [p for p in replies[index]["content"]["payload"]
                  if p["source"] == "set_next_input"]
    candidate = best["candidate"]
    best_file = Path(row["folder"]) / "best" / candidate.main
    assert payload["text"] == cell_text(best_file.read_text(), candidate.recipe.to_dict(),
                                        candidate.init_kwargs)
    return run_id, store


def test_02_improve_reaches_its_target(tmp_path, monkeypatch):
    nb, replies = execute("02_improve.ipynb", tmp_path, monkeypatch)
    run_id, store = check_notebook(nb, replies, "%%autopilot improve")
    _, summary = cell_with(nb, "result = run.wait()")
    assert text_of(summary).strip().endswith("finished | targets met: True")
    assert "remove_detach for NO_GRADIENT" in text_of(summary)
    _, auc = cell_with(nb, "test ROC AUC")
    valid_line, test_line = text_of(auc).strip().splitlines()
    assert valid_line.startswith("valid ROC AUC") and float(valid_line.split()[-1]) >= 0.98
    assert test_line.startswith("test ROC AUC, scored once at the end")
    _, status = cell_with(nb, "run = _")
    assert text_of(status).strip() == f"{run_id} is running", "the cell returned at once"
    events = [e["type"] for e in store.events(run_id)]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    first, last = store.iterations(run_id)
    assert ".detach()" in first["candidate"].source
    assert ".detach()" not in last["candidate"].source


def test_01_quickstart_migrates_a_keras_model(tmp_path, monkeypatch):
    pytest.importorskip("keras")
    nb, replies = execute("01_quickstart.ipynb", tmp_path, monkeypatch)
    check_notebook(nb, replies, "%%autopilot migrate")
    _, summary = cell_with(nb, "result = _")
    assert text_of(summary).strip().endswith("finished | targets met: True")
