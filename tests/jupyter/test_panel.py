"""The panel in a real kernel, driven as a browser drives it (comm messages): decisions reach
the store and the agent, Continue and Stop steer the loop, the kernel stays responsive, and a
kernel restart leaves a run that ``%autopilot resume`` continues."""

from __future__ import annotations

import pytest

from . import DEAD_UNITS_CELL, DEAD_UNITS_RECIPE, Kernel

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")
pytest.importorskip("ipykernel")

NOT_LEARNING = "NOT_LEARNING:trainability:loss after probe steps:recipe.preprocessing"
DEAD_UNITS = "DEAD_UNITS:trainability:dead unit fraction:act"
MAGIC = ("%%autopilot improve --data sklearn:breast_cancer --target roc_auc>=0.99 "
         f"--recipe '{DEAD_UNITS_RECIPE}' ")


@pytest.fixture
def kernel(tmp_path):
    k = Kernel(tmp_path / "home")
    k.check("%load_ext autopilot_lab")
    yield k
    k.close()


def _button(k: Kernel, panel: str, description: str, **match) -> str:
    found = k.find(panel, _model_name="ButtonModel", description=description, **match)
    assert len(found) == 1, f"{len(found)} {description!r} buttons in the panel"
    return found[0][0]


def test_kernel_stays_free_while_panel_decisions_steer_the_run(kernel):
    k = kernel
    (panel,) = k.check(MAGIC + "--max-iters 4 --interactive\n" + DEAD_UNITS_CELL).views
    run_id = k.check("run = _\nprint(run.run_id)").text.strip()
    # the cell returned while the run goes on, and the kernel answers meanwhile
    assert k.check("print(6 * 7, run.done, run.status)").text.split() == ["42", "False",
                                                                         "running"]

    k.wait_for(lambda: "after iteration 1" in k.texts(panel), 180, "the pause after iteration 1")
    text = k.texts(panel)
    assert "<b>NOT_LEARNING</b>" in text and "<b>DEAD_UNITS</b>" in text
    reject = _button(k, panel, "Reject", tooltip=NOT_LEARNING)
    k.click(reject)
    k.wait_for(lambda: k.widgets[reject].get("button_style") == "danger", 30, "reject shown")
    (note_box,) = [mid for mid, _ in k.find(panel, _model_name="TextareaModel")]
    k.type_text(note_box, "keep the hidden width at 32")
    k.click(_button(k, panel, "Add hint"))
    k.wait_for(lambda: "note stored" in k.texts(panel), 30, "the note stored")
    k.click(_button(k, panel, "Continue"))

    # Stop while iteration 2 is scored: it ends, and no iteration 3 starts (budget: 4)
    k.wait_for(lambda: "<b>Iteration 2</b>" in k.texts(panel)
               and "✓ static" in k.texts(panel), 120, "iteration 2 under way")
    k.click(_button(k, panel, "Stop"))
    k.wait_for(lambda: "stopped by the user" in k.texts(panel), 180, "the stopped status")
    seen = k.check(
        "import json\n"
        "r = run.wait(60)\n"
        "it2 = r.history[1].candidate\n"
        "print(json.dumps({'status': r.status, 'n': len(r.history), 'best': r.best.n, "
        "'stored': run.store.get_run(run.run_id)['status'], 'code': r.best_candidate.source, "
        "'repairs': it2.notes['repairs'], 'lr': it2.recipe.lr, "
        "'decisions': [(d['hint_key'], d['decision'], d['text']) "
        "for d in run.store.decisions(run.run_id)]}))").json()
    assert (seen["status"], seen["stored"], seen["n"]) == ("stopped", "stopped", 2)
    assert seen["best"] in (1, 2)
    # the playbook answered the hint that was left, not the rejected one
    assert [(r["repair"], r["hint"]) for r in seen["repairs"]] == [("lower_lr", "DEAD_UNITS")]
    assert seen["lr"] == pytest.approx(1e-4)
    assert [NOT_LEARNING, "reject", ""] in seen["decisions"]
    assert ["", "note", "keep the hidden width at 32"] in seen["decisions"]
    assert f"run {run_id} is not going on; its status is stopped" in \
        k.execute(f"%autopilot stop {run_id}").text

    k.wait_for(lambda: k.find(panel, description="Insert as new cell"), 30, "the insert button")
    text = k.texts(panel)
    assert f"Best: iteration {seen['best']}" in text and "report.md" in text
    k.click(_button(k, panel, "Insert as new cell"))
    k.wait_for(lambda: "new cell below the next cell you run" in k.texts(panel), 30, "insert")
    payload = k.check("1 + 1").content["payload"]
    (insert,) = [p for p in payload if p["source"] == "set_next_input"]
    assert insert["text"].startswith(seen["code"].rstrip())
    assert "recipe = {'optimizer': 'adam',\n 'lr': " in insert["text"]


def test_kernel_restart_leaves_run_interrupted_and_resume_continues(kernel):
    k = kernel
    # paused after iteration 1 (so that no sandbox process of the old kernel outlives it)
    (panel,) = k.check(MAGIC + "--max-iters 2 --interactive\n" + DEAD_UNITS_CELL).views
    run_id = k.check("run = _\nprint(run.run_id)").text.strip()
    k.wait_for(lambda: "after iteration 1" in k.texts(panel), 180, "the pause after iteration 1")
    reject = _button(k, panel, "Reject", tooltip=NOT_LEARNING)
    k.click(reject)
    k.wait_for(lambda: k.widgets[reject].get("button_style") == "danger", 30, "reject shown")
    k.restart()

    k.check("%load_ext autopilot_lab")
    listed = k.check("%autopilot runs").text
    assert run_id in listed and "interrupted" in listed
    resumed = k.check(f"%autopilot resume {run_id} --wait", timeout=240)
    assert resumed.views, "the resumed run shows its panel"
    outcome = k.check(
        "import json\nr = _\nprint(json.dumps({'status': r.status, "
        "'iterations': [it.n for it in r.history], "
        "'repairs': [(a['repair'], a['hint']) for a in r.history[1].candidate.notes['repairs']]}))"
    ).json()
    # iteration 1 is not redone, and the rejection made before the restart still holds
    assert outcome == {"status": "finished", "iterations": [1, 2],
                       "repairs": [["lower_lr", "DEAD_UNITS"]]}
    panel_text = k.texts(resumed.views[0])
    assert "Iteration 2" in panel_text and "finished" in panel_text
