"""The store: a whole run through the bus read back equal, queries, artifacts, decisions,
crash safety (SIGKILL mid-write) and concurrent readers and writers."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopilot_lab.candidate import Candidate, Recipe
from autopilot_lab.events import Event, EventBus
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.scorecard import Scorecard, Verdict
from autopilot_lab.store import Store

REPO = Path(__file__).resolve().parents[1]
SPEC = {"objective": "tabular", "model_source": "reference.py", "data": {"name": "iris"},
        "target": {"accuracy": 0.9}, "agent": "playbook", "max_iters": 5,
        "recipe": Recipe().to_dict()}


def make_candidate(n: int) -> Candidate:
    return Candidate(files={"model.py": f"class Net:  # iteration {n}\n    pass\n",
                            "blocks/util.py": "X = 1\n"},
                     entry="Net", recipe=Recipe(lr=0.01 * n, epochs=n),
                     init_kwargs={"hidden": 8 * n}, notes={"repair": f"r{n}"},
                     parent=n - 1 if n > 1 else None)


def make_verdicts(n: int) -> tuple[Verdict, ...]:
    gate = Verdict("static", 0, True, True, 1.0, keeps=(Keep("static", "parses", {"lines": 2}),),
                   evidence={"lines": 2}, timing={"wall_s": 0.01})
    metric = Verdict(
        "metric", 4, False, True, round(0.5 + 0.1 * n, 6),
        hints=(Hint(HintKind.METRIC_GAP, "metric", "accuracy", 0.7, 0.9, "train longer"),
               Hint(HintKind.OVERFITTING, "metric", "gap", [0.99, 0.7], 0.1, "add dropout",
                    where="epoch 3")),
        evidence={"target_met": False, "accuracy": 0.7, "curve": [1.0, 0.5]},
        timing={"wall_s": 1.5})
    return gate, metric


def iteration_events(run_id: str, n: int, best: int) -> list[Event]:
    """The events of one iteration, in the loop's order."""
    cand = make_candidate(n)
    vs = make_verdicts(n)
    card = Scorecard(vs)
    out = [Event("iteration_started", run_id, {"iteration": n}),
           Event("candidate_proposed", run_id, {"iteration": n, "candidate": cand.to_dict(),
                                                 "agent": "playbook"})]
    for v in vs:
        out += [Event("check_started", run_id, {"iteration": n, "check": v.check,
                                                "tier": v.tier}),
                Event("check_finished", run_id, {"iteration": n,
                                                 "verdict": v.to_dict(with_timing=True)})]
    out.append(Event("iteration_finished", run_id, {
        "iteration": n, "scorecard": card.to_dict(with_timing=True), "score": card.score,
        "best_iteration": best, "best_score": Scorecard(make_verdicts(best)).score}))
    return out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "home")
    yield s
    s.close()


def bus_for(store: Store) -> EventBus:
    bus = EventBus()
    bus.subscribe(store.subscriber, critical=True)
    return bus


def test_home_and_url_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOPILOT_HOME", raising=False)
    monkeypatch.delenv("AUTOPILOT_DB_URL", raising=False)
    with Store() as s:
        assert s.home == tmp_path / ".autopilot"
        assert (tmp_path / ".autopilot" / "autopilot.db").exists()
    monkeypatch.setenv("AUTOPILOT_HOME", str(tmp_path / "env-home"))
    monkeypatch.setenv("AUTOPILOT_DB_URL", f"sqlite:///{tmp_path / 'team.db'}")
    with Store() as s:
        assert s.home == tmp_path / "env-home" and s.url.endswith("team.db")
        assert (tmp_path / "team.db").exists()
    with Store(tmp_path / "arg", url=f"sqlite:///{tmp_path / 'arg.db'}") as s:
        assert s.home == tmp_path / "arg" and (tmp_path / "arg.db").exists()
    with pytest.raises(ValueError, match="in-memory"):
        Store(tmp_path, url="sqlite://")


def test_whole_run_round_trip(store: Store) -> None:
    run_id = store.create_run("tabular", SPEC, "playbook", 5)
    assert run_id.startswith("r-") and store.run_folder(run_id) == store.home / "runs" / run_id
    assert store.run_folder(run_id).is_dir()
    published = [Event("run_started", run_id, {"objective": "tabular", "spec": SPEC,
                                               "agent": "playbook", "max_iters": 5})]
    published += iteration_events(run_id, 1, best=1) + iteration_events(run_id, 2, best=2)
    published.append(Event("run_finished", run_id, {
        "status": "stopped", "best_iteration": 2, "best_score": Scorecard(make_verdicts(2)).score,
        "reason": "max_iters reached"}))
    bus = bus_for(store)
    for e in published:
        bus.publish(e)

    run = store.get_run(run_id)
    assert run["status"] == "stopped" and run["reason"] == "max_iters reached"
    assert run["spec"] == SPEC and run["agent"] == "playbook" and run["max_iters"] == 5
    assert run["best_iteration"] == 2
    assert run["best_score"] == Scorecard(make_verdicts(2)).score
    assert run["finished_at"] >= run["started_at"] and run["iterations_done"] == 2
    assert run["pid"] == os.getpid() and run["error"] is None

    its = store.iterations(run_id)
    assert [it["n"] for it in its] == [1, 2]
    for it in its:
        n = it["n"]
        assert it["candidate"] == make_candidate(n)
        assert it["digest"] == make_candidate(n).digest()
        assert it["scorecard"] == Scorecard(make_verdicts(n))
        assert it["score"] == Scorecard(make_verdicts(n)).score
        assert it["agent"] == "playbook" and it["status"] == "finished"
        assert it["gates_passed"] == 1 and it["targets_met"] is False

    rows = store.verdicts(run_id, 1)
    assert [Verdict.from_dict({**r, "hints": []}) for r in rows] == [
        dataclasses.replace(v, hints=()) for v in make_verdicts(1)]
    assert rows[1]["timing"] == {"wall_s": 1.5} and rows[0]["hard"] is True
    hint_rows = store.hints(run_id, 2)
    assert [Hint.from_dict(h) for h in hint_rows] == list(make_verdicts(2)[1].hints)
    assert hint_rows[1]["key"] == "OVERFITTING:metric:gap:epoch 3"
    assert hint_rows[1]["observed"] == [0.99, 0.7] and hint_rows[1]["priority"] == "P3"
    assert len(store.hints(run_id)) == 4

    stored = store.events(run_id)
    assert [e["seq"] for e in stored] == list(range(1, len(published) + 1))
    assert [(e["type"], e["data"]) for e in stored] == [(e.type, e.data) for e in published]
    assert [e["seq"] for e in store.events(run_id, after_seq=5)] == list(
        range(6, len(published) + 1))

    arts = store.artifacts(run_id)
    assert [a["path"] for a in arts] == ["iter_1/model.py", "iter_1/blocks/util.py",
                                         "iter_2/model.py", "iter_2/blocks/util.py"]
    for a in arts:
        body = (store.run_folder(run_id) / a["path"]).read_bytes()
        assert body.decode() == make_candidate(a["iteration"]).files[a["path"].split("/", 1)[1]]
        assert a["sha256"] == hashlib.sha256(body).hexdigest() and a["bytes"] == len(body)
        assert a["kind"] == "candidate"
    assert store.integrity_check() == "ok"


def test_pending_iteration_is_reset_when_restarted(store: Store) -> None:
    run_id = store.create_run("tabular", SPEC, "playbook", 5)
    bus = bus_for(store)
    for e in iteration_events(run_id, 1, best=1):
        bus.publish(e)
    for e in iteration_events(run_id, 2, best=2)[:-1]:  # killed before iteration_finished
        bus.publish(e)
    assert [it["n"] for it in store.iterations(run_id)] == [1]
    pending = store.iterations(run_id, include_unfinished=True)[1]
    assert pending["status"] == "pending" and pending["scorecard"] is None
    assert pending["candidate"] == make_candidate(2) and len(store.hints(run_id, 2)) == 2
    stale = store.run_folder(run_id) / "iter_2" / "blocks" / "util.py"
    assert stale.exists()

    bus.publish(Event("iteration_started", run_id, {"iteration": 2}))  # a resume redoes it
    pending = store.iterations(run_id, include_unfinished=True)[1]
    assert pending["candidate"] is None and pending["digest"] is None
    assert store.hints(run_id, 2) == [] and store.verdicts(run_id, 2) == []
    assert [a["iteration"] for a in store.artifacts(run_id)] == [1, 1] and not stale.exists()
    for e in iteration_events(run_id, 2, best=2)[1:]:
        bus.publish(e)
    assert [it["n"] for it in store.iterations(run_id)] == [1, 2]

    with pytest.raises(ValueError, match="iteration 1 of run .* is already finished"):
        bus.publish(Event("iteration_started", run_id, {"iteration": 1}))


def test_failed_event_leaves_nothing(store: Store, tmp_path: Path) -> None:
    run_id = store.create_run("tabular", SPEC, "playbook", 5)
    bus = bus_for(store)
    evil = Candidate(files={"model.py": "x = 1\n", "../../escape.py": "x = 2\n"}, entry="Net")
    before = store.events(run_id)
    with pytest.raises(ValueError, match="contains '..'"):
        bus.publish(Event("candidate_proposed", run_id, {"iteration": 1,
                                                          "candidate": evil.to_dict(),
                                                          "agent": "a"}))
    assert store.events(run_id) == before and store.artifacts(run_id) == []
    assert store.iterations(run_id, include_unfinished=True) == []
    assert not (tmp_path / "home" / "escape.py").exists()
    with pytest.raises(KeyError, match="no run 'r-nope' in sqlite:///.*autopilot runs"):
        bus.publish(Event("run_started", "r-nope", {}))


def test_run_failed_and_set_status(store: Store) -> None:
    run_id = store.create_run("tabular", SPEC, "playbook", 5)
    bus_for(store).publish(Event("run_failed", run_id, {"error": "sandbox unavailable"}))
    run = store.get_run(run_id)
    assert run["status"] == "failed" and run["error"] == "sandbox unavailable"
    assert run["finished_at"] is not None
    store.set_status(run_id, "running")
    assert store.get_run(run_id)["finished_at"] is None
    store.set_status(run_id, "interrupted", error="stopped by hand")
    assert store.get_run(run_id)["error"] == "stopped by hand"
    with pytest.raises(ValueError, match="status must be one of"):
        store.set_status(run_id, "done")
    with pytest.raises(KeyError, match="no run 'r-x'"):
        store.set_status("r-x", "failed")
    with pytest.raises(KeyError, match=r"no run 'r-x' in .*; `autopilot runs` lists them"):
        store.get_run("r-x")


def test_list_filter_paginate(store: Store) -> None:
    ids = []
    for i in range(7):
        spec = {**SPEC, "data": {"name": "iris" if i % 2 else "wine_quality"}}
        ids.append(store.create_run("tabular" if i < 4 else "translate", spec, "playbook", 3))
    store.set_status(ids[1], "finished")
    store.set_status(ids[2], "failed", error="Boom_1%")

    everything = store.list_runs()
    assert sorted(r["id"] for r in everything) == sorted(ids)
    starts = [r["started_at"] for r in everything]
    assert starts == sorted(starts, reverse=True)
    pages = [store.list_runs(limit=3, offset=k) for k in (0, 3, 6)]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [r["id"] for p in pages for r in p] == [r["id"] for r in everything]
    assert [r["id"] for r in store.list_runs(status="finished")] == [ids[1]]
    assert {r["id"] for r in store.list_runs(objective="translate")} == set(ids[4:])
    assert {r["id"] for r in store.list_runs(text="IRIS")} == {ids[1], ids[3], ids[5]}
    assert {r["id"] for r in store.list_runs(text="iris", objective="tabular",
                                             status="running")} == {ids[3]}
    assert [r["id"] for r in store.list_runs(text="_1%")] == [ids[2]]  # wildcards are literal
    assert [r["id"] for r in store.list_runs(text=ids[6][-4:])] == [ids[6]]
    with pytest.raises(ValueError, match="status must be one of"):
        store.list_runs(status="done")


def test_artifacts_atomic_and_confined(store: Store, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = store.create_run("tabular", SPEC, "playbook", 5)
    folder = store.run_folder(run_id)
    path = store.write_artifact(run_id, "report/summary.md", "# one\n", kind="report")
    assert path == folder / "report" / "summary.md" and path.read_text() == "# one\n"
    store.write_artifact(run_id, "./report//summary.md", b"# two\n", iteration=3)
    (row,) = store.artifacts(run_id)
    assert row["path"] == "report/summary.md" and row["iteration"] == 3
    assert row["bytes"] == 6 and row["sha256"] == hashlib.sha256(b"# two\n").hexdigest()
    assert path.read_bytes() == b"# two\n"

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.write_artifact(run_id, "report/summary.md", "# three\n")
    monkeypatch.undo()
    assert path.read_bytes() == b"# two\n"  # the old file, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.md"]  # no tmp left
    assert store.artifacts(run_id)[0]["sha256"] == row["sha256"]

    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "link").symlink_to(outside)
    for bad in ("../x", "a/../../x", "..", "/etc/passwd", str(tmp_path / "abs"), "..\\x",
                "C:\\x", "", ".", "link/x"):
        with pytest.raises(ValueError, match="artifact name"):
            store.write_artifact(run_id, bad, "no")
    assert list(outside.iterdir()) == [] and not (tmp_path / "abs").exists()
    assert len(store.artifacts(run_id)) == 1


def test_decisions_and_rejected_keys(store: Store) -> None:
    run_id = store.create_run("tabular", SPEC, "playbook", 5)
    store.record_decision(run_id, 1, "METRIC_GAP:metric:accuracy:", "reject", "no budget")
    store.record_decision(run_id, 1, "OVERFITTING:metric:gap:", "reject")
    store.record_decision(run_id, 2, "OVERFITTING:metric:gap:", "accept", "now it matters")
    store.record_decision(run_id, 2, "METRIC_GAP:metric:accuracy:", "note", "still rejected")
    assert store.rejected_hint_keys(run_id) == {"METRIC_GAP:metric:accuracy:"}
    got = store.decisions(run_id)
    assert [(d["iteration"], d["decision"], d["text"]) for d in got] == [
        (1, "reject", "no budget"), (1, "reject", ""), (2, "accept", "now it matters"),
        (2, "note", "still rejected")]
    with pytest.raises(ValueError, match="decision must be one of"):
        store.record_decision(run_id, 1, "k", "ignore")
    with pytest.raises(KeyError, match="no run"):
        store.record_decision("r-x", 1, "k", "reject")
    assert store.rejected_hint_keys("r-x") == set()


def run_child(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, text=True)


def test_mark_interrupted_dead_pid(store: Store) -> None:
    child = run_child("""
        import sys
        from autopilot_lab.store import Store
        print(Store(sys.argv[1]).create_run("tabular", {}, "playbook", 3))
    """, str(store.home))
    dead_run = child.communicate(timeout=60)[0].strip()
    assert child.returncode == 0
    alive = store.create_run("tabular", SPEC, "playbook", 5)
    done = store.create_run("tabular", SPEC, "playbook", 5)
    store.set_status(done, "finished")
    assert store.get_run(dead_run)["pid"] == child.pid
    assert store.mark_interrupted() == [dead_run]
    run = store.get_run(dead_run)
    assert run["status"] == "interrupted" and run["finished_at"] is not None
    assert str(child.pid) in run["error"]
    assert store.get_run(alive)["status"] == "running"
    assert store.get_run(done)["status"] == "finished"
    assert store.mark_interrupted() == []


WRITER = """
    import sys
    sys.path.insert(0, sys.argv[3])
    from autopilot_lab.events import Event
    from autopilot_lab.store import Store
    from test_store import iteration_events

    store = Store(sys.argv[1])
    run_id = sys.argv[2]
    store.subscriber(Event("run_started", run_id, {"max_iters": 10**6}))
    start = len(store.iterations(run_id)) + 1
    for n in range(start, start + 10**6):
        for e in iteration_events(run_id, n, best=n):
            store.subscriber(e)
        print(n, flush=True)
"""


def test_sigkill_mid_write_loses_nothing_acknowledged(tmp_path: Path) -> None:
    kill_after = (4, 1, 7)  # acknowledged iterations per round before the SIGKILL
    home = tmp_path / "home"
    with Store(home) as s:
        run_id = s.create_run("tabular", SPEC, "playbook", 10**6)
    acknowledged: set[int] = set()
    for lines in kill_after:
        child = run_child(WRITER, str(home), run_id, str(Path(__file__).parent))
        with Store(home) as reader:  # reads from this process while the child writes
            seen = 0
            for _ in range(lines):
                acknowledged.add(int(child.stdout.readline()))
                now = len(reader.iterations(run_id))
                assert now >= seen
                seen = now
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL

        with Store(home) as s:
            assert s.integrity_check() == "ok"
            finished = [it["n"] for it in s.iterations(run_id)]
            assert acknowledged <= set(finished)
            assert finished == list(range(1, len(finished) + 1))
            seqs = [e["seq"] for e in s.events(run_id)]
            assert seqs == list(range(1, len(seqs) + 1))
            assert s.mark_interrupted() == [run_id]
            assert s.get_run(run_id)["status"] == "interrupted"
    assert len(acknowledged) == sum(kill_after)


def test_concurrent_writers_and_reader(tmp_path: Path) -> None:
    home = tmp_path / "home"
    writers = [Store(home), Store(home)]
    runs = [w.create_run("tabular", SPEC, "playbook", 30) for w in writers]
    errors: list[BaseException] = []

    def write(store: Store, run_id: str) -> None:
        try:
            bus = bus_for(store)
            for n in range(1, 16):
                for e in iteration_events(run_id, n, best=n):
                    bus.publish(e)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w, r)) for w, r in zip(writers, runs)]
    for t in threads:
        t.start()
    with Store(home) as reader:
        last = {r: 0 for r in runs}
        while any(t.is_alive() for t in threads):
            for r in runs:
                n = reader.get_run(r)["iterations_done"]
                assert n >= last[r] and len(reader.iterations(r)) >= n
                last[r] = n
            reader.list_runs(text="iris")
        for t in threads:
            t.join()
        assert errors == []
        for r in runs:
            assert [it["n"] for it in reader.iterations(r)] == list(range(1, 16))
            assert len(reader.events(r)) == 15 * 7
        assert reader.integrity_check() == "ok"
    for w in writers:
        w.close()


@pytest.mark.parametrize("end", [
    Event("run_finished", "", {"status": "finished",
                               "reason": "the agent has no further proposal: nothing left"}),
    Event("run_failed", "", {"error": "RuntimeError: the endpoint went away"})])
def test_an_iteration_that_never_got_a_candidate_is_no_iteration(store: Store, end) -> None:
    run_id = store.create_run("tabular", SPEC, "playbook", 5)
    bus = bus_for(store)
    for e in iteration_events(run_id, 1, best=1):
        bus.publish(e)
    bus.publish(Event("iteration_started", run_id, {"iteration": 2}))  # no proposal came
    assert len(store.iterations(run_id, include_unfinished=True)) == 2
    bus.publish(Event(end.type, run_id, end.data))
    assert [it["n"] for it in store.iterations(run_id, include_unfinished=True)] == [1]
    assert store.get_run(run_id)["best_iteration"] == 1
