"""Shared fixtures: a fresh store home per test, the shared datasets folder, the example model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
EXAMPLE_MODEL = ROOT / "examples" / "tabular_mlp.py"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty store home; also exported so CLI subprocesses use it."""
    h = tmp_path / "home"
    monkeypatch.setenv("AUTOPILOT_HOME", str(h))
    return h


@pytest.fixture
def shared_datasets() -> Path:
    """The development datasets folder; tests that take it carry the ``shared`` marker."""
    return SHARED_DATASETS



@pytest.fixture
def mlp_source() -> str:
    return EXAMPLE_MODEL.read_text()


def pytest_collection_modifyitems(config, items):
    """Skipped with the reason, never silently: `gpu` tests where there is no CUDA device;
    `shared` tests (about ../shared/datasets itself) where a clone has none beside it."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    has_shared = (SHARED_DATASETS / "manifest.csv").is_file()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="marker gpu: needs a CUDA device"))
        if item.get_closest_marker("shared") and not has_shared:
            item.add_marker(pytest.mark.skip(
                reason="marker shared: ../shared/datasets is not beside this checkout (a "
                       "user's clone has the bundled datasets only)"))
