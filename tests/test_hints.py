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


def test_each_text_field_is_cleaned_and_bounded_at_its_own_limit():
    limits = {"check": 200, "metric": 200, "observed": 500, "expected": 500,
              "suggestion": 500, "where": 200}
    base = {"check": "c", "metric": "m", "observed": "o", "expected": "e", "suggestion": "s",
            "where": "w"}
    for field, limit in limits.items():
        exact = Hint(HintKind.STYLE, **{**base, field: "x" * limit})
        assert getattr(exact, field) == "x" * limit, field  # at the limit: kept whole
        over = getattr(Hint(HintKind.STYLE, **{**base, field: "x" * (limit + 1)}), field)
        assert len(over) <= limit and "cut" in over, (field, len(over))
    escaped = Hint(HintKind.RUNTIME_ERROR, "build", "error", "\x1b[31mred\x1b[0m", 0.5, "fix")
    assert escaped.observed == "red" and escaped.expected == 0.5  # numbers stay numbers


def test_hints_and_keeps_are_frozen_records_with_a_stable_key_and_canonical_json():
    import dataclasses

    import pytest

    hint = Hint(HintKind.NAN_LOSS, "trainability", "loss", "nan", "finite", "lower lr",
                where="recipe.lr")
    assert hint.key == "NAN_LOSS:trainability:loss:recipe.lr"
    assert hint.to_json() == json.dumps(json.loads(hint.to_json()), sort_keys=True)
    keep = Keep("parity", "outputs match", {"max_abs": 1e-7})
    assert Keep.from_dict(keep.to_dict()) == keep and keep.to_text() == \
        "[KEEP] parity: outputs match"
    for record, field in ((hint, "check"), (keep, "what"), (HintKind.NAN_LOSS.info, "meaning")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, field, "changed")
    assert [int(p) for p in Priority] == [1, 2, 3, 4]  # P1 first, as the names say


def test_the_module_prints_the_catalogue_the_docs_hold():
    import subprocess
    import sys

    printed = subprocess.run([sys.executable, "-m", "autopilot_lab.hints"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert printed == (ROOT / "docs" / "hints.md").read_text()
