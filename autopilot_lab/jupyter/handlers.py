"""The console's REST API over the run store (read-mostly; every handler needs the server's
token or login). GET answers carry an ETag, so a poller that sends ``If-None-Match`` gets
``304`` while a run has not changed.

    GET  /autopilot/api                                 store home, benchmark folder, version
    GET  /autopilot/api/runs?status=&objective=&text=&limit=&offset=
    GET  /autopilot/api/runs/RUN                        the run, its controls, errors, LLM totals
    GET  /autopilot/api/runs/RUN/iterations             ladder, sandbox outcomes, hints+decisions
    GET  /autopilot/api/runs/RUN/iterations/N/code      files, recipe, constructor arguments
    GET  /autopilot/api/runs/RUN/diff?from=A&to=B       unified diffs and recipe changes
    GET  /autopilot/api/runs/RUN/artifacts              the recorded artifacts
    GET  /autopilot/api/runs/RUN/artifacts/PATH         one of them, as a download
    GET  /autopilot/api/runs/RUN/llm                    LLM exchanges, keys redacted
    GET  /autopilot/api/runs/RUN/events?after=SEQ       events after SEQ (live updates)
    GET|POST /autopilot/api/runs/RUN/decisions          accept/reject a hint
    POST /autopilot/api/runs/RUN/stop | /resume         the run's controls
    GET  /autopilot/api/benchmarks[/NAME]               the benchmark sweeps' results
"""

from __future__ import annotations

import difflib
import json
import mimetypes
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from autopilot_lab import __version__
from autopilot_lab.jupyter.server import API_ROOT, Console, ConsoleError
from autopilot_lab.store import STATUSES

MAX_LIMIT = 200
DECISIONS = ("accept", "reject")
SECRET_FIELDS = {"authorization", "proxy_authorization", "api_key", "apikey", "x_api_key",
                 "openai_api_key", "access_token", "refresh_token", "secret", "client_secret",
                 "password", "cookie", "set_cookie"}
SECRET_VALUE = re.compile(r"^\s*(bearer|basic)\s+\S+|\bsk-[A-Za-z0-9_-]{12,}", re.IGNORECASE)
URL_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
REDACTED = "[redacted]"
TEXT_TYPES = {".md": "text/plain", ".py": "text/plain", ".txt": "text/plain",
              ".json": "application/json", ".csv": "text/csv", ".log": "text/plain"}
BENCHMARK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# written by autopilot_lab.jupyter.runner.record_notebook (not imported: it pulls in the loop)
NOTEBOOK_ARTIFACT = "notebook.json"


class ConsoleHandler(APIHandler):
    """JSON in and out; errors are ``{"message": ...}`` with a 4xx status."""

    def initialize(self, console: Console) -> None:
        self.console = console

    def reply(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(payload, default=str))

    def int_arg(self, name: str, default: int | None = None, minimum: int = 0,
                maximum: int | None = None) -> int | None:
        text = self.get_query_argument(name, None)
        if text is None:
            return default
        return _int(name, text, minimum, maximum)

    def run(self, run_id: str) -> dict[str, Any]:
        try:
            return self.console.require_store().get_run(run_id)
        except KeyError:
            raise ConsoleError(404, f"no run {run_id!r} in {self.console.home}") from None

    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError as e:
            raise ConsoleError(400, f"the request body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise ConsoleError(400, "the request body must be a JSON object")
        return body


class InfoHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.reply({"version": __version__, "home": str(self.console.home),
                    "store": self.console.store() is not None,
                    "benchmarks_dir": str(self.console.benchmarks_dir),
                    "statuses": list(STATUSES)})


class RunsHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        status = self.get_query_argument("status", None) or None
        if status is not None and status not in STATUSES:
            raise ConsoleError(400, f"status must be one of {', '.join(STATUSES)}; got "
                                    f"{status!r}")
        limit = self.int_arg("limit", 50, 1, MAX_LIMIT)
        offset = self.int_arg("offset", 0)
        store = self.console.store()
        rows: list[dict[str, Any]] = []
        if store is not None:
            store.mark_interrupted()
            rows = store.list_runs(status=status,
                                   objective=self.get_query_argument("objective", None) or None,
                                   text=self.get_query_argument("text", None) or None,
                                   limit=limit + 1, offset=offset)
        more = len(rows) > limit
        self.reply({"runs": [run_view(self.console, r) for r in rows[:limit]],
                    "offset": offset, "limit": limit,
                    "next_offset": offset + limit if more else None,
                    "home": str(self.console.home)})


class RunHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self, run_id: str) -> None:
        run = self.run(run_id)
        store = self.console.require_store()
        spec = {k: v for k, v in run["spec"].items() if k != "source"}
        self.reply({**run_view(self.console, run), "spec": spec,
                    "llm": store.llm_totals(run_id), "errors": error_log(store, run),
                    "notebook": notebook_of(store, run), "notes": notes_view(store, run_id)})


class IterationsHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self, run_id: str) -> None:
        self.run(run_id)
        self.reply({"run_id": run_id,
                    "iterations": iterations_view(self.console.require_store(), run_id)})


class CodeHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self, run_id: str, n: str) -> None:
        self.run(run_id)
        iteration = _int("iteration", n, 1)
        self.reply({"run_id": run_id, "iteration": iteration,
                    **_candidate(self.console, run_id, iteration)})


class DiffHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self, run_id: str) -> None:
        self.run(run_id)
        a, b = self.int_arg("from", None, 1), self.int_arg("to", None, 1)
        if a is None or b is None:
            raise ConsoleError(400, "give both iterations to compare: ?from=N&to=M")
        self.reply({"run_id": run_id, "from": a, "to": b,
                    **diff_view(_candidate(self.console, run_id, a),
                                _candidate(self.console, run_id, b), a, b)})


class ArtifactsHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self, run_id: str) -> None:
        self.run(run_id)
        self.reply({"run_id": run_id,
                    "artifacts": self.console.require_store().artifacts(run_id)})


class ArtifactHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self, run_id: str, path: str) -> None:
        folder = Path(self.run(run_id)["folder"]).resolve()
        try:
            target = (folder / path).resolve()
        except (ValueError, OSError) as e:
            raise ConsoleError(400, f"bad artifact path {path!r}: {e}") from None
        if not target.is_relative_to(folder):
            raise ConsoleError(403, f"artifact path {path!r} leads outside the run folder")
        rel = target.relative_to(folder).as_posix()
        recorded = {a["path"] for a in self.console.require_store().artifacts(run_id)}
        if rel not in recorded:
            raise ConsoleError(404, f"run {run_id} has no artifact {rel!r}")
        if not target.is_file():
            raise ConsoleError(404, f"artifact {rel!r} of run {run_id} is recorded but its "
                                    "file is gone")
        kind = TEXT_TYPES.get(target.suffix.lower()) \
            or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if kind.startswith("text/"):
            kind += "; charset=utf-8"
        if "html" in kind or "svg" in kind or "xml" in kind:  # never rendered on this origin
            kind = "application/octet-stream"
        self.set_header("Content-Disposition",
                        f"attachment; filename=\"{PurePosixPath(rel).name}\"")
        self.finish(target.read_bytes(), set_content_type=kind)


class LLMHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self, run_id: str) -> None:
        self.run(run_id)
        store = self.console.require_store()
        iteration = self.int_arg("iteration", None, 1)
        self.reply({"run_id": run_id, "totals": store.llm_totals(run_id),
                    "exchanges": [redact_exchange(x)
                                  for x in store.llm_exchanges(run_id, iteration)]})


class EventsHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self, run_id: str) -> None:
        run = self.run(run_id)
        after = self.int_arg("after", 0)
        events = self.console.require_store().events(run_id, after_seq=after)
        self.reply({"run_id": run_id, "status": run["status"], "events": events,
                    "last_seq": events[-1]["seq"] if events else after})


class DecisionsHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self, run_id: str) -> None:
        self.run(run_id)
        self.reply({"run_id": run_id,
                    "decisions": self.console.require_store().decisions(run_id)})

    @tornado.web.authenticated
    def post(self, run_id: str) -> None:
        self.run(run_id)
        body = self.body()
        decision, key = body.get("decision"), body.get("hint_key")
        if decision not in DECISIONS:
            raise ConsoleError(400, f"decision must be one of {', '.join(DECISIONS)}; got "
                                    f"{decision!r}")
        store = self.console.require_store()
        iteration = body.get("iteration")
        hints = store.hints(run_id, iteration) if isinstance(iteration, int) else []
        if not hints:
            raise ConsoleError(400, f"iteration must be the number of an iteration of {run_id} "
                                    f"with hints; got {iteration!r}")
        if key not in {h["key"] for h in hints}:
            raise ConsoleError(400, f"iteration {iteration} of {run_id} has no hint with key "
                                    f"{key!r}")
        store.record_decision(run_id, iteration, key, decision)
        self.reply({"run_id": run_id, "decisions": store.decisions(run_id)}, status=201)


class StopHandler(ConsoleHandler):
    @tornado.web.authenticated
    async def post(self, run_id: str) -> None:
        self.run(run_id)
        where = await self.console.stop(run_id)
        self.reply({"run_id": run_id, "stopping": True, "where": where,
                    "note": "the run stops after its current iteration"}, status=202)


class ResumeHandler(ConsoleHandler):
    @tornado.web.authenticated
    async def post(self, run_id: str) -> None:
        self.run(run_id)
        max_iters = self.body().get("max_iters")
        if max_iters is not None and (not isinstance(max_iters, int)
                                      or isinstance(max_iters, bool) or max_iters < 1):
            raise ConsoleError(400, f"max_iters must be a positive integer; got {max_iters!r}")
        await self.console.resume(run_id, max_iters)
        self.reply({"run_id": run_id, "resumed": True, "where": "this server"}, status=202)


class BenchmarksHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        folder = self.console.benchmarks_dir
        sweeps = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                result = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                sweeps.append({"name": path.stem, "error": f"unreadable: {e}"})
                continue
            result = result if isinstance(result, dict) else {}
            sweeps.append({"name": path.stem, "finished_at": result.get("finished_at"),
                           "command": result.get("command"),
                           "machine": result.get("machine"),
                           "markdown": path.with_suffix(".md").is_file()})
        self.reply({"dir": str(folder), "sweeps": sweeps})


class BenchmarkHandler(ConsoleHandler):
    @tornado.web.authenticated
    def get(self, name: str) -> None:
        if not BENCHMARK_NAME.match(name):
            raise ConsoleError(400, f"benchmark name {name!r} must be letters, digits, '_', "
                                    "'-' or '.', not starting with '.'")
        path = self.console.benchmarks_dir / f"{name}.json"
        if not path.is_file():
            raise ConsoleError(404, f"no benchmark sweep {name!r} in "
                                    f"{self.console.benchmarks_dir}")
        try:
            result = json.loads(path.read_text())
        except ValueError as e:
            raise ConsoleError(409, f"benchmark sweep {name!r} is not valid JSON: {e}") from None
        md = path.with_suffix(".md")
        self.reply({"name": name, "result": result,
                    "markdown": md.read_text() if md.is_file() else None})


def routes(base_url: str, console: Console) -> list[tuple[str, type, dict[str, Any]]]:
    """The URL table the extension registers."""
    run = r"runs/(?P<run_id>[^/]+)"
    table = [("", InfoHandler), ("runs", RunsHandler), (run, RunHandler),
             (run + "/iterations", IterationsHandler),
             (run + r"/iterations/(?P<n>[^/]+)/code", CodeHandler),
             (run + "/diff", DiffHandler), (run + "/artifacts", ArtifactsHandler),
             (run + "/artifacts/(?P<path>.+)", ArtifactHandler), (run + "/llm", LLMHandler),
             (run + "/events", EventsHandler), (run + "/decisions", DecisionsHandler),
             (run + "/stop", StopHandler), (run + "/resume", ResumeHandler),
             ("benchmarks", BenchmarksHandler),
             ("benchmarks/(?P<name>[^/]+)", BenchmarkHandler)]
    return [(url_path_join(base_url, API_ROOT, pattern).rstrip("/") + "/?", handler,
             {"console": console}) for pattern, handler in table]


# ---- views: store rows as the panel reads them ------------------------------------------


def run_view(console: Console, run: dict[str, Any]) -> dict[str, Any]:
    """One row of the runs list."""
    spec = run["spec"]
    # the model's own name (a migration's Keras model, saved under a generated file name),
    # else its class, else the file it came from
    model = spec.get("model_name") or spec.get("entry") or (
        Path(spec["keras"]).name if spec.get("keras") else None)
    keys = ("id", "objective", "status", "agent", "iterations_done", "max_iters",
            "best_iteration", "best_score", "started_at", "finished_at", "reason", "error",
            "pid", "host")
    return {**{k: run[k] for k in keys}, "model": model, "data": spec.get("data"),
            "target": spec.get("target"),
            "duration_s": _seconds(run["started_at"], run["finished_at"]),
            "controls": console.controls(run)}


def iterations_view(store: Any, run_id: str) -> list[dict[str, Any]]:
    """Every iteration (a pending one too) with its ladder, sandbox outcomes and hints, each
    hint with the user's latest accept/reject decision."""
    verdicts, hints = defaultdict(list), defaultdict(list)
    for v in store.verdicts(run_id):
        verdicts[v["iteration"]].append(v)
    for h in store.hints(run_id):
        hints[h["iteration"]].append(h)
    decided = {d["hint_key"]: d["decision"] for d in store.decisions(run_id)
               if d["decision"] in DECISIONS}
    out = []
    for it in store.iterations(run_id, include_unfinished=True):
        card, cand = it["scorecard"], it["candidate"]
        out.append({
            "n": it["n"], "status": it["status"], "agent": it["agent"], "score": it["score"],
            "gates_passed": it["gates_passed"], "targets_met": it["targets_met"],
            "started_at": it["started_at"], "finished_at": it["finished_at"],
            "duration_s": _seconds(it["started_at"], it["finished_at"]),
            "checks": [{"check": v["check"], "tier": v["tier"], "hard": v["hard"],
                        "passed": v["passed"], "score": v["score"],
                        "seconds": v["timing"].get("seconds"),
                        "sandbox": v["evidence"].get("sandbox"), "evidence": v["evidence"],
                        "keeps": [k["what"] for k in v["keeps"]]}
                       for v in verdicts[it["n"]]],
            "skipped": list(card.skipped) if card else [],
            "hints": [{k: h[k] for k in ("key", "kind", "priority", "check", "metric",
                                         "observed", "expected", "suggestion", "where")}
                      | {"decision": decided.get(h["key"])} for h in hints[it["n"]]],
            "recipe": cand.recipe.to_dict() if cand else None,
            "notes": cand.notes if cand else {},
            "parent": cand.parent if cand else None,
        })
    return out


def notes_view(store: Any, run_id: str) -> list[dict[str, Any]]:
    """The user's free-text notes (the notebook panel's "Add hint"), oldest first."""
    return [{"iteration": d["iteration"], "text": d["text"].strip(), "at": d["at"]}
            for d in store.decisions(run_id)
            if d["decision"] == "note" and (d["text"] or "").strip()]


def notebook_of(store: Any, run: dict[str, Any]) -> str | None:
    """The path of the notebook whose kernel started (or last resumed) the run, from the
    ``notebook.json`` artifact the notebook runner records (``None`` for a run started
    elsewhere: the CLI, a script, a kernel outside Jupyter Server)."""
    if not any(a["path"] == NOTEBOOK_ARTIFACT and a["kind"] == "origin"
               for a in store.artifacts(run["id"])):
        return None
    try:
        origin = json.loads((Path(run["folder"]) / NOTEBOOK_ARTIFACT).read_text())
    except (OSError, ValueError):
        return None
    notebook = origin.get("notebook") if isinstance(origin, dict) else None
    return notebook if isinstance(notebook, str) and notebook else None


def error_log(store: Any, run: dict[str, Any]) -> list[dict[str, Any]]:
    """What went wrong: the run's own failure, sandbox outcomes that were not ``ok``, failed
    LLM requests, in that order."""
    out = []
    if run["error"]:
        out.append({"source": "run", "iteration": None, "message": run["error"]})
    for v in store.verdicts(run["id"]):
        box = v["evidence"].get("sandbox")
        if box and box.get("status") != "ok":
            error = box.get("error") or {}
            detail = ": ".join(x for x in (error.get("type"), error.get("message")) if x)
            limit = f" ({box['limit']} limit)" if box.get("limit") else ""
            out.append({"source": f"sandbox: {v['check']}", "iteration": v["iteration"],
                        "message": f"{box['status']}{limit}" + (f": {detail}" if detail else "")})
    for x in store.llm_exchanges(run["id"]):
        if x["status"] != "ok":
            out.append({"source": f"LLM {x['model']}", "iteration": x["iteration"],
                        "message": f"{x['status']}: {_redact_text(x['error'] or '')}"})
    return out


def diff_view(a: dict[str, Any], b: dict[str, Any], na: int, nb: int) -> dict[str, Any]:
    """Unified diffs of every file, and the recipe and constructor arguments that changed."""
    files = []
    for name in sorted(set(a["files"]) | set(b["files"])):
        before, after = a["files"].get(name), b["files"].get(name)
        status = ("added" if before is None else "removed" if after is None
                  else "same" if before == after else "changed")
        diff = "".join(difflib.unified_diff(
            (before or "").splitlines(True), (after or "").splitlines(True),
            fromfile=f"iteration {na}/{name}", tofile=f"iteration {nb}/{name}"))
        files.append({"name": name, "status": status, "diff": diff})
    return {"files": files, "recipe": _changes(a["recipe"], b["recipe"]),
            "init_kwargs": _changes(a["init_kwargs"], b["init_kwargs"])}


def redact_exchange(x: dict[str, Any]) -> dict[str, Any]:
    """An LLM exchange without keys: secret-named fields, bearer tokens and credentials in
    URLs are replaced, whatever the caller stored."""
    return {k: _redact(v) for k, v in x.items()}


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if _secret_name(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if isinstance(value, str):
        return _redact_text(value)
    return value


def _redact_text(text: str) -> str:
    return SECRET_VALUE.sub(REDACTED, URL_USERINFO.sub(r"\1", text))


def _secret_name(key: Any) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in SECRET_FIELDS


def _candidate(console: Console, run_id: str, n: int) -> dict[str, Any]:
    rows = [it for it in console.require_store().iterations(run_id, include_unfinished=True)
            if it["n"] == n]
    if not rows or rows[0]["candidate"] is None:
        raise ConsoleError(404, f"run {run_id} has no candidate for iteration {n}")
    c = rows[0]["candidate"]
    return {"files": dict(c.files), "main": c.main, "entry": c.entry,
            "recipe": c.recipe.to_dict(), "init_kwargs": dict(c.init_kwargs),
            "notes": dict(c.notes), "parent": c.parent}


def _changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "from": a.get(k), "to": b.get(k)} for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def _int(name: str, text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConsoleError(400, f"{name} must be an integer; got {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None \
            else f"at least {minimum}"
        raise ConsoleError(400, f"{name} must be {bounds}; got {value}")
    return value


def _seconds(start: str | None, end: str | None) -> float | None:
    """How long something took once it ended (``None`` while it goes on: a clock in the
    answer would change its ETag at every poll; the panel counts from ``started_at``)."""
    if start is None or end is None:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)
