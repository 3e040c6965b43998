"""The hint vocabulary: rendering for people and LLMs, JSON round trip, the catalogue."""

import json
from pathlib import Path

from autopilot_lab.agents.playbook import repairs_by_kind
from autopilot_lab.hints import (
    Hint,
    HintKind,
    Keep,
    Priority,
    catalogue_markdown,
    render_hints,
    sort_hints,
)

ROOT = Path(__file__).resolve().parents[1]


def test_hint_takes_the_kinds_usual_priority_unless_told():
    h = Hint(HintKind.NAN_LOSS, "trainability", "training loss", "nan at step 3", "finite",
             "lower the learning rate")
    assert h.priority is Priority.P1
    h4 = Hint(HintKind.NAN_LOSS, "metric", "loss", 1, 0, "x", priority=Priority.P3)
    assert h4.priority is Priority.P3


def test_hint_text_names_priority_kind_place_observed_expected_and_suggestion():
    h = Hint(HintKind.NO_GRADIENT, "trainability", "gradient", "None", "finite, non-zero",
             "use the parameter in forward()", where="head.weight")
    text = h.to_text()
    assert text.startswith("[P1 NO_GRADIENT] trainability at head.weight:")
    assert "observed None, expected finite, non-zero" in text
    assert text.endswith("Suggestion: use the parameter in forward()")


def test_hint_json_round_trip_is_exact():
    h = Hint(HintKind.METRIC_GAP, "metric", "valid roc_auc", 0.91, "roc_auc>=0.95", "train longer",
             where="recipe")
    d = json.loads(h.to_json())
    assert d["kind"] == "METRIC_GAP" and d["priority"] == "P3"
    assert Hint.from_dict(d) == h


def test_rendering_puts_p1_first_and_keeps_after_hints():
    style = Hint(HintKind.STYLE, "static", "ruff F401", "unused import", "no finding", "x")
    nan = Hint(HintKind.NAN_LOSS, "trainability", "loss", "nan", "finite", "lower lr")
    text = render_hints([style, nan], [Keep("build", "builds and returns [8, 2]")])
    lines = text.splitlines()
    assert lines[0].startswith("[P1 NAN_LOSS]")
    assert lines[1].startswith("[P4 STYLE]")
    assert lines[2] == "[KEEP] build: builds and returns [8, 2]"
    assert sort_hints([style, nan])[0] is nan


def test_catalogue_lists_every_kind_with_its_repairs_and_docs_are_current():
    md = catalogue_markdown(repairs_by_kind())
    for kind in HintKind:
        assert f"| `{kind.name}` |" in md
    assert "`lower_lr`" in md.split("| `NAN_LOSS` |")[1].splitlines()[0]
    assert (ROOT / "docs" / "hints.md").read_text() == md, "run `make hints-doc`"
