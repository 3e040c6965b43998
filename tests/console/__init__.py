"""Shared by the console tests: runs written into a store the way the loop writes them (the
same events, through the store's subscriber), a Jupyter server started on 127.0.0.1 with a
token, and a small HTTP client for its API.

The runs are seeded rather than trained because a real iteration costs several sandbox jobs
(tens of seconds on two cores); the events, rows and artifacts are the loop's own kinds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tabular_mlp.py"
ARTIFACTS = ROOT / "test-artifacts" / "console"
TOKEN = "autopilot-console-test"
DATA = "sklearn:iris"
TARGET = "balanced_accuracy>=0.99"
LEAKED_KEY = "sk-test-0123456789abcdefABCDEF"


@dataclass(frozen=True)
class Seeded:
    finished: str      # 3 iterations: NaN loss, a sandbox timeout, a metric gap; decisions
    stopped: str       # 1 iteration, stopped by the user: resumable
    interrupted: str   # left "running" by a process that is gone


def seed_runs(home: Path) -> Seeded:
    """Write three runs into the store at ``home``."""
    from autopilot_lab.store import Store

    with Store(home) as store:
        finished = _finished_run(store)
        stopped = _stopped_run(store)
    return Seeded(finished, stopped, _interrupted_in_child(home))


def _interrupted_in_child(home: Path) -> str:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            from tests.console import _interrupted_run
            from autopilot_lab.store import Store
            print(_interrupted_run(Store({str(home)!r})))
        """)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
        capture_output=True, text=True).stdout.strip()


def _objective(**recipe: Any) -> Any:
    from autopilot_lab.objectives.improve import ImproveObjective

    return ImproveObjective(EXAMPLE.read_text(), DATA, entry="TabularMLP", target=TARGET,
                            recipe={"optimizer": "sgd", "lr": 10.0, "epochs": 1, **recipe})


def _start(store: Any, max_iters: int) -> tuple[str, Any]:
    objective = _objective()
    spec = {**objective.spec(), "agent": "rules", "max_iters": max_iters}
    run_id = store.create_run("improve", spec, "rules", max_iters)
    _emit(store, run_id, "run_started", objective="improve", agent="rules",
          max_iters=max_iters, spec=spec)
    return run_id, objective


def _emit(store: Any, run_id: str, type_: str, **data: Any) -> None:
    from autopilot_lab.events import Event

    store.subscriber(Event(type_, run_id, data))


def _iteration(store: Any, run_id: str, n: int, candidate: Any, verdicts: list[Any],
               skipped: tuple[str, ...], journal: Any,
               scored: Callable[[], None] | None = None) -> None:
    """Publish one iteration as the loop does (proposed, each check, finished), its best so
    far chosen by the loop's own journal (``journal.rank``: a tie goes to more checks passed,
    then to the later iteration). ``scored`` is called before the iteration finishes."""
    from autopilot_lab.journal import Iteration
    from autopilot_lab.scorecard import Scorecard

    _emit(store, run_id, "iteration_started", iteration=n)
    _emit(store, run_id, "candidate_proposed", iteration=n, candidate=candidate.to_dict(),
          agent="rules")
    for v in verdicts:
        _emit(store, run_id, "check_started", iteration=n, check=v.check, tier=v.tier)
        _emit(store, run_id, "check_finished", iteration=n, verdict=v.to_dict(with_timing=True))
    card = Scorecard(tuple(verdicts), skipped)
    journal.add(Iteration(n, candidate, card, "rules"))
    if scored is not None:
        scored()
    _emit(store, run_id, "iteration_finished", iteration=n, scorecard=card.to_dict(True),
          score=card.score, best_iteration=journal.best.n, best_score=journal.best.score)


def _finish(store: Any, run_id: str, journal: Any, reason: str, status: str = "finished"
            ) -> None:
    best = journal.best
    _emit(store, run_id, "run_finished", status=status, reason=reason,
          best_iteration=best.n if best else None, best_score=best.score if best else None)


def _verdicts(upto: str, metric: Any = None) -> list[Any]:
    """Passing verdicts of the gates before ``upto``, then ``upto``'s own (given)."""
    from autopilot_lab.hints import Keep
    from autopilot_lab.scorecard import Verdict

    gates = [("static", 0), ("build", 1), ("trainability", 3), ("stability", 4)]
    out = []
    for name, tier in gates:
        if name == upto:
            break
        out.append(Verdict(name, tier, True, True, 1.0,
                           keeps=(Keep(name, f"{name} passes"),), timing={"seconds": 0.4}))
    return out + ([metric] if metric is not None else [])


def _nan_loss() -> Any:
    from autopilot_lab.hints import Hint, HintKind
    from autopilot_lab.scorecard import Verdict

    hint = Hint(HintKind.NAN_LOSS, "trainability", "loss", "inf at step 3",
                "finite", "lower the learning rate (10 is far too high for SGD)",
                where="recipe.lr")
    return Verdict("trainability", 3, True, False, 0.0, hints=(hint,),
                   evidence={"loss": [1.1, 40.2, None], "nan_step": 3},
                   timing={"seconds": 1.3})


def _timeout() -> Any:
    from autopilot_lab.hints import Hint, HintKind
    from autopilot_lab.scorecard import Verdict

    hint = Hint(HintKind.RESOURCE_LIMIT, "metric", "sandbox wall limit", "timeout after 120 s",
                "within the wall limit", "make the model cheaper, lower epochs",
                where="model.py")
    box = {"status": "timeout", "limit": "wall", "exit_code": None, "signal": 9}
    return Verdict("metric", 5, False, False, 0.0, hints=(hint,),
                   evidence={"sandbox": box, "target_met": False},
                   timing={"seconds": 120.2, "sandbox_wall_s": 120.1})


def _metric_gap() -> Any:
    from autopilot_lab.hints import Hint, HintKind
    from autopilot_lab.scorecard import Verdict

    hint = Hint(HintKind.METRIC_GAP, "metric", "valid balanced_accuracy", 0.9333, ">= 0.99",
                "train longer (more epochs) or widen the model", where="recipe")
    return Verdict("metric", 5, False, True, 0.9333, hints=(hint,),
                   evidence={"metrics": {"balanced_accuracy": 0.9333}, "target_met": False},
                   timing={"seconds": 3.1})


def _finished_run(store: Any) -> str:
    from autopilot_lab.journal import Journal

    run_id, objective = _start(store, 3)
    first = objective.initial_candidate()
    second = first.replace(recipe=first.recipe.replace(lr=0.1, epochs=400), parent=1,
                           notes={"repair": "lower_lr"})
    third = second.replace(files={"model.py": EXAMPLE.read_text().replace(
        "hidden: int = 32", "hidden: int = 64")}, recipe=second.recipe.replace(epochs=40),
        parent=2, notes={"repair": "shorter_schedule"})
    journal = Journal()
    _iteration(store, run_id, 1, first, _verdicts("trainability", _nan_loss()),
               ("stability", "metric"), journal)
    _iteration(store, run_id, 2, second, _verdicts("metric", _timeout()), (), journal)
    _iteration(store, run_id, 3, third, _verdicts("metric", _metric_gap()), (), journal)
    hints = store.hints(run_id)
    store.record_decision(run_id, 1, hints[0]["key"], "accept")
    store.record_decision(run_id, 2, hints[1]["key"], "reject")
    _llm_exchanges(store, run_id)
    store.write_artifact(run_id, "best/model.py", third.files["model.py"], 3, "code")
    store.write_artifact(run_id, "report.md", "# Report\n\nbest: iteration 3\n", kind="report")
    store.write_artifact(run_id, "report.json", json.dumps({"best": {"iteration": 3}}),
                         kind="report")
    (store.run_folder(run_id) / "outside.txt").symlink_to("/etc/hostname")
    _finish(store, run_id, journal, "iteration budget of 3 spent")
    return run_id


def _llm_exchanges(store: Any, run_id: str) -> None:
    """One answered request and one refused one; both carry a key where none belongs, so
    the tests can see the console redact it."""
    request = {"url": "https://llm.example/v1/chat/completions",
               "headers": {"Authorization": f"Bearer {LEAKED_KEY}"},
               "body": {"model": "tiny", "messages": [{"role": "user", "content": "fix it"}],
                        "max_tokens": 256},
               "settings": {"api_key": LEAKED_KEY, "timeout": 30}}
    store.record_llm_exchange(run_id, 2, agent="llm", model="tiny",
                              base_url=f"https://user:{LEAKED_KEY}@llm.example/v1",
                              request=request, response={"choices": [{"text": "lr=0.1"}]},
                              status="ok", prompt_tokens=120, completion_tokens=30,
                              latency_s=0.8)
    store.record_llm_exchange(run_id, 2, agent="llm", model="tiny",
                              base_url="https://llm.example/v1", request=request, response=None,
                              status="auth", error=f"401: invalid key {LEAKED_KEY}")


def _stopped_run(store: Any) -> str:
    from autopilot_lab.journal import Journal

    run_id, objective = _start(store, 3)
    journal = Journal()
    _iteration(store, run_id, 1, objective.initial_candidate(),
               _verdicts("trainability", _nan_loss()), ("stability", "metric"), journal)
    _finish(store, run_id, journal, "stopped by the user", status="stopped")
    return run_id


def _interrupted_run(store: Any) -> str:
    """Run in a child process that exits mid-iteration: its run stays ``running``."""
    run_id, _ = _start(store, 3)
    _emit(store, run_id, "iteration_started", iteration=1)
    return run_id


# ---- first use: the runs behind "First use without a stumble" ------------------------------

NO_PROPOSAL = "the agent has no further proposal: no repair left for METRIC_GAP"
# a hint value with no break opportunity at all (a digest, a long tensor repr)
LONG_VALUE = "".join(f"{i:03x}" for i in range(100))
NOTEBOOK_PATH = "/srv/notebooks/experiments/breast cancer migration.ipynb"
NOTES = ("try a wider hidden layer before touching the learning rate",
         "keep the batch size at 32: it matches the Keras run")
RUN_SECONDS = 119.6  # shows as "2 min 0 s" (it read "1 min 60 s")
ITERATION_SECONDS = (59.96, 59.3)  # "1 min 0 s" and "59.3 s"


@dataclass(frozen=True)
class FirstUse:
    ghost: str      # 2 iterations; in the 3rd the agent had no proposal (no candidate)
    tie: str        # 4 iterations of one score: journal.rank picks the 3rd
    timed: str      # lasted RUN_SECONDS; its iterations ITERATION_SECONDS
    long_hint: str  # a hint whose observed value is LONG_VALUE
    notebook: str   # started in the notebook NOTEBOOK_PATH, with the user's NOTES
    interrupted: str  # its process died in iteration 1, before a candidate


def seed_first_use(home: Path) -> FirstUse:
    """Write the first-use runs into the store at ``home``."""
    from autopilot_lab.store import Store

    with Store(home) as store:
        runs = (_ghost_run(store), _tie_run(store), _timed_run(store), _long_hint_run(store),
                _notebook_run(store))
    return FirstUse(*runs, _interrupted_in_child(home))


def _model(hidden: int) -> str:
    return EXAMPLE.read_text().replace("hidden: int = 32", f"hidden: int = {hidden}")


def _ghost_run(store: Any) -> str:
    """As the loop writes it when the agent raises NoProposal: iteration 3 started, never got
    a candidate, and the run finished (the store drops such an iteration at the run's end)."""
    from autopilot_lab.journal import Journal

    run_id, objective = _start(store, 5)
    journal = Journal()
    first = objective.initial_candidate()
    second = first.replace(files={"model.py": _model(64)}, parent=1,
                           notes={"repair": "widen"})
    _iteration(store, run_id, 1, first, _verdicts("metric", _metric_gap()), (), journal)
    _iteration(store, run_id, 2, second, _verdicts("metric", _metric_gap()), (), journal)
    _emit(store, run_id, "iteration_started", iteration=3)
    _finish(store, run_id, journal, NO_PROPOSAL)
    return run_id


def _soft_metric(passed: bool, train: float) -> Any:
    """The scored check at one quality (0.9333) whether it passed or not: a tie in score."""
    from autopilot_lab.hints import Hint, HintKind
    from autopilot_lab.scorecard import Verdict

    hint = Hint(HintKind.OVERFITTING, "metric", "train vs valid balanced_accuracy",
                f"{train} vs 0.9333", "quality gap <= 0.05",
                "add weight decay or dropout, or stop early on the validation loss",
                where="recipe.weight_decay") if passed else \
        Hint(HintKind.METRIC_GAP, "metric", "valid balanced_accuracy", 0.9333, ">= 0.99",
             f"short by 0.0567: train longer (was {train})", where="recipe")
    return Verdict("metric", 5, False, passed, 0.9333, hints=(hint,),
                   evidence={"metrics": {"balanced_accuracy": 0.9333}, "target_met": False},
                   timing={"seconds": 3.0})


def _tie_run(store: Any) -> str:
    """Four candidates of one score, 4.9333: the 1st and 4th failed the scored check, the 2nd
    and 3rd passed it. journal.rank picks the 3rd (more checks passed, then the later one);
    the earliest of the tie (1), the latest (4) and the first to pass most (2) would not."""
    from autopilot_lab.journal import Journal

    run_id, objective = _start(store, 4)
    journal = Journal()
    first = objective.initial_candidate()
    for n, (hidden, passed, train) in enumerate(
            [(32, False, 0.95), (48, True, 0.991), (64, True, 0.992), (96, False, 0.96)], 1):
        candidate = first if n == 1 else first.replace(files={"model.py": _model(hidden)},
                                                       parent=n - 1)
        _iteration(store, run_id, n, candidate, _verdicts("metric", _soft_metric(passed, train)),
                   (), journal)
    _finish(store, run_id, journal, "iteration budget of 4 spent")
    return run_id


def _timed_run(store: Any) -> str:
    """A run that lasted RUN_SECONDS, its iterations ITERATION_SECONDS: the store stamps each
    event with its clock, which is set here to the moments of such a run."""
    from datetime import datetime, timedelta, timezone
    from unittest import mock

    from autopilot_lab.journal import Journal

    t0 = datetime.now(timezone.utc) - timedelta(hours=2)
    clock = {"s": 0.0}

    def at(seconds: float) -> None:
        clock["s"] = seconds

    with mock.patch("autopilot_lab.store._utcnow",
                    lambda: t0 + timedelta(seconds=clock["s"])):
        run_id, objective = _start(store, 2)
        journal = Journal()
        first = objective.initial_candidate()
        second = first.replace(recipe=first.recipe.replace(epochs=40), parent=1)
        one, two = ITERATION_SECONDS
        at(0.2)
        _iteration(store, run_id, 1, first, _verdicts("metric", _metric_gap()), (), journal,
                   scored=lambda: at(0.2 + one))
        at(0.3 + one)
        _iteration(store, run_id, 2, second, _verdicts("metric", _metric_gap()), (), journal,
                   scored=lambda: at(0.3 + one + two))
        at(RUN_SECONDS)
        _finish(store, run_id, journal, "iteration budget of 2 spent")
    return run_id


def _long_hint_run(store: Any) -> str:
    """One iteration whose stability check reports a value 300 characters long, unbroken."""
    from autopilot_lab.hints import Hint, HintKind
    from autopilot_lab.journal import Journal
    from autopilot_lab.scorecard import Verdict

    run_id, objective = _start(store, 1)
    journal = Journal()
    hint = Hint(HintKind.NONDETERMINISM, "stability", "output digest of the same batch twice",
                LONG_VALUE, "identical digests", "seed every random draw in forward()",
                where="model.py:TabularMLP.forward")
    stability = Verdict("stability", 4, True, False, 0.0, hints=(hint,),
                        evidence={"digests": [LONG_VALUE]}, timing={"seconds": 0.9})
    _iteration(store, run_id, 1, objective.initial_candidate(),
               _verdicts("stability", stability), ("metric",), journal)
    _finish(store, run_id, journal, "iteration budget of 1 spent")
    return run_id


def _notebook_run(store: Any) -> str:
    """A run as the notebook runner starts it in a kernel of Jupyter Server (which sets
    JPY_SESSION_NAME to the notebook's path), with two notes added through the run's
    controls (the panel's "Add hint" calls ``NotebookRun.note``)."""
    from unittest import mock

    from autopilot_lab.journal import Journal
    from autopilot_lab.jupyter import runner

    run_id, objective = _start(store, 3)
    with mock.patch.dict(os.environ, {runner.NOTEBOOK_ENV: NOTEBOOK_PATH}):
        assert runner.record_notebook(store, run_id) == NOTEBOOK_PATH
    journal = Journal()
    _iteration(store, run_id, 1, objective.initial_candidate(),
               _verdicts("metric", _metric_gap()), (), journal)
    controls = runner.NotebookRun("improve", store, run_id=run_id)
    for note in NOTES:
        controls.note(1, note)
    _finish(store, run_id, journal, "stopped by the user", status="stopped")
    return run_id


# ---- a Jupyter server and its API -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m <app>`` on 127.0.0.1 with a token, its store home at ``home``."""

    def __init__(self, app: str, tmp: Path, home: Path, root: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = home
        self.log_path = tmp / f"{app}.log"
        self.runtime = tmp / "runtime"
        settings = tmp / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        config = tmp / "config"  # enabled here too, so a stale install cannot hide it
        config.mkdir(exist_ok=True)
        (config / "jupyter_server_config.json").write_text(json.dumps(
            {"ServerApp": {"jpserver_extensions": {"autopilot_lab.jupyter": True}}}))
        env = {**os.environ, "AUTOPILOT_HOME": str(home), "PYTHONPATH": str(ROOT),
               "JUPYTERLAB_SETTINGS_DIR": str(tmp / "lab-settings"),
               "JUPYTER_CONFIG_DIR": str(tmp / "config"),
               "JUPYTER_RUNTIME_DIR": str(self.runtime)}
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", app, "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
             "--allow-root", f"--IdentityProvider.token={TOKEN}",
             f"--ServerApp.root_dir={root}", *extra],
            env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status, _, _ = self.call("GET", "/autopilot/api")
            if status == 200:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the server did not serve /autopilot/api (last status "
                                   f"{status}):\n{self.log_path.read_text()}")
            time.sleep(0.5)

    def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """One request; returns (status, headers, parsed JSON or raw bytes)."""
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=dict(headers or {}))
        if token:
            request.add_header("Authorization", f"token {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                status, head, raw = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            status, head, raw = e.code, dict(e.headers), e.read()
        except OSError:
            return 0, {}, None
        if "json" in head.get("Content-Type", "") and raw:
            return status, head, json.loads(raw)
        return status, head, raw

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
