"""The microscheduler: placement on declared inventories (several GPUs of different memory,
probes, the OOM retry alone) as pure logic, and the local backend's child processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from autopilot_lab.schedule import (
    Demand,
    InventoryError,
    LocalBackend,
    Packer,
    Trial,
    declared,
    make_backend,
)
from autopilot_lab.schedule.packer import MEM_FRACTION_VAR

GB = 1024.0
HERE = Path(__file__).resolve().parent


def _packer(text: str, **kw) -> Packer:
    return Packer(declared(text), **{"margin": 1.0, "overhead_mb": 0.0, **kw})


# ---------------------------------------------------------------- inventories


def test_declared_inventory_reads_cores_and_gpus_of_different_memory():
    inv = declared("cpu=16, gpu=80GB, gpu=24GiB, gpu=16000MB")
    assert inv.cpu_cores == 16
    assert [(g.index, g.memory_mb) for g in inv.gpus] == [(0, 80 * GB), (1, 24 * GB),
                                                          (2, 16000.0)]
    assert "16 CPU cores" in inv.describe()


@pytest.mark.parametrize("text", ["gpu=80GB", "cpu=4,gpu=lots", "cpu=4,tpu=1", "cpu=0"])
def test_a_bad_declared_inventory_says_the_expected_form(text):
    with pytest.raises(InventoryError):
        declared(text)


# ---------------------------------------------------------------- CPU placement


def test_cpu_trials_split_the_cores_without_oversubscription():
    packer = _packer("cpu=4")
    first = packer.plan([Demand(f"t{i}", threads=1) for i in range(6)], [])
    assert [p.key for p in first] == ["t0", "t1", "t2", "t3"]
    assert packer.plan([Demand("t4", threads=1)], first) == []
    two = packer.plan([Demand("a", threads=2), Demand("b", threads=2), Demand("c")], [])
    assert [(p.key, p.threads) for p in two] == [("a", 2), ("b", 2)]
    env = two[0].env()
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_a_wide_trial_waiting_lets_smaller_ones_start_and_is_capped_at_the_cores():
    packer = _packer("cpu=4")
    running = packer.plan([Demand("r", threads=2)], [])
    placed = packer.plan([Demand("wide", threads=3), Demand("small", threads=1)], running)
    assert [p.key for p in placed] == ["small"]
    assert packer.plan([Demand("huge", threads=64)], [])[0].threads == 4


# ---------------------------------------------------------------- GPU packing


def test_gpu_trials_are_packed_best_fit_by_measured_memory():
    packer = _packer("cpu=16,gpu=80GB,gpu=24GB")
    queue = [Demand("big", gpu=True, peak_mb=30 * GB)] + [
        Demand(f"m{i}", gpu=True, peak_mb=20 * GB) for i in range(4)]
    placed = {p.key: p for p in packer.plan(queue, [])}
    assert placed["big"].gpu == 0  # 24 GB is too small for it
    assert placed["m0"].gpu == 1  # tightest fit: leaves 4 GB on the small GPU
    assert placed["m1"].gpu == 0 and placed["m2"].gpu == 0
    assert "m3" not in placed  # 80 - 30 - 20 - 20 = 10 GB left: waits
    assert placed["m0"].mem_fraction == round(20 / 24, 4)
    assert placed["big"].env()["CUDA_VISIBLE_DEVICES"] == "0"
    assert placed["big"].env()[MEM_FRACTION_VAR] == f"{30 / 80:.4f}"


def test_reservation_adds_margin_and_context_overhead_and_caps_trials_per_gpu():
    packer = Packer(declared("cpu=64,gpu=80GB"), margin=1.5, overhead_mb=500, max_per_gpu=3)
    assert packer.reservation_mb(Demand("x", gpu=True, peak_mb=1000)) == 2000
    placed = packer.plan([Demand(f"t{i}", gpu=True, peak_mb=100) for i in range(10)], [])
    assert len(placed) == 3


def test_a_trial_of_unknown_memory_runs_alone_as_a_probe_on_the_largest_idle_gpu():
    packer = _packer("cpu=8,gpu=16GB,gpu=40GB")
    (probe,) = packer.plan([Demand("p", gpu=True)], [])
    assert probe.probe and probe.alone and probe.gpu == 1 and probe.mem_fraction == 1.0
    # with both GPUs busy it waits, and the largest GPU takes no new trial meanwhile
    running = packer.plan([Demand("a", gpu=True, peak_mb=GB), Demand("b", gpu=True,
                                                                       peak_mb=20 * GB)], [])
    assert {p.gpu for p in running} == {0, 1}
    later = packer.plan([Demand("p", gpu=True), Demand("c", gpu=True, peak_mb=GB)], running)
    assert [(p.key, p.gpu) for p in later] == [("c", 0)]


def test_an_oom_trial_is_retried_alone_and_fails_when_it_ran_out_alone():
    packer = _packer("cpu=8,gpu=24GB,gpu=48GB")
    demand = Demand("t", gpu=True, peak_mb=4 * GB)
    retry = packer.after_oom(demand)
    assert retry.alone and packer.after_oom(retry) is None
    assert packer.after_oom(Demand("cpu-only")) is None
    running = packer.plan([Demand("other", gpu=True, peak_mb=GB)], [])
    assert running[0].gpu == 0  # best fit: the smaller GPU
    (alone,) = packer.plan([retry], running)
    assert alone.gpu == 1 and alone.alone and alone.mem_fraction == 1.0  # the idle GPU
    # nothing is placed beside a trial that runs alone
    assert packer.plan([Demand("x", gpu=True, peak_mb=GB)], [alone])[0].gpu == 0


def test_a_trial_larger_than_any_gpu_gets_the_largest_alone_and_no_gpu_is_an_error():
    packer = _packer("cpu=8,gpu=16GB,gpu=24GB")
    (p,) = packer.plan([Demand("giant", gpu=True, peak_mb=100 * GB)], [])
    assert p.gpu == 1 and p.alone
    with pytest.raises(ValueError, match="needs a GPU"):
        _packer("cpu=2").plan([Demand("g", gpu=True, peak_mb=1)], [])


# ---------------------------------------------------------------- the local backend


def job_sleep(seconds: float = 0.0, fail: bool = False) -> dict:
    """A trial: sleep, then report what the placement pinned."""
    start = time.time()
    time.sleep(seconds)
    if fail:
        raise ValueError("a deliberate failure")
    return {"start": start, "end": time.time(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "fraction": os.environ.get(MEM_FRACTION_VAR)}


def job_needs_a_whole_gpu() -> dict:
    """A trial that runs out of memory unless it has a GPU to itself."""
    if float(os.environ[MEM_FRACTION_VAR]) < 1.0:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return job_sleep()


@pytest.fixture
def importable(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (
        str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH")))))


def test_local_backend_runs_trials_concurrently_pinned_with_failures_and_timeouts(importable):
    backend = LocalBackend(declared("cpu=2"), poll_s=0.05)
    trials = [Trial(f"s{i}", "test_schedule:job_sleep", {"seconds": 1.0}) for i in range(4)]
    trials += [Trial("bad", "test_schedule:job_sleep", {"fail": True}),
               Trial("slow", "test_schedule:job_sleep", {"seconds": 60}, timeout_s=1.0)]
    seen = []
    results = {r.key: r for r in backend.run(trials, on_result=seen.append)}
    assert len(seen) == 6
    assert results["bad"].status == "error" and "a deliberate failure" in results["bad"].error
    assert results["slow"].status == "timeout" and results["slow"].seconds < 10
    ok = [results[f"s{i}"].value for i in range(4)]
    assert all(v["omp"] == "1" and v["cuda"] == "" for v in ok)
    spans = sorted((v["start"], v["end"]) for v in ok)
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most <= 2  # two cores, one thread each: never three at once


def test_local_backend_retries_an_oom_trial_alone_and_sizes_a_probe(importable):
    inv = declared("cpu=4,gpu=16GB")
    backend = LocalBackend(inv, Packer(inv, margin=1.0, overhead_mb=0.0), poll_s=0.05)
    results = {r.key: r for r in backend.run([
        Trial("oom", "test_schedule:job_needs_a_whole_gpu", gpu=True, peak_mb=4 * GB),
        Trial("probed", "test_schedule:job_sleep", gpu=True,
              probe_target="test_schedule:job_sleep")])}
    oom = results["oom"]
    assert oom.status == "ok" and oom.attempts == 2 and oom.placement["alone"]
    assert oom.value["fraction"] == "1.0000" and oom.value["cuda"] == "0"
    probed = results["probed"]
    assert probed.status == "ok" and probed.attempts == 2  # the probe, then the measured run
    assert not probed.placement["probe"]


def test_make_backend_names_the_backends():
    with pytest.raises(ValueError, match="local, ray"):
        make_backend("slurm")


@pytest.mark.slow  # starting Ray takes half a minute on two cores
def test_the_ray_backend_runs_the_same_trials(importable):
    pytest.importorskip("ray")
    import ray

    backend = make_backend("ray", declared("cpu=2"))
    try:
        results = {r.key: r for r in backend.run([
            Trial("a", "test_schedule:job_sleep", {"seconds": 0.1}),
            Trial("b", "test_schedule:job_sleep", {"fail": True})])}
    finally:
        ray.shutdown()
    assert results["a"].status == "ok" and results["a"].value["omp"] == "1"
    assert results["b"].status == "error"
