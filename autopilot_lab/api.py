"""The Python API. The CLI, the notebook magic and the console all go through here.

    >>> import autopilot_lab as ap
    >>> result = ap.improve("examples/tabular_mlp.py:TabularMLP", "sklearn:breast_cancer",
    ...                     target="roc_auc>=0.98", max_iters=5)          # doctest: +SKIP
    >>> result.best_candidate.recipe, result.report_paths["md"]           # doctest: +SKIP
    >>> ap.migrate("model.keras", "sklearn:breast_cancer")                   # doctest: +SKIP
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from autopilot_lab.agents import AGENTS, REPLAY_PREFIX, make_agent
from autopilot_lab.agents import make_agent as _make_agent
from autopilot_lab.candidate import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_ITERS,
    MAX_SEED,
    Recipe,
    check_class_weight,
)
from autopilot_lab.events import Event, EventBus, Subscriber
from autopilot_lab.journal import Iteration, Journal
from autopilot_lab.loop import DEFAULT_MAX_ITERS, Loop, RunResult
from autopilot_lab.objectives import objective_from_spec
from autopilot_lab.objectives.base import Objective
from autopilot_lab.objectives.improve import DEFAULT_TARGET, ImproveObjective
from autopilot_lab.objectives.target import check_target_text
from autopilot_lab.sandbox import Limits, Sandbox
from autopilot_lab.store import Store


class RunStateError(RuntimeError):
    """The run is not in a state that allows what was asked (resuming a running run)."""


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

    Arguments are checked before any work (``TypeError`` for a wrong type, ``ValueError``
    naming the argument and the value), the target against the task's kind before a run is
    created.
    """
    max_iters = _check_run_args(max_iters, agent)
    seed = _check_seed(seed)
    _check_target_type(target)
    recipe = _check_recipe(recipe)
    init_kwargs = _check_init_kwargs(init_kwargs)
    _check_data(data, required=True)
    _check_path_arg("datasets_dir", datasets_dir)
    objective = ImproveObjective(model, data, entry=entry, target=target, recipe=recipe,
                                 init_kwargs=init_kwargs, datasets_dir=datasets_dir, seed=seed)
    check_target_text(target, kind=objective.task.kind)
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
    max_iters = _check_run_args(max_iters, agent)
    if not isinstance(run_id, str):
        raise TypeError(f"run_id must be a run id (str), got {run_id!r}")
    _check_target_type(target)
    store = store or Store(home)
    objective = ImproveObjective.from_run(store, run_id, target=target)
    check_target_text(target, kind=objective.task.kind)
    return run(objective, agent=agent, max_iters=max_iters, store=store,
               subscribers=subscribers, limits=limits, on_loop=on_loop,
               between_iterations=between_iterations)


def migrate(keras_model: Any, data: Any = None, *, fit: dict | None = None,
            loss: str | None = None,
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
    loss : the Keras loss (e.g. ``"mean_squared_error"``) for a model compiled without one;
        by default the task's usual loss, and the run's notes say which.
    start : a candidate folder (model.py, weights.pt, recipe.json) to start from instead of
        the translator's draft, e.g. a hand migration to verify and repair.

    Returns
    -------
    RunResult; the run folder's ``best/`` holds model.py, weights.pt, recipe.json, train.py.

    Arguments are checked before TensorFlow is imported where they can be (the model path,
    ``fit``, ``start``, ``max_iters``...): ``TypeError`` for a wrong type, ``ValueError`` or
    ``FileNotFoundError`` naming the argument and the value.
    """
    from autopilot_lab.objectives.migrate import MigrateObjective

    max_iters = _check_run_args(max_iters, agent)
    seed = _check_seed(seed)
    _check_keras_model(keras_model)
    fit = _check_fit(fit)
    if start is not None:
        _check_candidate_dir("start", start)
    _check_data(data, required=False)
    _check_path_arg("datasets_dir", datasets_dir)
    objective = MigrateObjective(keras_model, data, fit=fit, start=start,
                                 datasets_dir=datasets_dir, seed=seed, loss=loss)
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
           fit: dict | None = None, loss: str | None = None,
           datasets_dir: str | None = None, seed: int = 0,
           limits: Limits | None = None, workdir: str | os.PathLike | None = None):
    """Score a candidate folder against its Keras model through the ladder, no agent.

    Returns the Scorecard; ``scorecard.all_gates_passed`` is what CI should check.
    """
    import tempfile
    from pathlib import Path

    from autopilot_lab.objectives.migrate import MigrateObjective, load_candidate_dir

    seed = _check_seed(seed)
    _check_keras_model(keras_model)
    _check_candidate_dir("candidate_dir", candidate_dir)
    fit = _check_fit(fit)
    _check_data(data, required=False)
    _check_path_arg("datasets_dir", datasets_dir)
    objective = MigrateObjective(keras_model, data, fit=fit, datasets_dir=datasets_dir,
                                 seed=seed, loss=loss)
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
    called after each scored iteration that does not end the run (a notebook's pause).
    The arguments, and a ``replay:<run>`` agent's run, are checked before the run is created."""
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective (e.g. ImproveObjective), got "
                        f"{type(objective).__name__}")
    max_iters = _check_run_args(max_iters, agent)
    store = store or Store(home)
    if agent.startswith(REPLAY_PREFIX):
        store.get_run(agent[len(REPLAY_PREFIX):])  # an unknown run fails here, not mid-run
    spec = {**objective.spec(), "agent": agent, "max_iters": max_iters}
    run_id = store.create_run(objective.name, spec, agent, max_iters)
    return _drive(store, run_id, objective, agent, max_iters, Journal(), subscribers, limits,
                  on_loop, between_iterations)


def resume(run_id: str, *, store: Store | None = None, home: str | os.PathLike | None = None,
           max_iters: int | None = None, subscribers: Iterable[Subscriber] = (),
           limits: Limits | None = None, on_loop: Callable[[Loop], None] | None = None,
           between_iterations: Callable[[Iteration], None] | None = None) -> RunResult:
    """Continue a run from its last finished iteration (after a crash, a kill or a stop).

    ``max_iters`` (default: the run's own) counts the finished iterations too, so it may not
    be below their number."""
    if not isinstance(run_id, str):
        raise TypeError(f"run_id must be a run id (str), got {run_id!r}")
    if max_iters is not None:
        max_iters = _check_int("max_iters", max_iters, 1, MAX_ITERS)
    store = store or Store(home)
    store.mark_interrupted()
    row = store.get_run(run_id)
    if row["status"] == "running":
        raise RunStateError(f"run {run_id} is still running (pid {row.get('pid')}); "
                            "stop it first or wait for it")
    journal = Journal([Iteration(i["n"], i["candidate"], i["scorecard"], i["agent"])
                       for i in store.iterations(run_id)])
    spec = row["spec"]
    if max_iters is not None and max_iters < len(journal):
        raise ValueError(f"max_iters={max_iters} is below the {len(journal)} iterations run "
                         f"{run_id} has already finished; it counts them, so give at least "
                         f"{len(journal)}")
    objective = objective_from_spec(spec)
    max_iters = max_iters if max_iters is not None else spec.get("max_iters", DEFAULT_MAX_ITERS)
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
                chosen=lambda n: store.chosen_repair(run_id, n),
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


# ---------------------------------------------------------------- argument checks


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in [low, high]; a float (even 2.0), a bool or text is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return int(value)


def _check_run_args(max_iters: Any, agent: Any) -> int:
    """The iteration budget (returned as an int) and the agent's name, before anything is
    loaded."""
    max_iters = _check_int("max_iters", max_iters, 1, MAX_ITERS)
    if not isinstance(agent, str):
        raise TypeError(f"agent must be a name (str), got {type(agent).__name__} {agent!r}")
    # a replaced agent factory (a scripted test double, a plugin) knows its own names
    own_factory = make_agent is _make_agent
    if own_factory and agent not in AGENTS and not (agent.startswith(REPLAY_PREFIX)
                                                    and len(agent) > len(REPLAY_PREFIX)):
        raise ValueError(f"unknown agent {agent!r}; use one of {', '.join(sorted(AGENTS))} "
                         f"or {REPLAY_PREFIX}<run id>")
    return max_iters


def _check_target_type(target: Any) -> None:
    """The target's type, before the task (and so the kind it is read against) is loaded."""
    if target is not None and not isinstance(target, str):
        raise TypeError(f"target must be a text such as 'roc_auc>=0.9' or 'baseline-0.02', or "
                        f"None; got {type(target).__name__} {target!r}")


def _check_seed(seed: Any) -> int:
    return _check_int("seed", seed, 0, MAX_SEED)


def _check_path_arg(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got "
                        f"{type(value).__name__} {value!r}")


def _check_data(data: Any, *, required: bool) -> None:
    """A task spec text or a Task (loading it says what is wrong with the spec)."""
    from autopilot_lab.data import Task

    if data is None and not required:
        return
    if not isinstance(data, (str, Task)):
        raise TypeError(f"data must be a task spec such as 'sklearn:iris' or 'csv:<path>', or "
                        f"a Task; got {type(data).__name__} {data!r:.80}")


def _check_recipe(recipe: Any) -> Recipe | None:
    """A Recipe, a dict of its fields (checked now) or None."""
    if recipe is None or isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Mapping):
        return Recipe.from_dict(dict(recipe))
    raise TypeError(f"recipe must be a Recipe or a dict of its fields, got "
                    f"{type(recipe).__name__} {recipe!r:.80}")


def _check_init_kwargs(init_kwargs: Any) -> dict | None:
    """Constructor arguments: a dict keyed by argument names."""
    if init_kwargs is None:
        return None
    if not isinstance(init_kwargs, Mapping):
        raise TypeError(f"init_kwargs must be a dict of constructor argument -> value, got "
                        f"{type(init_kwargs).__name__} {init_kwargs!r:.80}")
    bad = [k for k in init_kwargs if not (isinstance(k, str) and k.isidentifier())]
    if bad:
        raise ValueError(f"init_kwargs keys must be argument names, got {bad[0]!r}")
    return dict(init_kwargs)


def _check_fit(fit: Any) -> dict | None:
    """Keras ``fit()`` arguments: epochs and batch size integers in range, class weights
    finite and >= 0 (``epochs=0`` used to train one epoch and report success)."""
    if fit is None:
        return None
    if not isinstance(fit, Mapping):
        raise TypeError(f"fit must be a dict of Keras fit() arguments, got "
                        f"{type(fit).__name__} {fit!r:.80}")
    fit = dict(fit)
    if fit.get("epochs") is not None:
        fit["epochs"] = _check_int("fit['epochs']", fit["epochs"], 1, MAX_EPOCHS)
    if fit.get("batch_size") is not None:
        fit["batch_size"] = _check_int("fit['batch_size']", fit["batch_size"], 1,
                                       MAX_BATCH_SIZE)
    if fit.get("class_weight") is not None:
        fit["class_weight"] = check_class_weight(fit["class_weight"], "fit['class_weight']")
    split = fit.get("validation_split")
    if split is not None and (isinstance(split, bool) or not isinstance(split, numbers.Real)
                              or not 0 <= split < 1):
        raise ValueError(f"fit['validation_split'] must be a fraction in [0, 1), got {split!r}")
    return fit


def _check_keras_model(keras_model: Any) -> None:
    """A path is checked without TensorFlow (exists, suffix, file format); an object must at
    least look like a Keras model (it has layers)."""
    from autopilot_lab.migrate.keras_model import check_model_path

    if isinstance(keras_model, (str, os.PathLike)):
        check_model_path(keras_model)
    elif not hasattr(keras_model, "layers"):
        raise TypeError(f"keras_model must be a keras.Model or the path of a .keras/.h5 file "
                        f"or SavedModel folder, got {type(keras_model).__name__} "
                        f"{keras_model!r:.80}")


def _check_candidate_dir(name: str, folder: Any) -> None:
    """A candidate folder (what `migrate` writes to best/): model.py and weights.pt in it."""
    _check_path_arg(name, folder)
    path = Path(folder)
    if not path.exists():
        raise FileNotFoundError(f"{name} folder {path} does not exist; it must hold model.py, "
                                "weights.pt and (optionally) recipe.json")
    if not path.is_dir():
        raise NotADirectoryError(f"{name} {path} is a file, not a candidate folder with "
                                 "model.py, weights.pt and (optionally) recipe.json")
    missing = [f for f in ("model.py", "weights.pt") if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{name} folder {path} lacks {', '.join(missing)}; it needs "
                                "model.py, weights.pt and (optionally) recipe.json")
