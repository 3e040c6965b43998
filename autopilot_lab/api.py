"""The Python API. The CLI, the notebook magic and the console all go through here.

    >>> import autopilot_lab as ap
    >>> result = ap.improve("examples/tabular_mlp.py:TabularMLP", "sklearn:breast_cancer",
    ...                     target="roc_auc>=0.98", max_iters=5)          # doctest: +SKIP
    >>> result.best_candidate.recipe, result.report_paths["md"]           # doctest: +SKIP
    >>> ap.migrate("model.keras", "sklearn:breast_cancer")                   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from autopilot_lab.agents import make_agent
from autopilot_lab.candidate import Recipe
from autopilot_lab.events import Event, EventBus, Subscriber
from autopilot_lab.journal import Iteration, Journal
from autopilot_lab.loop import DEFAULT_MAX_ITERS, Loop, RunResult
from autopilot_lab.objectives import objective_from_spec
from autopilot_lab.objectives.base import Objective
from autopilot_lab.objectives.improve import DEFAULT_TARGET, ImproveObjective
from autopilot_lab.sandbox import Limits, Sandbox
from autopilot_lab.store import Store


def improve(model: Any, data: Any, *, target: str | None = DEFAULT_TARGET,
            max_iters: int = DEFAULT_MAX_ITERS, agent: str = "rules",
            recipe: Recipe | dict | None = None, entry: str | None = None,
            init_kwargs: dict | None = None, datasets_dir: str | None = None, seed: int = 0,
            store: Store | None = None, home: str | os.PathLike | None = None,
            subscribers: Iterable[Subscriber] = (), limits: Limits | None = None,
            on_loop: Callable[[Loop], None] | None = None,
            between_iterations: Callable[[Iteration], None] | None = None) -> RunResult:
    """Push a PyTorch model to a metric target on a dataset.

    Parameters
    ----------
    model : ``"path.py:Class"``, source text, or an ``nn.Module`` class or instance.
    data : a task spec (``sklearn:breast_cancer``, ``local:<name>``, ``openml:<task id>``,
        ``csv:<path>``) or a :class:`autopilot_lab.data.Task`.
    target : ``roc_auc>=0.9``, ``rmse<=3.1``, ``baseline+0.01`` ... (see docs/targets.md).
    max_iters : at most this many candidates are scored.
    recipe : the starting training recipe (optimizer, lr, epochs...).

    Returns
    -------
    RunResult with the best candidate, its scorecard, the history and the report paths.
    """
    objective = ImproveObjective(model, data, entry=entry, target=target, recipe=recipe,
                                 init_kwargs=init_kwargs, datasets_dir=datasets_dir, seed=seed)
    return run(objective, agent=agent, max_iters=max_iters, store=store, home=home,
               subscribers=subscribers, limits=limits, on_loop=on_loop,
               between_iterations=between_iterations)


def improve_from(run_id: str, *, target: str | None = DEFAULT_TARGET,
                 max_iters: int = DEFAULT_MAX_ITERS, agent: str = "rules",
                 store: Store | None = None, home: str | os.PathLike | None = None,
                 subscribers: Iterable[Subscriber] = (), limits: Limits | None = None,
                 on_loop: Callable[[Loop], None] | None = None,
                 between_iterations: Callable[[Iteration], None] | None = None) -> RunResult:
    """Improve what a finished run chose (``autopilot improve --from RUN``): candidate 0 is
    that run's best candidate as it is (model, recipe, weights), on the same data and split,
    trained as the run trained it; the new run's best is never worse on valid than it."""
    store = store or Store(home)
    objective = ImproveObjective.from_run(store, run_id, target=target)
    return run(objective, agent=agent, max_iters=max_iters, store=store,
               subscribers=subscribers, limits=limits, on_loop=on_loop,
               between_iterations=between_iterations)


def migrate(keras_model: Any, data: Any = None, *, fit: dict | None = None,
            start: str | os.PathLike | None = None, max_iters: int = DEFAULT_MAX_ITERS,
            agent: str = "rules", datasets_dir: str | None = None, seed: int = 0,
            store: Store | None = None, home: str | os.PathLike | None = None,
            subscribers: Iterable[Subscriber] = (), limits: Limits | None = None,
            on_loop: Callable[[Loop], None] | None = None,
            between_iterations: Callable[[Iteration], None] | None = None) -> RunResult:
    """Migrate a Keras model to PyTorch until it provably matches.

    Parameters
    ----------
    keras_model : a ``keras.Model``, a ``.keras``/``.h5`` file or a SavedModel folder.
    data : a task spec or Task; real rows for parity and the metric comparison. Without data
        the ladder is the parity contract on seeded random inputs.
    fit : the ``model.fit`` arguments of the Keras code (epochs, batch_size, class_weight,
        callbacks) when the compiled model does not say them.
    start : a candidate folder (model.py, weights.pt, recipe.json) to start from instead of
        the translator's draft, e.g. a hand migration to verify and repair.

    Returns
    -------
    RunResult; the run folder's ``best/`` holds model.py, weights.pt, recipe.json, train.py.
    """
    from autopilot_lab.objectives.migrate import MigrateObjective

    objective = MigrateObjective(keras_model, data, fit=fit, start=start,
                                 datasets_dir=datasets_dir, seed=seed)
    if objective.keras_path is None:
        # an in-memory model: keep a copy in the run store so the run can be resumed
        st = store or Store(home)
        saved = st.home / "models" / f"{objective.model.name}-{id(keras_model):x}.keras"
        saved.parent.mkdir(parents=True, exist_ok=True)
        objective.model.save(saved)
        objective.keras_path = str(saved)
        store = st
    return run(objective, agent=agent, max_iters=max_iters, store=store, home=home,
               subscribers=subscribers, limits=limits, on_loop=on_loop,
               between_iterations=between_iterations)


def verify(keras_model: Any, candidate_dir: str | os.PathLike, data: Any = None, *,
           fit: dict | None = None, datasets_dir: str | None = None, seed: int = 0,
           limits: Limits | None = None, workdir: str | os.PathLike | None = None):
    """Score a candidate folder against its Keras model through the ladder, no agent.

    Returns the Scorecard; ``scorecard.all_gates_passed`` is what CI should check.
    """
    import tempfile
    from pathlib import Path

    from autopilot_lab.objectives.migrate import MigrateObjective, load_candidate_dir

    objective = MigrateObjective(keras_model, data, fit=fit, datasets_dir=datasets_dir,
                                 seed=seed)
    candidate = load_candidate_dir(candidate_dir, objective.translation.class_name)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = objective.setup(Path(workdir or tmp), Sandbox(limits or Limits()))
        return objective.ladder().score(candidate, ctx)


def run(objective: Objective, *, agent: str = "rules", max_iters: int = DEFAULT_MAX_ITERS,
        store: Store | None = None, home: str | os.PathLike | None = None,
        subscribers: Iterable[Subscriber] = (), limits: Limits | None = None,
        on_loop: Callable[[Loop], None] | None = None,
        between_iterations: Callable[[Iteration], None] | None = None) -> RunResult:
    """Create a run in the store and drive the loop to its end; ``between_iterations`` is
    called after each scored iteration that does not end the run (a notebook's pause)."""
    store = store or Store(home)
    spec = {**objective.spec(), "agent": agent, "max_iters": max_iters}
    run_id = store.create_run(objective.name, spec, agent, max_iters)
    return _drive(store, run_id, objective, agent, max_iters, Journal(), subscribers, limits,
                  on_loop, between_iterations)


def resume(run_id: str, *, store: Store | None = None, home: str | os.PathLike | None = None,
           max_iters: int | None = None, subscribers: Iterable[Subscriber] = (),
           limits: Limits | None = None, on_loop: Callable[[Loop], None] | None = None,
           between_iterations: Callable[[Iteration], None] | None = None) -> RunResult:
    """Continue a run from its last finished iteration (after a crash, a kill or a stop)."""
    store = store or Store(home)
    store.mark_interrupted()
    row = store.get_run(run_id)
    if row["status"] == "running":
        raise RuntimeError(f"run {run_id} is still running (pid {row.get('pid')}); "
                           "stop it first or wait for it")
    spec = row["spec"]
    objective = objective_from_spec(spec)
    journal = Journal([Iteration(i["n"], i["candidate"], i["scorecard"], i["agent"])
                       for i in store.iterations(run_id)])
    max_iters = max_iters or spec.get("max_iters", DEFAULT_MAX_ITERS)
    return _drive(store, run_id, objective, spec.get("agent", "rules"), max_iters, journal,
                  subscribers, limits, on_loop, between_iterations)


def _drive(store: Store, run_id: str, objective: Objective, agent: str, max_iters: int,
           journal: Journal, subscribers, limits, on_loop,
           between_iterations=None) -> RunResult:
    bus = EventBus()
    bus.subscribe(store.subscriber, critical=True)
    for sub in subscribers:
        bus.subscribe(sub)
    loop = Loop(objective, make_agent(agent, store=store, run_id=run_id), run_id=run_id,
                bus=bus, workdir=store.run_folder(run_id) / "work",
                sandbox=Sandbox(limits or Limits()), max_iters=max_iters, artifacts=store,
                rejected=lambda: store.rejected_hint_keys(run_id),
                between_iterations=between_iterations)
    if on_loop:
        on_loop(loop)
    # on resume too: run_started makes this process the run's owner in the store
    bus.publish(Event("run_started", run_id, {
        "objective": objective.name, "agent": agent, "max_iters": max_iters,
        "spec": {**objective.spec(), "agent": agent, "max_iters": max_iters}}))
    try:
        return loop.run(journal)
    except BaseException as e:
        # A failure of ours (not of a candidate): record it; finished iterations stay stored.
        bus.publish(Event("run_failed", run_id, {"error": f"{type(e).__name__}: {e}"}))
        raise
