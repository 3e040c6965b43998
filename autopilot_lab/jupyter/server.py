"""The tracking console's server side: a jupyter_server extension over the run store.

It serves ``/autopilot/api/...`` (see :mod:`autopilot_lab.jupyter.handlers`) to the
"Autopilot" sidebar of JupyterLab, and owns the two controls that change a run:

- **Resume** continues a stopped, interrupted or failed run in a thread of the server process
  (candidate code still runs in the sandbox, never here); the console keeps those runs in its
  own registry, so its Stop ends them through ``Loop.stop()``.
- **Stop** of a run that goes on in a kernel of this server is sent to that kernel, where
  :func:`autopilot_lab.jupyter.runner.stop` finds it in the kernel's registry of background
  runs. A run of another process (a terminal, another server) can only be stopped there.

Settings (``--AutopilotConsole.home=...`` or a config file): ``home``, the store folder
(default ``$AUTOPILOT_HOME``, else ``<root_dir>/.autopilot``); ``benchmarks_dir``, where the
benchmark sweeps' JSON results are (default ``<root_dir>/benchmarks/results``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tornado.web import HTTPError
from traitlets import Unicode
from traitlets.config import Configurable

from autopilot_lab.store import HOME_ENV, URL_ENV, Store

API_ROOT = "autopilot/api"
RESUME_START_TIMEOUT_S = 60.0
KERNEL_REPLY_TIMEOUT_S = 10.0


class AutopilotConsole(Configurable):
    """Where the console finds the runs and the benchmark sweeps."""

    home = Unicode("", config=True, help="Folder of the run store (default: $AUTOPILOT_HOME, "
                                         "else <root_dir>/.autopilot).")
    benchmarks_dir = Unicode("", config=True, help="Folder of the benchmark sweeps' JSON "
                                                   "results (default: "
                                                   "<root_dir>/benchmarks/results).")


class ConsoleError(HTTPError):
    """A request the console cannot carry out: the HTTP status and a message that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(status, message)


@dataclass
class _ConsoleRun:
    run_id: str
    thread: threading.Thread | None = None
    loop: Any = None
    error: BaseException | None = None
    ready: threading.Event = field(default_factory=threading.Event)


class Console:
    """The store behind the API, opened on first use (a server started in a folder without
    runs creates nothing there), and the runs this server resumed."""

    def __init__(self, home: Path, benchmarks_dir: Path, kernel_manager: Any, log: Any):
        self.home, self.benchmarks_dir = home, benchmarks_dir
        self.kernel_manager, self.log = kernel_manager, log
        self._store: Store | None = None
        self._runs: dict[str, _ConsoleRun] = {}
        self._lock = threading.Lock()

    def store(self) -> Store | None:
        """The store, or ``None`` while its home holds no database yet."""
        if self._store is None:
            if not os.environ.get(URL_ENV) and not (self.home / "autopilot.db").is_file():
                return None
            self._store = Store(self.home)
        return self._store

    def require_store(self) -> Store:
        store = self.store()
        if store is None:
            raise ConsoleError(404, f"no run store in {self.home} yet; runs appear once one "
                                    "is started (autopilot improve, %%autopilot, make demo)")
        return store

    # ---- where a run goes on ----------------------------------------------------------

    def here(self, run_id: str) -> bool:
        """Whether the run goes on in a thread of this server (resumed from the console)."""
        entry = self._runs.get(run_id)
        return entry is not None and entry.thread is not None and entry.thread.is_alive()

    def kernel_for(self, run: dict[str, Any]) -> str | None:
        """The id of this server's kernel whose process runs ``run``, if any."""
        if run["host"] != socket.gethostname() or self.kernel_manager is None:
            return None
        for kernel_id in self.kernel_manager.list_kernel_ids():
            kernel = self.kernel_manager.get_kernel(kernel_id)
            if getattr(getattr(kernel, "provisioner", None), "pid", None) == run["pid"]:
                return kernel_id
        return None

    def controls(self, run: dict[str, Any]) -> dict[str, Any]:
        """Which buttons apply to a run, and why not where they do not."""
        if run["status"] == "running":
            if self.here(run["id"]):
                return {"stop": True, "resume": False, "where": "this server"}
            kernel = self.kernel_for(run)
            if kernel is not None:
                return {"stop": True, "resume": False, "where": f"kernel {kernel}"}
            return {"stop": False, "resume": False,
                    "where": f"process {run['pid']} on {run['host']}",
                    "note": "runs outside this server; stop it where it runs"}
        if run["reason"] == "targets met":
            return {"stop": False, "resume": False, "where": None,
                    "note": "targets met: nothing to resume"}
        return {"stop": False, "resume": True, "where": None}

    # ---- controls -----------------------------------------------------------------------

    async def stop(self, run_id: str) -> str:
        """Ask a running run to stop after its current iteration; returns where it runs."""
        run = self.require_store().get_run(run_id)
        entry = self._runs.get(run_id)
        if self.here(run_id) and entry is not None:
            entry.loop.stop()
            return "this server"
        if run["status"] != "running":
            raise ConsoleError(409, f"run {run_id} is not running; its status is "
                                    f"{run['status']}")
        kernel_id = self.kernel_for(run)
        if kernel_id is None:
            raise ConsoleError(409, f"run {run_id} runs in process {run['pid']} on "
                                    f"{run['host']}, which is neither this server nor one of "
                                    "its kernels; stop it there")
        await self._stop_in_kernel(kernel_id, run_id)
        return f"kernel {kernel_id}"

    async def _stop_in_kernel(self, kernel_id: str, run_id: str) -> None:
        """Run :func:`autopilot_lab.jupyter.runner.stop` in the kernel that owns the run."""
        client = self.kernel_manager.get_kernel(kernel_id).client()
        client.start_channels()
        try:
            code = (f"__import__('autopilot_lab.jupyter.runner', fromlist=['stop'])"
                    f".stop({run_id!r})")
            msg_id = client.execute(code, silent=True, store_history=False,
                                    allow_stdin=False)
            reply = await self._reply(client, msg_id)
        finally:
            client.stop_channels()
        if reply is None:
            raise ConsoleError(409, f"kernel {kernel_id} is busy; the stop of {run_id} is "
                                    "queued and happens when the kernel is idle (or stop it "
                                    "from the notebook)")
        content = reply["content"]
        if content["status"] != "ok":
            raise ConsoleError(409, f"kernel {kernel_id} refused to stop {run_id}: "
                                    f"{content.get('evalue') or content.get('ename')}")

    async def _reply(self, client: Any, msg_id: str) -> dict[str, Any] | None:
        deadline = asyncio.get_running_loop().time() + KERNEL_REPLY_TIMEOUT_S
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                msg = await client.get_shell_msg(timeout=left)
            except Exception:  # queue.Empty: no reply in time
                return None
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg
        return None

    async def resume(self, run_id: str, max_iters: int | None) -> None:
        """Continue a run in a thread of this server; returns once its loop exists."""
        store = self.require_store()
        store.mark_interrupted()
        run = store.get_run(run_id)
        with self._lock:
            if run["status"] == "running" or self.here(run_id):
                raise ConsoleError(409, f"run {run_id} is running; stop it before resuming")
            if run["reason"] == "targets met":
                raise ConsoleError(409, f"run {run_id} met its targets; nothing to resume")
            done = run["iterations_done"]
            if max_iters is not None and max_iters <= done:
                raise ConsoleError(400, f"max_iters must exceed the {done} iterations run "
                                        f"{run_id} has done, got {max_iters}")
            if max_iters is None and done >= run["max_iters"]:
                raise ConsoleError(400, f"run {run_id} spent its budget of {run['max_iters']} "
                                        f"iterations; give max_iters above {done}")
            entry = _ConsoleRun(run_id)
            entry.thread = threading.Thread(target=self._drive, args=(store, entry, max_iters),
                                            daemon=True, name=f"autopilot-console-{run_id}")
            self._runs[run_id] = entry
            entry.thread.start()
        await asyncio.to_thread(entry.ready.wait, RESUME_START_TIMEOUT_S)
        if entry.loop is None:
            why = entry.error or f"it did not start within {RESUME_START_TIMEOUT_S:.0f} s"
            raise ConsoleError(409, f"run {run_id} could not be resumed: {why}")

    def _drive(self, store: Store, entry: _ConsoleRun, max_iters: int | None) -> None:
        from autopilot_lab import api

        def attach(loop: Any) -> None:
            entry.loop = loop
            entry.ready.set()

        try:
            api.resume(entry.run_id, store=store, max_iters=max_iters, on_loop=attach)
        except BaseException as e:  # recorded as run_failed by the API once the loop exists
            entry.error = e
            self.log.warning("autopilot console: run %s ended with %r", entry.run_id, e)
        finally:
            entry.ready.set()


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the console's handlers under ``<base_url>autopilot/api/``."""
    from autopilot_lab.jupyter.handlers import routes

    settings = AutopilotConsole(parent=serverapp)
    root = Path(serverapp.root_dir).expanduser()
    home = Path(settings.home or os.environ.get(HOME_ENV) or root / ".autopilot").expanduser()
    benchmarks = Path(settings.benchmarks_dir or root / "benchmarks" / "results").expanduser()
    console = Console(home.resolve(), benchmarks.resolve(), serverapp.kernel_manager,
                      serverapp.log)
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", routes(base, console))
    serverapp.log.info("autopilot console: runs from %s at %s%s", console.home, base, API_ROOT)
