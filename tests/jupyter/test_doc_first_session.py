"""docs/notebook.md's first session works as written: its code blocks are, one for one, the
code cells of notebooks/01_quickstart.ipynb, which tests/jupyter/test_notebooks.py executes
in a real kernel. Editing one without the other fails here."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_first_session_is_the_executed_quickstart():
    doc = (ROOT / "docs" / "notebook.md").read_text()
    section = doc.split("## Your first session, step by step", 1)[1].split("\n## ", 1)[0]
    blocks = [b.rstrip() for b in re.findall(r"```python\n(.*?)```", section, re.S)]
    nb = nbformat.read(ROOT / "notebooks" / "01_quickstart.ipynb", as_version=4)
    cells = [c.source.rstrip() for c in nb.cells if c.cell_type == "code"]
    assert blocks == cells
