"""Hostile candidates through the whole loop: each contained by the sandbox, reported as a
typed hint, the loop going on to the next candidate and this process staying alive."""

from __future__ import annotations

import os
import socket

import pytest

from autopilot_lab import api
from autopilot_lab.agents.base import Agent
from autopilot_lab.candidate import Recipe
from autopilot_lab.hints import HintKind
from autopilot_lab.objectives.improve import ImproveObjective
from autopilot_lab.sandbox import Limits

GOOD = Recipe(lr=0.01, epochs=2, preprocessing="standardize")


def _hostile(mlp_source: str, code: str) -> str:
    """Put ``code`` at the start of the model's constructor (dynamic imports slip past the
    static check on purpose: the sandbox must contain them)."""
    body = "\n".join("        " + line for line in code.strip().splitlines())
    return mlp_source.replace("super().__init__()", "super().__init__()\n" + body)


class ScriptedAgent(Agent):
    """A deterministic agent that proposes the given sources in order (test double of an
    agent, not of any real part: the candidates run for real in the sandbox)."""

    name = "scripted"

    def __init__(self, sources: list[tuple[str, str]]):
        self.sources = sources

    def propose(self, objective, journal, hints, keeps):
        label, source = self.sources[len(journal)]
        base = objective.initial_candidate()
        return base.replace(files={"model.py": source}, notes={"agent": self.name,
                                                               "summary": label})


def test_hostile_candidates_become_hints_and_the_loop_goes_on(home, tmp_path, mlp_source,
                                                              monkeypatch):
    outside = tmp_path / "escaped.txt"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    cases = [
        ("infinite loop", "while True:\n    pass"),
        ("memory bomb", "x = bytearray(8 * 2**30)"),
        ("fork bomb", "o = __import__('os')\nwhile True:\n    o.fork()"),
        ("segfault", "__import__('ctypes').string_at(0)"),
        ("os._exit", "__import__('os')._exit(0)"),
        ("kill parent", "o = __import__('os')\no.kill(o.getppid(), 9)\n"
                        f"o.kill({os.getpid()}, 9)"),
        ("100 MB of output", "for _ in range(100_000):\n    print('x' * 1000)"),
        ("write outside", f"open({str(outside)!r}, 'w').write('escaped')"),
        ("network", f"__import__('socket').create_connection(('127.0.0.1', {port}), 2)"),
    ]
    sources = [(label, _hostile(mlp_source, code)) for label, code in cases]
    sources.append(("the honest model", mlp_source))
    objective = ImproveObjective(mlp_source, "sklearn:iris", target=None, recipe=GOOD)
    monkeypatch.setattr(api, "make_agent", lambda name, **_: ScriptedAgent(sources))
    result = api.run(objective, agent="scripted", max_iters=len(sources),
                     limits=Limits(wall_s=15, memory_mb=1024, processes=32))
    listener.close()

    assert len(result.history) == len(sources)
    # style findings (P4, not a gate) on the hostile code itself are beside the point here
    kinds = {it.candidate.notes["summary"]: {h.kind for h in it.scorecard.hints
                                             if h.kind is not HintKind.STYLE}
             for it in result.history}
    assert kinds["infinite loop"] == {HintKind.RESOURCE_LIMIT}
    assert kinds["memory bomb"] == {HintKind.RESOURCE_LIMIT}
    assert kinds["fork bomb"] & {HintKind.RESOURCE_LIMIT, HintKind.RUNTIME_ERROR}
    assert kinds["100 MB of output"] == {HintKind.RESOURCE_LIMIT}
    for label in ("segfault", "os._exit", "write outside", "network"):
        assert kinds[label] == {HintKind.RUNTIME_ERROR}, label
    for it in result.history[:-1]:
        assert it.scorecard.failed_gate == "build", it.candidate.notes["summary"]
    assert not outside.exists()
    # the honest model wins and the run ended normally; we are alive to check it
    assert result.best.candidate.notes["summary"] == "the honest model"
    assert result.best.scorecard.all_gates_passed
    # no target: the honest model meets it, on the last iteration the budget allows
    assert (result.status, result.reason) == ("finished", "targets met")


@pytest.mark.parametrize("target,budget,ran,reason", [
    ("balanced_accuracy>=1.0", 2, 2, "iteration budget of 2 spent"),  # unreachable
    ("balanced_accuracy>=0.2", 3, 1, "targets met"),  # met at once: the budget is left
])
def test_the_run_tells_budget_spent_from_targets_met(home, mlp_source, monkeypatch, target,
                                                     budget, ran, reason):
    objective = ImproveObjective(mlp_source, "sklearn:iris", target=target, recipe=GOOD)
    monkeypatch.setattr(api, "make_agent", lambda name, **_: ScriptedAgent(
        [(f"honest {i}", mlp_source) for i in range(budget + 1)]))
    result = api.run(objective, agent="scripted", max_iters=budget)
    assert (result.status, result.reason, len(result.history)) == ("finished", reason, ran)
    assert result.targets_met is (reason == "targets met")


def test_a_repair_the_user_chose_is_applied_once_instead_of_the_agent(home, mlp_source,
                                                                      monkeypatch):
    """The panel's "choose the next repair": recorded as a decision, applied by the loop to
    the frontier's candidate at the next iteration, once; the agent proposes again after."""
    from autopilot_lab.store import CHOSEN_PREFIX, Store

    store = Store(home)
    objective = ImproveObjective(mlp_source, "sklearn:iris", target="balanced_accuracy>=1.0",
                                 recipe=GOOD)
    monkeypatch.setattr(api, "make_agent", lambda name, **_: ScriptedAgent(
        [(f"honest {i}", mlp_source) for i in range(4)]))
    loops = []

    def choose(it):
        if it.n == 1:
            store.record_decision(loops[0].run_id, 1, CHOSEN_PREFIX + "raise_capacity",
                                  "choose")

    result = api.run(objective, agent="scripted", max_iters=3, store=store,
                     on_loop=loops.append, between_iterations=choose)
    agents = [it.candidate.notes["agent"] for it in result.history]
    assert agents == ["scripted", "user", "scripted"]
    second = result.history[1].candidate
    assert second.parent == 1 and second.init_kwargs.get("hidden") == 64
    assert second.notes["repairs"][0]["repair"] == "raise_capacity"
    assert store.chosen_repair(loops[0].run_id, 1) == "raise_capacity"
    assert store.rejected_hint_keys(loops[0].run_id) == set()  # a choice is no rejection
