"""Runs in the background of a kernel: one thread per run, a registry of runs by id, stop, and
the interactive gate between iterations.

The loop runs in a thread so that the notebook stays usable while candidates are scored (in
the sandbox, never in the kernel). Several runs may go on at once. A kernel that dies leaves
its runs ``running`` in the store with a pid that is gone; the next look at the store marks
them ``interrupted`` and :func:`resume` continues them.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import pprint
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopilot_lab import api
from autopilot_lab.journal import Iteration, Journal
from autopilot_lab.jupyter.model_detect import (
    NotebookError,
    data_spec,
    framework_of,
    torch_model_source,
)
from autopilot_lab.loop import DEFAULT_MAX_ITERS, Loop, RunResult
from autopilot_lab.store import Store

DECISIONS = ("accept", "reject")
NOTE_KEY = ""  # a free-text note concerns the run, not one hint
# Jupyter Server starts a notebook's kernel with the notebook's path in this variable
NOTEBOOK_ENV = "JPY_SESSION_NAME"
NOTEBOOK_ARTIFACT = "notebook.json"  # read by autopilot_lab.jupyter.handlers.notebook_of


# ---- objectives: what each one takes as its model ----------------------------------------


def _torch_model(model: Any, namespace: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(model, (str, os.PathLike)):
        return {"model": model}
    source, entry = torch_model_source(model, namespace)
    return {"model": source, "entry": entry}


def _keras_model(model: Any, namespace: Mapping[str, Any]) -> dict[str, Any]:
    return {"keras_model": model}


@dataclass(frozen=True)
class ObjectiveEntry:
    """How the notebook calls ``autopilot_lab.api.<name>``: the model frameworks it takes,
    the keyword arguments its model becomes, and what to say while the API lacks it."""

    frameworks: tuple[str, ...]
    model_kwargs: Callable[[Any, Mapping[str, Any]], dict[str, Any]]
    pending: str = ""


OBJECTIVES: dict[str, ObjectiveEntry] = {
    "improve": ObjectiveEntry(("torch",), _torch_model),
    "migrate": ObjectiveEntry(("keras",), _keras_model, pending="migrate lands with issue 4"),
}
_OTHER = {"torch": "improve", "keras": "migrate"}
# the notebook's name for each keyword argument of an API function, for precise errors
OPTION_NAMES = {"data": "--data", "target": "--target", "recipe": "--recipe", "fit": "--fit",
                "seed": "--seed", "between_iterations": "--interactive"}


def api_function(objective: str) -> Callable[..., RunResult]:
    """The API function behind ``%%autopilot <objective>``."""
    if objective not in OBJECTIVES:
        raise NotebookError(f"unknown objective {objective!r}; use one of "
                            f"{', '.join(sorted(OBJECTIVES))}")
    function = getattr(api, objective, None)
    if function is None:
        raise NotebookError(OBJECTIVES[objective].pending
                            or f"autopilot_lab.api has no {objective}()")
    return function


# ---- one run in this kernel --------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the panel shows at the end: the best candidate, its diff, the report summary."""

    run_id: str
    status: str
    reason: str
    best_iteration: int
    best_score: float
    targets_met: bool
    code: str
    cell: str
    diff: str
    summary: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)


class NotebookRun:
    """A run started (or shown) from the notebook: its thread, its panel and its controls.

    ``wait()`` gives the :class:`~autopilot_lab.loop.RunResult`; ``stop()`` ends the run after
    the current iteration with the best so far; in interactive mode the loop waits after each
    scoring until ``proceed()`` (the panel's Continue) or ``stop()``.
    """

    def __init__(self, objective: str, store: Store, *, interactive: bool = False,
                 run_id: str | None = None):
        from autopilot_lab.jupyter.panel import RunPanel

        self.objective, self.store, self.interactive = objective, store, interactive
        self.run_id = run_id
        self.loop: Loop | None = None
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.waiting_after: int | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._gate = threading.Event()
        self._stopping = False
        self.panel = RunPanel(self)

    # -- lifecycle

    def launch(self, call: Callable[[], RunResult]) -> None:
        """Run ``call`` (an API call given this run's hooks) in a thread; return once the loop
        exists, or raise what stopped it from starting (bad data, bad target...)."""
        self._thread = threading.Thread(target=self._main, args=(call,), daemon=True,
                                        name=f"autopilot-{self.objective}")
        self._thread.start()
        self._ready.wait()
        if self.loop is None and self.error is not None:
            raise self.error

    def _main(self, call: Callable[[], RunResult]) -> None:
        try:
            self.result = call()
        except BaseException as e:  # shown in the panel; raised again by wait()
            self.error = e
        finally:
            self._ready.set()
            self.waiting_after = None
            self.panel.finished()

    def attach(self, loop: Loop) -> None:
        """The API's ``on_loop`` hook: the run exists now, with its id."""
        self.loop, self.run_id = loop, loop.run_id
        with _LOCK:
            _RUNS[loop.run_id] = self
        record_notebook(self.store, loop.run_id)
        self.panel.start(loop.run_id, loop.objective.ladder().names)
        self._ready.set()

    def between_iterations(self, it: Iteration) -> None:
        """The loop's hook in interactive mode: wait for Continue or Stop."""
        if self._stopping:
            return
        self.waiting_after = it.n
        self.panel.waiting(it.n)
        self._gate.wait()
        self._gate.clear()
        self.waiting_after = None
        self.panel.proceeding()

    @property
    def done(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        if self.result is not None:
            return self.result.status
        if not self.done:
            return "waiting" if self.waiting_after is not None else "running"
        return self.store.get_run(self.run_id)["status"] if self.run_id else "not started"

    def wait(self, timeout: float | None = None) -> RunResult:
        """Block until the run ends and return its result (an interrupt stops the run)."""
        if self._thread is None:
            raise NotebookError(f"run {self.run_id} was not started in this kernel; "
                                "autopilot_lab.jupyter.resume continues it here")
        try:
            self._thread.join(timeout)
        except KeyboardInterrupt:
            if not self.done:
                self.stop()
            raise
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise TimeoutError(f"run {self.run_id} is still {self.status} after {timeout} s")
        return self.result

    # -- controls (the panel's buttons call these)

    def proceed(self) -> None:
        """Continue after an interactive pause with the decisions made so far."""
        if self.waiting_after is None:
            raise NotebookError(f"run {self.run_id} is not waiting for decisions")
        self._gate.set()

    def stop(self) -> None:
        """End the run after the current iteration; the best candidate so far is kept."""
        if self.loop is None or self.done:
            raise NotebookError(f"run {self.run_id} is not going on in this kernel")
        self._stopping = True
        self.loop.stop()
        self._gate.set()
        self.panel.stopping()

    def decide(self, iteration: int, hint_key: str, decision: str) -> None:
        """Record accept or reject for a hint; a rejected hint reaches no agent again."""
        if decision not in DECISIONS:
            raise NotebookError(f"decision must be one of {DECISIONS}, got {decision!r}")
        self.store.record_decision(self._id(), iteration, hint_key, decision)

    def note(self, iteration: int, text: str) -> None:
        """Record a free-text hint of the user's for the run."""
        if not text.strip():
            raise NotebookError("the note is empty")
        self.store.record_decision(self._id(), iteration, NOTE_KEY, "note", text.strip())

    def repair_choices(self, iteration: int) -> list[tuple[str, str]]:
        """The playbook repairs a person may choose for ``iteration``'s candidate: those the
        objective allows that no iteration of the run has applied yet (name, what it does)."""
        from autopilot_lab.agents.playbook import user_repairs

        if self.loop is None or self.run_id is None:
            return []
        applied = {r.get("repair") for it in self.store.iterations(self.run_id)
                   for r in it["candidate"].notes.get("repairs", [])}
        return [(r.name, r.description) for r in user_repairs(self.loop.objective)
                if r.name not in applied]

    def choose_repair(self, iteration: int, name: str) -> None:
        """Apply the playbook repair ``name`` to ``iteration``'s candidate at the next
        iteration, instead of asking the agent."""
        if name not in {n for n, _ in self.repair_choices(iteration)}:
            raise NotebookError(f"{name!r} is not a repair you can choose for iteration "
                                f"{iteration}")
        from autopilot_lab.store import CHOSEN_PREFIX

        self.store.record_decision(self._id(), iteration, CHOSEN_PREFIX + name, "choose")

    def decisions(self) -> dict[str, str]:
        """The latest accept/reject per hint key."""
        latest: dict[str, str] = {}
        for d in self.store.decisions(self._id()):
            if d["decision"] in DECISIONS:
                latest[d["hint_key"]] = d["decision"]
        return latest

    def outcome(self) -> Outcome | None:
        return outcome(self.store, self._id())

    def insert_best(self) -> str:
        """Put the best candidate's code in a new cell (see :func:`insert`)."""
        return insert(self._id(), store=self.store)

    def _id(self) -> str:
        if self.run_id is None:
            raise NotebookError("the run has not started yet")
        return self.run_id

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.panel.widget)

    def __repr__(self) -> str:
        return f"NotebookRun(run_id={self.run_id!r}, objective={self.objective!r}, " \
               f"status={self.status!r})"


def record_notebook(store: Store, run_id: str) -> str | None:
    """Record which notebook runs ``run_id`` (its path, as Jupyter Server gives it to the
    kernel), so that the console names the notebook rather than a kernel id; a resumed run
    records the notebook that resumed it. Returns the path, or ``None`` in a kernel that no
    Jupyter Server session started (nbclient, a console, plain IPython)."""
    path = os.environ.get(NOTEBOOK_ENV, "").strip()
    if not path:
        return None
    store.write_artifact(run_id, NOTEBOOK_ARTIFACT,
                         json.dumps({"notebook": path, "pid": os.getpid()}), kind="origin")
    return path


_RUNS: dict[str, NotebookRun] = {}
_LOCK = threading.Lock()


def active_runs() -> dict[str, NotebookRun]:
    """Runs going on in this kernel, by id."""
    with _LOCK:
        return {k: r for k, r in _RUNS.items() if not r.done}


# ---- the notebook API --------------------------------------------------------------------


def start(objective: str, model: Any, data: Any, *, target: str | None = None,
          max_iters: int = DEFAULT_MAX_ITERS, agent: str = "rules", recipe: Any = None,
          fit: dict | None = None, seed: int | None = None, target_col: str | None = None,
          interactive: bool = False, wait: bool = False, home: str | os.PathLike | None = None,
          namespace: Mapping[str, Any] | None = None) -> NotebookRun | RunResult:
    """Start ``objective`` (``improve``, ``migrate``) on a model in a background thread.

    ``model``: a PyTorch class or instance (from the notebook or a file), a Keras model,
    ``"file.py:Class"`` or source text. ``data``: a task spec, the name of a notebook variable,
    or the value itself: ``(X, y)`` or a DataFrame with ``target_col``. Returns the live
    :class:`NotebookRun` (shown as its panel), or with ``wait`` shows the panel, blocks and
    returns the :class:`RunResult`.
    """
    function = api_function(objective)
    entry = OBJECTIVES[objective]
    framework = framework_of(model)
    if framework is not None and framework not in entry.frameworks:
        raise NotebookError(f"{objective} takes a {' or '.join(entry.frameworks)} model; this "
                            f"is a {framework} model: use %%autopilot {_OTHER[framework]}")
    if interactive and wait:
        raise NotebookError("--interactive waits for decisions made in the panel, which a cell "
                            "blocked by --wait cannot receive; drop one of the two")
    namespace = namespace if namespace is not None else vars(sys.modules["__main__"])
    store = Store(home)
    run = NotebookRun(objective, store, interactive=interactive)
    kwargs = {**entry.model_kwargs(model, namespace), "max_iters": max_iters, "agent": agent,
              "store": store, "subscribers": [run.panel.on_event], "on_loop": run.attach}
    optional = {"data": None if data is None else data_spec(data, namespace, store.home,
                                                            target_col),
                "target": target, "recipe": recipe, "fit": fit, "seed": seed,
                "between_iterations": run.between_iterations if interactive else None}
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    _check_arguments(objective, function, kwargs)
    run.launch(lambda: function(**kwargs))
    return _finish_start(run, wait)


def _check_arguments(objective: str, function: Callable[..., Any],
                     kwargs: Mapping[str, Any]) -> None:
    """Name the options an objective does not take, or needs, before a thread starts."""
    params = inspect.signature(function).parameters
    extra = [OPTION_NAMES.get(k, k) for k in kwargs if k not in params]
    if extra:
        raise NotebookError(f"{objective} takes no {', '.join(extra)}")
    missing = [OPTION_NAMES.get(k, k) for k, p in params.items()
               if p.default is p.empty and p.kind is not p.VAR_KEYWORD and k not in kwargs]
    if missing:
        raise NotebookError(f"{objective} needs {', '.join(missing)}")


def resume(run_id: str, *, max_iters: int | None = None, interactive: bool = False,
           wait: bool = False, home: str | os.PathLike | None = None
           ) -> NotebookRun | RunResult:
    """Continue a stopped or interrupted run (e.g. after a kernel restart) in the background;
    its panel starts with the iterations already done."""
    if run_id in active_runs():
        raise NotebookError(f"run {run_id} is still going on in this kernel")
    if interactive and wait:
        raise NotebookError("--interactive and --wait exclude each other; drop one")
    store = Store(home)
    store.get_run(run_id)  # a precise error for an unknown id, before any thread starts
    run = NotebookRun("resume", store, interactive=interactive, run_id=run_id)
    run.panel.replay(store.events(run_id))
    hooks: dict[str, Any] = {"on_loop": run.attach}
    if interactive:
        hooks["between_iterations"] = run.between_iterations
    run.launch(lambda: api.resume(run_id, store=store, max_iters=max_iters,
                                  subscribers=[run.panel.on_event], **hooks))
    return _finish_start(run, wait)


def _finish_start(run: NotebookRun, wait: bool) -> NotebookRun | RunResult:
    if not wait:
        return run
    from IPython.display import display

    display(run)
    return run.wait()


def show(run_id: str, *, home: str | os.PathLike | None = None) -> NotebookRun:
    """The panel of a run: the live one if it goes on in this kernel, else one rebuilt from
    the store (hints can still be accepted or rejected there, for a later resume)."""
    live = _RUNS.get(run_id)
    if live is not None:
        return live
    store = Store(home)
    store.mark_interrupted()
    store.get_run(run_id)
    run = NotebookRun("show", store, run_id=run_id)
    run.panel.replay(store.events(run_id))
    run.panel.finished()
    return run


def stop(run_id: str, *, home: str | os.PathLike | None = None) -> None:
    """Stop a run going on in this kernel (after its current iteration)."""
    live = active_runs().get(run_id)
    if live is not None:
        live.stop()
        return
    row = Store(home).get_run(run_id)
    if row["status"] == "running":
        raise NotebookError(f"run {run_id} runs in another process (pid {row['pid']} on "
                            f"{row['host']}); stop it there")
    raise NotebookError(f"run {run_id} is not going on; its status is {row['status']}")


def runs(*, status: str | None = None, limit: int = 20,
         home: str | os.PathLike | None = None) -> Any:
    """Recent runs as a DataFrame, newest first (runs of dead processes marked
    ``interrupted`` first); ``here`` says which go on in this kernel."""
    import pandas as pd

    store = Store(home)
    store.mark_interrupted()
    live = active_runs()
    rows = [{"run": r["id"], "objective": r["objective"], "status": r["status"],
             "here": r["id"] in live, "agent": r["agent"],
             "iterations": f"{r['iterations_done']}/{r['max_iters']}",
             "best_score": r["best_score"], "started": r["started_at"][:19],
             "reason": r["reason"] or r["error"] or ""}
            for r in store.list_runs(status=status, limit=limit)]
    return pd.DataFrame(rows, columns=["run", "objective", "status", "here", "agent",
                                       "iterations", "best_score", "started", "reason"])


def insert(run_id: str, *, home: str | os.PathLike | None = None,
           store: Store | None = None) -> str:
    """Hand the best candidate (code, recipe, constructor arguments) to the notebook as a new
    cell below the cell being run, through IPython's ``set_next_input`` payload; return it."""
    found = outcome(store or Store(home), run_id)
    if found is None:
        raise NotebookError(f"run {run_id} has no finished iteration yet")
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise NotebookError("not in IPython: there is no notebook to insert a cell into")
    shell.set_next_input(found.cell)
    return found.cell


# ---- the outcome of a run, from the store ------------------------------------------------


def outcome(store: Store, run_id: str) -> Outcome | None:
    """The best candidate of a run so far, with its diff against the previous iteration and
    the report's summary; ``None`` before the first iteration is scored."""
    row = store.get_run(run_id)
    journal = Journal([Iteration(i["n"], i["candidate"], i["scorecard"], i["agent"])
                       for i in store.iterations(run_id)])
    best = journal.best
    if best is None:
        return None
    cell = cell_text(best.candidate.source, best.candidate.recipe.to_dict(),
                     best.candidate.init_kwargs)
    previous = next((it for it in journal.iterations if it.n == best.n - 1), None)
    diff = ""
    if previous is not None:
        before = cell_text(previous.candidate.source, previous.candidate.recipe.to_dict(),
                           previous.candidate.init_kwargs)
        diff = "".join(difflib.unified_diff(
            before.splitlines(True), cell.splitlines(True),
            fromfile=f"iteration {previous.n}", tofile=f"iteration {best.n}"))
    folder = Path(row["folder"])
    paths = {a["name"]: str(folder / a["path"]) for a in store.artifacts(run_id)
             if a["name"].startswith("best/") or a["kind"] == "report"}
    return Outcome(run_id=run_id, status=row["status"], reason=row["reason"] or row["error"]
                   or "", best_iteration=best.n, best_score=best.score,
                   targets_met=best.scorecard.targets_met, code=best.candidate.source,
                   cell=cell, diff=diff, summary=_summary(folder / "report.json", journal),
                   paths=paths)


def cell_text(source: str, recipe: dict[str, Any], init_kwargs: dict[str, Any]) -> str:
    """The code of a candidate as a notebook cell: its module, then its recipe and constructor
    arguments as Python literals."""
    return (source.rstrip() + "\n\n\n# the training recipe and constructor arguments that "
            "go with it\n"
            f"recipe = {pprint.pformat(recipe, sort_dicts=False, width=88)}\n"
            f"init_kwargs = {pprint.pformat(init_kwargs, sort_dicts=False, width=88)}\n")


def _summary(report_path: Path, journal: Journal) -> list[str]:
    """Lines of the report's summary: metrics of the best, the chain of repairs."""
    if not report_path.is_file():
        best = journal.best
        return [f"best so far: iteration {best.n}, score {best.score}"]
    report = json.loads(report_path.read_text())
    obj, best = report.get("objective") or {}, report.get("best") or {}
    target = obj.get("target")
    lines = [f"{report['status']}: {report['reason']}"]
    if isinstance(target, dict):
        lines.append(f"target {target.get('text')}; best iteration {best.get('iteration')} "
                     f"score {best.get('score')}, targets met: {best.get('targets_met')}")
    for part, values in (best.get("metrics") or {}).items():
        lines.append(f"{part} metrics: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()))
    for link in report.get("chain", []):
        lines.append(f"iteration {link['iteration']}: {link['repair']} for {link['hint']} "
                     f"({link['change']}): {'resolved' if link['resolved'] else 'not resolved'}")
    return lines
