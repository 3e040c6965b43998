"""Text from a candidate is data: escape sequences, control characters and bidi overrides in
a candidate's exception message never reach a hint, the store or the terminal."""

from __future__ import annotations

import json
import re

import pytest

from autopilot_lab import api, cli
from autopilot_lab.agents.base import Agent
from autopilot_lab.candidate import Recipe
from autopilot_lab.hints import Hint, HintKind, render_hints
from autopilot_lab.objectives.improve import ImproveObjective
from autopilot_lab.sandbox import Limits
from autopilot_lab.store import Store
from autopilot_lab.text import clean, clean_line

# what a terminal acts on: C0 controls but newline and tab, DEL, C1, bidi overrides/isolates
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
HOSTILE = ("\x1b[2J\x1b]0;pwned\x07\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\ "
           "\x1b[31mred\x1b[0m")


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b[31mred\x1b[0m plain", "red plain"),  # CSI colour
    ("\x1b[2J\x1b[Hcleared", "cleared"),  # clear screen, cursor home
    ("\x1b]0;title\x07text", "text"),  # OSC window title ended by BEL
    ("\x1b]2;title\x1b\\text", "text"),  # OSC window title ended by ST
    ("\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\", "click"),  # OSC 8 hyperlink
    ("a\x1bP1$r0m\x1b\\b", "ab"),  # DCS string
    ("a\x1b_apc\x1b\\b\x1b^pm\x07c", "abc"),  # APC and PM strings
    ("\x9b31mred", "red"),  # C1 CSI (0x9b)
    ("\x9d0;title\x9ctext", "text"),  # C1 OSC ended by C1 ST
    ("a\x1b7b\x1b8c\x1bcd", "abcd"),  # single-character escape sequences
    ("safe\x08\x08\x08\x08evil", "safeevil"),  # backspace overwrite
    ("shown\rhidden", "shownhidden"),  # carriage return overwrite
    ("nul\x00byte\x07bell\x7fdel", "nulbytebelldel"),  # NUL, BEL, DEL
    ("lone \x1b", "lone "),  # lone ESC
    ("\x1b]0;never ended", "0;never ended"),  # unterminated OSC: the payload stays visible
    ("abc\u202edcba\u202c \u2066x\u2069", "abcdcba x"),  # bidi override and isolate
    ("lone \ud800 surrogate", "lone \ufffd surrogate"),  # would make print() raise
    ("keeps\nnewline\tand tab, ünïcode ✓", "keeps\nnewline\tand tab, ünïcode ✓"),
])
def test_clean_strips_each_kind_of_escape(raw, shown):
    assert clean(raw) == shown


def test_clean_bounds_a_huge_message_keeping_its_head():
    raw = "x" * 1_000_000 + "\x1b[31m" * 1000
    out = clean(raw, limit=500)
    assert len(out) <= 500
    assert out.startswith("x" * 400)
    cut = int(re.search(r"\.\.\. \[(\d+) characters cut\]$", out).group(1))
    assert 1_000_000 - 500 < cut <= len(raw)
    assert clean(out, limit=500) == out  # idempotent: a stored field read back is equal


def test_clean_takes_anything_and_never_raises():
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert clean(3.5) == "3.5"
    assert clean({"k": "\x1b[2J"}) == "{'k': '\\x1b[2J'}"
    assert clean(Hostile()) == "<unprintable Hostile>"
    assert clean_line("a\nb\tc\x1b[1m") == "a b c"


def test_a_hint_built_from_hostile_text_is_clean_in_text_and_json():
    h = Hint(HintKind.RUNTIME_ERROR, "build", "exception\x1b[1m", f"RuntimeError: {HOSTILE}",
             "no exception", f"fix it\r{HOSTILE}", where="model.py:3\x1b]0;t\x07")
    assert h.observed == "RuntimeError: click red"
    assert h.suggestion == "fix itclick red"
    assert h.metric == "exception" and h.where == "model.py:3"
    for text in (h.to_text(), json.loads(h.to_json())["observed"], render_hints([h]),
                 h.key):
        assert not UNSAFE.search(text), text
    assert Hint.from_dict(h.to_dict()) == h
    long = Hint(HintKind.RUNTIME_ERROR, "build", "exception", "y" * 100_000, "none", "z")
    assert len(long.observed) <= 500


class RaisingAgent(Agent):
    """Proposes one model whose constructor raises a hostile message (a test double of an
    agent only: the candidate runs for real in the sandbox)."""

    name = "scripted"

    def __init__(self, source: str):
        self.source = source

    def propose(self, objective, journal, hints, keeps):
        base = objective.initial_candidate()
        return base.replace(files={"model.py": self.source},
                            notes={"agent": self.name, "summary": "raises \x1b[5mblink"})


def test_a_hostile_exception_message_reaches_show_and_the_store_clean(home, mlp_source,
                                                                      monkeypatch, capsys):
    raising = f"raise RuntimeError({HOSTILE!r})"
    source = mlp_source.replace("super().__init__()", "super().__init__()\n        " + raising)
    objective = ImproveObjective(source, "sklearn:iris", target=None,
                                 recipe=Recipe(lr=0.01, epochs=1, preprocessing="standardize"))
    monkeypatch.setattr(api, "make_agent", lambda name, **_: RaisingAgent(source))
    result = api.run(objective, agent="scripted", max_iters=1, home=home,
                     limits=Limits(wall_s=60, memory_mb=2048))

    stored = Store(home).hints(result.run_id)
    errors = [h for h in stored if h["kind"] == "RUNTIME_ERROR"]
    assert errors and "click red" in errors[0]["observed"]
    assert not UNSAFE.search(json.dumps(stored, ensure_ascii=False))

    capsys.readouterr()
    assert cli.main(["--home", str(home), "show", result.run_id]) == 0
    shown = capsys.readouterr().out
    assert "RuntimeError: click red" in shown
    assert not UNSAFE.search(shown), [c for c in shown if UNSAFE.match(c)]
