"""The migration corpus benchmark's per-model function: rows carry the right fields and values,
and a route's child process is contained by its time limit."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")

from benchmarks import corpus_models, onnx_route  # noqa: E402
from benchmarks.migration_corpus import (  # noqa: E402
    TOL,
    RouteWorker,
    markdown,
    run_ours,
    summarize,
)

FIELDS = {"name", "translated", "max_abs_error", "rel_error", "seconds", "trainable",
          "trainable_weight_fraction", "iterations"}
MODELS = ("mlp_batchnorm_dropout", "embedding_classifier", "two_input_functional")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [run_ours(corpus_models.by_name()[name]) for name in MODELS]


def _weight_elements(entry: corpus_models.CorpusEntry) -> tuple[int, int]:
    """Keras' trainable and non-trainable weight elements for the entry's model."""
    model = corpus_models.build(entry)
    count = lambda ws: sum(int(np.prod(v.shape)) for v in ws)  # noqa: E731
    return count(model.trainable_weights), count(model.non_trainable_weights)


def test_our_route_translates_production_models_exactly(rows):
    for row in rows:
        assert FIELDS <= set(row), FIELDS - set(row)
        assert row["route"] == "ours" and row["iterations"] == 1
        assert row["translated"] and row["success"], (row["name"], row["stage"], row["error"])
        assert row["max_abs_error"] <= TOL
        assert row["rel_error"] == pytest.approx(
            row["max_abs_error"] / max(1e-12, row["keras_output_scale"]))
        assert row["seconds"] > 0
        assert row["ruff_ok"] and row["imports_torch_alone"], row["error"]
        assert row["trainable"] and row["grad_nonzero_fraction"] == 1.0
        assert row["torch_trainable_elements"] == row["keras_trainable_elements"]
        assert not row["stage"] and not row["error"] and not row["unsupported"]


def test_trainable_weight_fraction_counts_buffers_against_parameters(rows):
    """BatchNorm's moving statistics are the only buffers: parameters / (parameters + them)."""
    by_name = {r["name"]: r for r in rows}
    trainable, frozen = _weight_elements(corpus_models.by_name()["mlp_batchnorm_dropout"])
    assert frozen > 0
    assert by_name["mlp_batchnorm_dropout"]["trainable_weight_fraction"] == pytest.approx(
        trainable / (trainable + frozen))
    assert by_name["embedding_classifier"]["trainable_weight_fraction"] == 1.0


def test_summary_and_markdown_state_the_claims(rows):
    summary = summarize(rows, [])
    assert summary["ours_success"] == len(rows) and all(summary["claims"].values())
    payload = {"summary": summary, "models": rows, "baseline": [], "timeout_s": 60.0,
               "left_out": corpus_models.APPLICATIONS_LEFT_OUT, "baseline_notes": [],
               "versions": {"torch": "x"}, "total_seconds": 1.0,
               "load_average_1min": {"start": 0.5, "end": 0.5}}
    text = markdown(payload)
    assert summary["closing_line"] in text
    assert all(name in text for name in MODELS)


def test_a_hung_route_is_killed_and_recorded(tmp_path):
    worker = RouteWorker("ours", use_stub=False, log=str(tmp_path / "log"), memory_gib=12)
    entry = corpus_models.by_name()["mlp_batchnorm_dropout"]
    row = worker.run(entry, timeout=0.5)  # the child cannot even import keras in time
    assert row["stage"] == "timeout" and not row["translated"] and "timed out" in row["error"]
    assert worker.proc is None


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnx2torch")),
                    reason="the `bench` extra (tf2onnx, onnx2torch) is not installed")
def test_baseline_route_gives_the_same_columns(tmp_path):
    use_stub = onnx_route.torchvision_import_error() is not None
    worker = RouteWorker("baseline", use_stub=use_stub, log=str(tmp_path / "log"),
                         memory_gib=12)
    try:
        row = worker.run(corpus_models.by_name()["two_input_functional"], timeout=120)
    finally:
        worker.close()
    assert FIELDS <= set(row) and row["route"] == "baseline"
    assert row["translated"], row["error"]
    assert row["max_abs_error"] <= TOL
    assert 0.0 <= row["trainable_weight_fraction"] <= 1.0
