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
    interrupted = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            from tests.console import _interrupted_run
            from autopilot_lab.store import Store
            print(_interrupted_run(Store({str(home)!r})))
        """)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
        capture_output=True, text=True).stdout.strip()
    return Seeded(finished, stopped, interrupted)


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
               skipped: tuple[str, ...], best: tuple[int, float]) -> tuple[int, float]:
    """Publish one iteration as the loop does (proposed, each check, finished); returns the
    best (iteration, score) so far."""
    from autopilot_lab.scorecard import Scorecard

    _emit(store, run_id, "iteration_started", iteration=n)
    _emit(store, run_id, "candidate_proposed", iteration=n, candidate=candidate.to_dict(),
          agent="rules")
    for v in verdicts:
        _emit(store, run_id, "check_started", iteration=n, check=v.check, tier=v.tier)
        _emit(store, run_id, "check_finished", iteration=n, verdict=v.to_dict(with_timing=True))
    card = Scorecard(tuple(verdicts), skipped)
    best = best if best[1] >= card.score else (n, card.score)
    _emit(store, run_id, "iteration_finished", iteration=n, scorecard=card.to_dict(True),
          score=card.score, best_iteration=best[0], best_score=best[1])
    return best


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
    run_id, objective = _start(store, 3)
    first = objective.initial_candidate()
    second = first.replace(recipe=first.recipe.replace(lr=0.1, epochs=400), parent=1,
                           notes={"repair": "lower_lr"})
    third = second.replace(files={"model.py": EXAMPLE.read_text().replace(
        "hidden: int = 32", "hidden: int = 64")}, recipe=second.recipe.replace(epochs=40),
        parent=2, notes={"repair": "shorter_schedule"})
    best = _iteration(store, run_id, 1, first, _verdicts("trainability", _nan_loss()),
                      ("stability", "metric"), (0, -1.0))
    best = _iteration(store, run_id, 2, second, _verdicts("metric", _timeout()), (), best)
    best = _iteration(store, run_id, 3, third, _verdicts("metric", _metric_gap()), (), best)
    hints = store.hints(run_id)
    store.record_decision(run_id, 1, hints[0]["key"], "accept")
    store.record_decision(run_id, 2, hints[1]["key"], "reject")
    _llm_exchanges(store, run_id)
    store.write_artifact(run_id, "best/model.py", third.files["model.py"], 3, "code")
    store.write_artifact(run_id, "report.md", "# Report\n\nbest: iteration 3\n", kind="report")
    store.write_artifact(run_id, "report.json", json.dumps({"best": {"iteration": 3}}),
                         kind="report")
    (store.run_folder(run_id) / "outside.txt").symlink_to("/etc/hostname")
    _emit(store, run_id, "run_finished", status="finished", reason="iteration budget of 3 spent",
          best_iteration=best[0], best_score=best[1])
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
    run_id, objective = _start(store, 3)
    first = objective.initial_candidate()
    best = _iteration(store, run_id, 1, first, _verdicts("trainability", _nan_loss()),
                      ("stability", "metric"), (0, -1.0))
    _emit(store, run_id, "run_finished", status="stopped", reason="stopped by the user",
          best_iteration=best[0], best_score=best[1])
    return run_id


def _interrupted_run(store: Any) -> str:
    """Run in a child process that exits mid-iteration: its run stays ``running``."""
    run_id, _ = _start(store, 3)
    _emit(store, run_id, "iteration_started", iteration=1)
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
