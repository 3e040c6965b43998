"""The panel's hint table in process (real ipywidgets, no kernel): what a row shows, and what
the caption says before the user rejects the agent's last hint."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from autopilot_lab.events import Event
from autopilot_lab.hints import Hint, HintKind
from autopilot_lab.jupyter.panel import RunPanel


class Controls:
    """The run side of the panel's buttons, recording what the user decided (a test double of
    our own NotebookRun, not of any library)."""

    objective, interactive, error, done, status = "improve", True, None, False, "running"

    def __init__(self) -> None:
        self.decided: dict[str, str] = {}
        self.chosen: list[tuple[int, str]] = []

    def repair_choices(self, iteration: int) -> list[tuple[str, str]]:
        return [("lower_lr", "divide the learning rate by 10"),
                ("raise_capacity", "double the model's width")]

    def choose_repair(self, iteration: int, name: str) -> None:
        self.chosen.append((iteration, name))

    def decide(self, iteration: int, hint_key: str, decision: str) -> None:
        self.decided[hint_key] = decision

    def decisions(self) -> dict[str, str]:
        return dict(self.decided)

    def note(self, iteration: int, text: str) -> None: ...
    def proceed(self) -> None: ...
    def stop(self) -> None: ...
    def outcome(self) -> Any:
        return SimpleNamespace(summary=["1 iteration"], paths={"report": "report.md"},
                               diff="", cell="class Net: ...", best_iteration=1,
                               best_score=4.8, targets_met=True)

    def insert_best(self) -> str:
        self.inserted = True
        return "class Net: ..."


GAP = Hint(HintKind.METRIC_GAP, "metric", "valid roc_auc", 0.81234, "roc_auc >= 0.95",
           "short by 0.1377: train longer", where="recipe")


def _panel(hints: list[Hint]) -> tuple[RunPanel, Controls]:
    controls = Controls()
    panel = RunPanel(controls)
    card = {"verdicts": [{"check": "metric", "passed": True, "score": 0.8,
                          "hints": [h.to_dict() for h in hints]}], "skipped": []}
    panel.on_event(Event("iteration_finished", "r-1", {"iteration": 1, "scorecard": card,
                                                       "score": 4.8}))
    return panel, controls


def _row_texts(panel: RunPanel) -> list[str]:
    return [getattr(c, "value", "") for c in panel.hints_table.children]


def test_a_metric_gap_row_names_its_metric_and_threshold():
    panel, _ = _panel([GAP])
    texts = " | ".join(_row_texts(panel))
    assert "valid roc_auc" in texts and "roc_auc &gt;= 0.95" in texts and "0.81234" in texts
    assert "overflow-wrap:anywhere" in texts  # long values break instead of overlapping


def test_rejecting_the_last_hint_is_announced_before_and_after_the_click():
    panel, controls = _panel([GAP])
    assert "one hint left: rejecting it leaves the agent nothing" in panel.hints_caption.value
    (reject,) = [w for row in panel.hints_table.children if hasattr(row, "children")
                 for w in row.children if getattr(w, "description", "") == "Reject"]
    reject.click()
    assert controls.decided == {GAP.key: "reject"}
    assert "every hint is rejected" in panel.hints_caption.value


def test_two_open_hints_need_no_warning():
    other = Hint(HintKind.OVERFITTING, "metric", "train - valid roc_auc", 0.2, "<= 0.05",
                 "add dropout", where="model.py")
    panel, _ = _panel([GAP, other])
    assert "one hint left" not in panel.hints_caption.value


def test_insert_answers_beside_the_button_that_was_clicked():
    panel, controls = _panel([GAP])
    panel.on_event(Event("run_finished", "r-1", {"status": "finished", "reason": "targets met"}))
    panel.run_id = "r-1"
    panel.finished()
    (row,) = [w for w in panel.result.children if hasattr(w, "children")
              and any(getattr(b, "description", "") == "Insert as new cell" for b in w.children)]
    button, note = row.children
    button.click()
    assert controls.inserted and "queued" in note.value and "%autopilot insert r-1" in note.value
    assert button.description == "Insert again"


def test_the_chart_starts_at_iteration_1_and_keeps_equal_lines_apart():
    panel, _ = _panel([GAP])
    for check, score in (("build", 1.0), ("stability", 1.0)):  # equal scores, one line
        panel.on_event(Event("check_finished", "r-1", {
            "iteration": 1, "verdict": {"check": check, "passed": True, "score": score}}))
    layout = panel.figure.layout
    assert tuple(layout.xaxis.range) == (0.5, 1.5) and layout.xaxis.tick0 == 1
    assert layout.yaxis2.dtick == 1
    traces = {t.name: t for t in panel.figure.data}
    assert traces["build"].marker.symbol != traces["stability"].marker.symbol
    assert traces["build"].line.dash != traces["stability"].line.dash


def test_with_one_hint_left_the_user_can_choose_the_next_repair():
    panel, controls = _panel([GAP])
    menu, use = panel.repair_box.children
    assert [v for _, v in menu.options] == ["lower_lr", "raise_capacity"]
    menu.value = "raise_capacity"
    use.click()
    assert controls.chosen == [(1, "raise_capacity")]
    assert "iteration 2 applies raise_capacity" in panel.message.value
    other = Hint(HintKind.OVERFITTING, "metric", "train - valid roc_auc", 0.2, "<= 0.05",
                 "add dropout", where="model.py")
    busy, _ = _panel([GAP, other])
    assert busy.repair_box.children == ()  # the agent has hints to act on
