"""The store of every run, written as it happens: one database plus one folder per run.

The loop never writes here directly: :meth:`Store.subscriber` is subscribed to the
:class:`~autopilot_lab.events.EventBus` as a critical subscriber, and each event is committed in
its own transaction before ``publish`` returns, so a run killed at any moment leaves every
event it published on record. Readers (a console, the CLI, a notebook) may run in other
processes at the same time.

SQLite in WAL mode is the default; any SQLAlchemy URL works (e.g. a team PostgreSQL server),
since everything goes through SQLAlchemy Core and only the pragmas are SQLite-specific.

Layout of a home folder::

    <home>/autopilot.db          the database (unless a URL says otherwise)
    <home>/runs/<run id>/        artifacts of one run; candidate files in iter_<n>/
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    make_url,
    or_,
    select,
    update,
)
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from autopilot_lab.candidate import Candidate
from autopilot_lab.events import Event
from autopilot_lab.scorecard import Scorecard, Verdict

STATUSES = ("running", "finished", "stopped", "failed", "interrupted")
DECISIONS = ("accept", "reject", "note", "choose")  # choose: a repair for the next iteration
CHOSEN_PREFIX = "repair:"  # the hint_key of a "choose" decision: repair:<playbook name>
HOME_ENV = "AUTOPILOT_HOME"
URL_ENV = "AUTOPILOT_DB_URL"
BUSY_TIMEOUT_S = 30.0
_HOST = socket.gethostname()

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("id", String(40), primary_key=True),
    Column("objective", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("spec", Text, nullable=False),
    Column("agent", String(200), nullable=False),
    Column("max_iters", Integer, nullable=False),
    Column("best_iteration", Integer),
    Column("best_score", Float),
    Column("started_at", String(40), nullable=False),
    Column("finished_at", String(40)),
    Column("reason", Text),
    Column("error", Text),
    Column("pid", Integer),
    Column("host", String(255)),
    Column("folder", Text, nullable=False),
    Index("ix_runs_started_at", "started_at"),
    Index("ix_runs_status", "status"),
)

iterations = Table(
    "iterations", metadata,
    Column("run_id", ForeignKey("runs.id"), primary_key=True),
    Column("n", Integer, primary_key=True),
    Column("status", String(16), nullable=False),  # pending | finished
    Column("agent", String(200)),
    Column("candidate", Text),
    Column("digest", String(64)),
    Column("score", Float),
    Column("gates_passed", Integer),
    Column("targets_met", Boolean),
    Column("scorecard", Text),
    Column("started_at", String(40), nullable=False),
    Column("finished_at", String(40)),
)

verdicts = Table(
    "verdicts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(40), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("check", String(100), nullable=False),
    Column("tier", Integer, nullable=False),
    Column("hard", Boolean, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("score", Float, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("keeps", Text, nullable=False),
    Column("timing", Text, nullable=False),
    ForeignKeyConstraint(["run_id", "iteration"], ["iterations.run_id", "iterations.n"]),
    UniqueConstraint("run_id", "iteration", "check"),
)

hints = Table(
    "hints", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(40), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("check", String(100), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("priority", String(4), nullable=False),
    Column("metric", String(200), nullable=False),
    Column("observed", Text, nullable=False),
    Column("expected", Text, nullable=False),
    Column("suggestion", Text, nullable=False),
    Column("where", Text, nullable=False),
    Column("key", Text, nullable=False),
    ForeignKeyConstraint(["run_id", "iteration"], ["iterations.run_id", "iterations.n"]),
    Index("ix_hints_run_iteration", "run_id", "iteration"),
)

decisions = Table(
    "decisions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", ForeignKey("runs.id"), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("hint_key", Text, nullable=False),
    Column("decision", String(8), nullable=False),
    Column("text", Text, nullable=False),
    Column("at", String(40), nullable=False),
    Index("ix_decisions_run", "run_id"),
)

artifacts = Table(
    "artifacts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", ForeignKey("runs.id"), nullable=False),
    Column("iteration", Integer),
    Column("name", Text, nullable=False),
    Column("path", Text, nullable=False),  # relative to the run folder, '/'-separated
    Column("kind", String(40), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("at", String(40), nullable=False),
    UniqueConstraint("run_id", "path"),
)

events = Table(
    "events", metadata,
    Column("run_id", ForeignKey("runs.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("type", String(32), nullable=False),
    Column("data", Text, nullable=False),
    Column("at", String(40), nullable=False),
)


llm_exchanges = Table(
    "llm_exchanges", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", ForeignKey("runs.id"), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("seq", Integer, nullable=False),  # order of the attempts within the iteration
    Column("agent", String(200), nullable=False),
    Column("model", String(200), nullable=False),
    Column("base_url", Text, nullable=False),
    Column("request", Text, nullable=False),  # url, body, client settings: never the key
    Column("response", Text),
    Column("status", String(32), nullable=False),  # "ok" or the error kind
    Column("error", Text),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("cost_usd", Float),
    Column("latency_s", Float),
    Column("at", String(40), nullable=False),
    UniqueConstraint("run_id", "iteration", "seq"),
)


class StoreError(RuntimeError):
    """The run store cannot be opened where it was asked to be (a folder that is a file or
    read-only, a bad database URL, a database that is not one): the message says where, which
    setting chose it and what to do."""


class UnknownRunError(KeyError):
    """No run with the given id in the store. A KeyError, as before; its text is the message
    (not its ``repr``, as KeyError's would be)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Store:
    """Runs, iterations, verdicts, hints, decisions, artifacts and events of every run.

    ``home``: argument, else ``$AUTOPILOT_HOME``, else ``./.autopilot``. Database:
    ``url`` argument, else ``$AUTOPILOT_DB_URL``, else SQLite at ``<home>/autopilot.db``.
    Safe to share between threads; writes are serialised by a lock (and, between processes,
    by SQLite's write lock), reads run concurrently.
    """

    def __init__(self, home: str | os.PathLike | None = None, url: str | None = None) -> None:
        """Open (creating when new) the store; what cannot be opened raises ``StoreError``
        naming the folder or database, the setting that chose it and what to do."""
        home_from = ("the home argument (--home)" if home is not None else
                     f"${HOME_ENV}" if os.environ.get(HOME_ENV) else "the default home")
        home = home if home is not None else os.environ.get(HOME_ENV) or ".autopilot"
        self.home = Path(home).expanduser().resolve()
        try:
            (self.home / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot use {self.home} (from {home_from}) as the run store's "
                             f"folder: {_folder_problem(self.home, e)}; point --home or "
                             f"${HOME_ENV} at a writable folder") from None
        url_from = ("the url argument" if url else
                    f"${URL_ENV}" if os.environ.get(URL_ENV) else None)
        self.url = url or os.environ.get(URL_ENV) or f"sqlite:///{self.home / 'autopilot.db'}"
        try:
            parsed = make_url(self.url)
        except (ArgumentError, ValueError) as e:
            raise StoreError(f"{url_from or 'the database URL'} {_redact(self.url)!r} is not a "
                             f"database URL ({e}); expected e.g. sqlite:////path/to/autopilot.db "
                             "or postgresql://user@host/db") from None
        self._where = parsed.render_as_string(hide_password=True)
        where = self._where + (f" (from {url_from})" if url_from else "")
        self._sqlite = parsed.get_backend_name() == "sqlite"
        try:
            if self._sqlite:
                if parsed.database in (None, "", ":memory:"):
                    raise ValueError(f"{self.url!r} is an in-memory SQLite database, which "
                                     "readers in other threads or processes cannot see; give a "
                                     "file path")
                folder = Path(parsed.database).expanduser().parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise StoreError(f"cannot create the folder of the database {where}: "
                                     f"{_folder_problem(folder, e)}") from None
                self.engine = create_engine(parsed, connect_args={"check_same_thread": False,
                                                                  "timeout": BUSY_TIMEOUT_S})
                event.listen(self.engine, "connect", _sqlite_connect)
                event.listen(self.engine, "begin", _sqlite_begin)
            else:
                self.engine = create_engine(parsed, pool_pre_ping=True)
        except (ImportError, NoSuchModuleError) as e:
            raise StoreError(f"no database driver for {where}: {e}; install the driver the URL "
                             "names or use a sqlite:/// URL") from None
        self._lock = threading.RLock()
        try:
            with self._writing() as conn:
                metadata.create_all(conn)
        except (DBAPIError, OSError) as e:
            self.engine.dispose()
            raise StoreError(f"cannot open the run store's database {where}: "
                             f"{_database_problem(e, self._sqlite)}") from None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections (on SQLite the last one to close checkpoints the WAL)."""
        self.engine.dispose()

    # ---- runs ---------------------------------------------------------------------------

    def create_run(self, objective: str, spec: dict, agent: str, max_iters: int) -> str:
        """Insert a ``running`` run owned by this process, make its folder, return its id.

        Ids read ``r-<UTC date>-<UTC time>-<4 hex>`` so that they sort by start time.
        """
        spec_json = _dumps(spec)
        now = _utcnow()
        with self._writing() as conn:
            while True:
                run_id = f"r-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
                folder = self.home / "runs" / run_id
                taken = conn.scalar(select(runs.c.id).where(runs.c.id == run_id))
                if taken is None and not folder.exists():
                    break
            folder.mkdir(parents=True)
            conn.execute(insert(runs).values(
                id=run_id, objective=objective, status="running", spec=spec_json, agent=agent,
                max_iters=max_iters, started_at=_iso(now), pid=os.getpid(), host=_HOST,
                folder=str(folder)))
        return run_id

    def run_folder(self, run_id: str) -> Path:
        """Where the run's artifacts live (as recorded when the run was created)."""
        return Path(self.get_run(run_id)["folder"])

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run's row with ``spec`` parsed and ``iterations_done`` counted."""
        rows = self._read(_runs_query().where(runs.c.id == run_id))
        if not rows:
            raise UnknownRunError(self._no_run(run_id))
        return _run_dict(rows[0])

    def list_runs(self, status: str | None = None, objective: str | None = None,
                  text: str | None = None, limit: int = 50, offset: int = 0
                  ) -> list[dict[str, Any]]:
        """Runs newest first; ``text`` is a case-insensitive substring of the id, objective,
        agent, spec, reason or error."""
        query = _runs_query()
        if status is not None:
            _check_one_of("status", status, STATUSES)
            query = query.where(runs.c.status == status)
        if objective is not None:
            query = query.where(runs.c.objective == objective)
        if text:
            query = query.where(or_(*(c.icontains(text, autoescape=True) for c in (
                runs.c.id, runs.c.objective, runs.c.agent, runs.c.spec, runs.c.reason,
                runs.c.error))))
        query = query.order_by(runs.c.started_at.desc(), runs.c.id.desc())
        return [_run_dict(r) for r in self._read(query.limit(limit).offset(offset))]

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        """Set the status; any status but ``running`` also stamps ``finished_at``."""
        _check_one_of("status", status, STATUSES)
        finished_at = None if status == "running" else _iso(_utcnow())
        with self._writing() as conn:
            self._require_run(conn, run_id)
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                status=status, error=error, finished_at=finished_at))

    def mark_interrupted(self) -> list[str]:
        """Mark ``interrupted`` the runs of this host left ``running`` by a process that is
        gone (killed, crashed, machine rebooted); return their ids."""
        now = _iso(_utcnow())
        gone: list[str] = []
        with self._writing() as conn:
            rows = conn.execute(select(runs.c.id, runs.c.pid).where(
                runs.c.status == "running", runs.c.host == _HOST, runs.c.pid.is_not(None)))
            for run_id, pid in rows.all():
                if _pid_alive(pid):
                    continue
                conn.execute(update(runs).where(runs.c.id == run_id).values(
                    status="interrupted", finished_at=now,
                    error=f"process {pid} ended while the run was running"))
                gone.append(run_id)
        return gone

    # ---- the event subscriber -----------------------------------------------------------

    def subscriber(self, event: Event) -> None:
        """Record one bus event (subscribe with ``critical=True``): its rows and its line in
        ``events`` are committed together, in one transaction, before this returns."""
        handler = getattr(self, f"_on_{event.type}", None)
        now = _iso(_utcnow())
        with self._writing() as conn:
            run = self._require_run(conn, event.run_id)
            if handler is not None:
                handler(conn, run, event.data, now)
            seq = conn.scalar(select(func.coalesce(func.max(events.c.seq), 0))
                              .where(events.c.run_id == event.run_id)) + 1
            conn.execute(insert(events).values(run_id=event.run_id, seq=seq, type=event.type,
                                               data=_dumps(event.data), at=now))

    def _on_run_started(self, conn: Connection, run: Row, data: dict, now: str) -> None:
        values: dict[str, Any] = {k: data[k] for k in ("objective", "agent", "max_iters")
                                  if k in data}
        if "spec" in data:
            values["spec"] = _dumps(data["spec"])
        conn.execute(update(runs).where(runs.c.id == run.id).values(
            status="running", pid=os.getpid(), host=_HOST, finished_at=None, reason=None,
            error=None, **values))

    def _on_iteration_started(self, conn: Connection, run: Row, data: dict, now: str) -> None:
        n = data["iteration"]
        if self._open_iteration(conn, run.id, n, now) == "new":
            return
        # A pending iteration started again (a resumed run redoes it): drop what it left.
        for (path,) in conn.execute(select(artifacts.c.path).where(
                artifacts.c.run_id == run.id, artifacts.c.iteration == n)):
            (Path(run.folder) / path).unlink(missing_ok=True)
        for table in (hints, verdicts, llm_exchanges):
            conn.execute(delete(table).where(table.c.run_id == run.id, table.c.iteration == n))
        conn.execute(delete(artifacts).where(artifacts.c.run_id == run.id,
                                             artifacts.c.iteration == n))
        conn.execute(update(iterations).where(iterations.c.run_id == run.id,
                                              iterations.c.n == n).values(
            agent=None, candidate=None, digest=None, started_at=now))

    def _on_candidate_proposed(self, conn: Connection, run: Row, data: dict, now: str) -> None:
        n = data["iteration"]
        self._open_iteration(conn, run.id, n, now)
        candidate = Candidate.from_dict(data["candidate"])
        for filename, source in candidate.files.items():
            self._put_artifact(conn, run, f"iter_{n}/{filename}", source, n, "candidate", now)
        conn.execute(update(iterations).where(iterations.c.run_id == run.id,
                                              iterations.c.n == n).values(
            agent=data.get("agent"), candidate=_dumps(candidate.to_dict()),
            digest=candidate.digest()))

    def _on_check_finished(self, conn: Connection, run: Row, data: dict, now: str) -> None:
        n = data["iteration"]
        self._open_iteration(conn, run.id, n, now)
        v = Verdict.from_dict(data["verdict"])
        for table in (hints, verdicts):  # a check reported twice keeps its latest verdict
            conn.execute(delete(table).where(table.c.run_id == run.id, table.c.iteration == n,
                                             table.c.check == v.check))
        conn.execute(insert(verdicts).values(
            run_id=run.id, iteration=n, check=v.check, tier=v.tier, hard=v.hard,
            passed=v.passed, score=v.score, evidence=_dumps(v.evidence),
            keeps=_dumps([k.to_dict() for k in v.keeps]), timing=_dumps(v.timing)))
        if v.hints:
            conn.execute(insert(hints), [{
                "run_id": run.id, "iteration": n, "check": h.check, "kind": h.kind.name,
                "priority": h.priority.name, "metric": h.metric,
                "observed": _dumps(h.observed), "expected": _dumps(h.expected),
                "suggestion": h.suggestion, "where": h.where, "key": h.key,
            } for h in v.hints])

    def _on_iteration_finished(self, conn: Connection, run: Row, data: dict, now: str) -> None:
        n = data["iteration"]
        self._open_iteration(conn, run.id, n, now)
        scorecard = Scorecard.from_dict(data["scorecard"])
        conn.execute(update(iterations).where(iterations.c.run_id == run.id,
                                              iterations.c.n == n).values(
            status="finished", score=data["score"], gates_passed=scorecard.gates_passed,
            targets_met=scorecard.targets_met, scorecard=_dumps(data["scorecard"]),
            finished_at=now))
        conn.execute(update(runs).where(runs.c.id == run.id).values(
            best_iteration=data["best_iteration"], best_score=data["best_score"]))

    def _on_run_finished(self, conn: Connection, run: Row, data: dict, now: str) -> None:
        _check_one_of("run_finished status", data["status"], ("finished", "stopped"))
        values: dict[str, Any] = {k: data[k] for k in ("best_iteration", "best_score")
                                  if data.get(k) is not None}
        conn.execute(update(runs).where(runs.c.id == run.id).values(
            status=data["status"], reason=data.get("reason"), finished_at=now, **values))
        self._drop_unproposed(conn, run)

    def _on_run_failed(self, conn: Connection, run: Row, data: dict, now: str) -> None:
        conn.execute(update(runs).where(runs.c.id == run.id).values(
            status="failed", error=data["error"], finished_at=now))
        self._drop_unproposed(conn, run)

    @staticmethod
    def _drop_unproposed(conn: Connection, run: Row) -> None:
        """At a run's end, an iteration that never got a candidate (the agent had no further
        proposal, or the run failed while it thought) is no iteration: the panel showed it as
        an empty "Iteration N" with every check pending, the console as a ghost. Its LLM
        exchanges stay (their cost was real)."""
        conn.execute(delete(iterations).where(iterations.c.run_id == run.id,
                                              iterations.c.status == "pending",
                                              iterations.c.candidate.is_(None)))

    def _open_iteration(self, conn: Connection, run_id: str, n: int, now: str) -> str:
        """Insert iteration ``n`` as pending unless present; refuse to touch a finished one.
        Returns ``"new"`` or ``"pending"``."""
        status = conn.scalar(select(iterations.c.status).where(
            iterations.c.run_id == run_id, iterations.c.n == n))
        if status == "finished":
            raise ValueError(f"iteration {n} of run {run_id!r} is already finished; a resumed "
                             "run must continue after its last finished iteration")
        if status is None:
            conn.execute(insert(iterations).values(run_id=run_id, n=n, status="pending",
                                                   started_at=now))
            return "new"
        return status

    # ---- decisions ----------------------------------------------------------------------

    def record_decision(self, run_id: str, iteration: int, hint_key: str, decision: str,
                        text: str = "") -> None:
        """Record that a hint was accepted, rejected or annotated (by a person or an agent)."""
        _check_one_of("decision", decision, DECISIONS)
        with self._writing() as conn:
            self._require_run(conn, run_id)
            conn.execute(insert(decisions).values(
                run_id=run_id, iteration=iteration, hint_key=hint_key, decision=decision,
                text=text, at=_iso(_utcnow())))

    def decisions(self, run_id: str) -> list[dict[str, Any]]:
        """Decisions in the order they were made."""
        query = select(decisions).where(decisions.c.run_id == run_id).order_by(decisions.c.id)
        return [dict(r) for r in self._read(query)]

    def user_notes(self, run_id: str) -> list[str]:
        """The free-text notes people added to the run (the notebook's "Add hint"), oldest
        first, without repeats."""
        notes: list[str] = []
        for d in self.decisions(run_id):
            text = (d.get("text") or "").strip()
            if d["decision"] == "note" and text and text not in notes:
                notes.append(text)
        return notes

    def chosen_repair(self, run_id: str, iteration: int) -> str | None:
        """The playbook repair a person chose to apply to ``iteration``'s candidate next
        (the latest choice), or None."""
        names = [d["hint_key"][len(CHOSEN_PREFIX):] for d in self.decisions(run_id)
                 if d["decision"] == "choose" and d["iteration"] == iteration
                 and d["hint_key"].startswith(CHOSEN_PREFIX)]
        return names[-1] if names else None

    def rejected_hint_keys(self, run_id: str) -> set[str]:
        """Hint keys whose latest accept/reject decision is ``reject`` (notes and chosen
        repairs do not count)."""
        latest: dict[str, str] = {}
        for d in self.decisions(run_id):
            if d["decision"] not in ("note", "choose"):
                latest[d["hint_key"]] = d["decision"]
        return {key for key, decision in latest.items() if decision == "reject"}

    # ---- LLM exchanges ------------------------------------------------------------------

    def record_llm_exchange(self, run_id: str, iteration: int, *, agent: str, model: str,
                            base_url: str, request: dict, response: dict | None, status: str,
                            error: str | None = None, prompt_tokens: int | None = None,
                            completion_tokens: int | None = None,
                            cost_usd: float | None = None, latency_s: float | None = None
                            ) -> int:
        """Record one request to an LLM endpoint and its response or error; returns its
        ``seq`` within the iteration. The caller keeps keys out of ``request``."""
        with self._writing() as conn:
            self._require_run(conn, run_id)
            seq = conn.scalar(select(func.coalesce(func.max(llm_exchanges.c.seq), 0)).where(
                llm_exchanges.c.run_id == run_id, llm_exchanges.c.iteration == iteration)) + 1
            conn.execute(insert(llm_exchanges).values(
                run_id=run_id, iteration=iteration, seq=seq, agent=agent, model=model,
                base_url=base_url, request=_dumps(request),
                response=None if response is None else _dumps(response), status=status,
                error=error, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                cost_usd=cost_usd, latency_s=latency_s, at=_iso(_utcnow())))
        return seq

    def llm_exchanges(self, run_id: str, iteration: int | None = None
                      ) -> list[dict[str, Any]]:
        """Exchanges by iteration and seq, ``request`` and ``response`` parsed."""
        query = select(llm_exchanges).where(llm_exchanges.c.run_id == run_id)
        if iteration is not None:
            query = query.where(llm_exchanges.c.iteration == iteration)
        out = []
        for row in self._read(query.order_by(llm_exchanges.c.iteration, llm_exchanges.c.seq)):
            d = dict(row)
            d["request"] = json.loads(d["request"])
            d["response"] = None if d["response"] is None else json.loads(d["response"])
            out.append(d)
        return out

    def llm_totals(self, run_id: str) -> dict[str, Any]:
        """Requests, failures, tokens, cost (of priced models) and latency of a run."""
        c = llm_exchanges.c
        (row,) = self._read(select(
            func.count().label("requests"),
            func.coalesce(func.sum(case((c.status != "ok", 1), else_=0)), 0).label("failed"),
            func.coalesce(func.sum(c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(c.completion_tokens), 0).label("completion_tokens"),
            func.sum(c.cost_usd).label("cost_usd"),
            func.coalesce(func.sum(c.latency_s), 0.0).label("latency_s"),
        ).where(c.run_id == run_id))
        out = {k: int(row[k]) for k in ("requests", "failed", "prompt_tokens",
                                        "completion_tokens")}
        cost = row["cost_usd"]
        return {**out, "cost_usd": None if cost is None else round(float(cost), 8),
                "latency_s": round(float(row["latency_s"]), 4)}

    # ---- artifacts ----------------------------------------------------------------------

    def write_artifact(self, run_id: str, name: str, data: bytes | str,
                       iteration: int | None = None, kind: str = "file") -> Path:
        """Write ``<run folder>/<name>`` atomically (tmp file, fsync, ``os.replace``) and
        record it; a name already written is replaced. Refuses absolute names and names that
        leave the run folder (``ValueError``). Returns the file's absolute path."""
        with self._writing() as conn:
            run = self._require_run(conn, run_id)
            return self._put_artifact(conn, run, name, data, iteration, kind, _iso(_utcnow()))

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        """Artifact rows in the order they were first written; ``path`` is relative to the run
        folder."""
        query = select(artifacts).where(artifacts.c.run_id == run_id).order_by(artifacts.c.id)
        return [dict(r) for r in self._read(query)]

    def _put_artifact(self, conn: Connection, run: Row, name: str, data: bytes | str,
                      iteration: int | None, kind: str, now: str) -> Path:
        rel = _relative_name(name)
        folder = Path(run.folder).resolve()
        target = folder.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.resolve().is_relative_to(folder):  # a symlink inside the folder
            raise ValueError(f"artifact name {name!r} leads outside the run folder {folder}")
        blob = data.encode() if isinstance(data, str) else bytes(data)
        _atomic_write(target, blob)
        conn.execute(delete(artifacts).where(artifacts.c.run_id == run.id,
                                             artifacts.c.path == rel.as_posix()))
        conn.execute(insert(artifacts).values(
            run_id=run.id, iteration=iteration, name=name, path=rel.as_posix(), kind=kind,
            bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest(), at=now))
        return target

    # ---- iterations, verdicts, hints, events --------------------------------------------

    def iterations(self, run_id: str, include_unfinished: bool = False
                   ) -> list[dict[str, Any]]:
        """Iterations by ``n``, with ``candidate`` (Candidate) and ``scorecard`` (Scorecard)
        rebuilt (``None`` where a pending iteration has none yet). Only finished ones unless
        ``include_unfinished``: an iteration counts once its iteration_finished is stored."""
        query = select(iterations).where(iterations.c.run_id == run_id)
        if not include_unfinished:
            query = query.where(iterations.c.status == "finished")
        out = []
        for row in self._read(query.order_by(iterations.c.n)):
            d = dict(row)
            if d["candidate"] is not None:
                d["candidate"] = Candidate.from_dict(json.loads(d["candidate"]))
            if d["scorecard"] is not None:
                d["scorecard"] = Scorecard.from_dict(json.loads(d["scorecard"]))
            out.append(d)
        return out

    def verdicts(self, run_id: str, iteration: int | None = None) -> list[dict[str, Any]]:
        """Verdict rows by iteration, then in the order the checks reported."""
        query = select(verdicts).where(verdicts.c.run_id == run_id)
        if iteration is not None:
            query = query.where(verdicts.c.iteration == iteration)
        out = []
        for row in self._read(query.order_by(verdicts.c.iteration, verdicts.c.id)):
            d = dict(row)
            for col in ("evidence", "keeps", "timing"):
                d[col] = json.loads(d[col])
            out.append(d)
        return out

    def hints(self, run_id: str, iteration: int | None = None) -> list[dict[str, Any]]:
        """Hint rows by iteration, in the order their checks reported them; each row is also
        accepted by ``Hint.from_dict``."""
        query = select(hints).where(hints.c.run_id == run_id)
        if iteration is not None:
            query = query.where(hints.c.iteration == iteration)
        out = []
        for row in self._read(query.order_by(hints.c.iteration, hints.c.id)):
            d = dict(row)
            d["observed"], d["expected"] = json.loads(d["observed"]), json.loads(d["expected"])
            out.append(d)
        return out

    def events(self, run_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """Events with ``seq > after_seq`` in publication order (poll with the last seq)."""
        query = (select(events).where(events.c.run_id == run_id, events.c.seq > after_seq)
                 .order_by(events.c.seq))
        out = []
        for row in self._read(query):
            d = dict(row)
            d["data"] = json.loads(d["data"])
            out.append(d)
        return out

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` on SQLite (``"ok"`` when sound); other databases check
        themselves, and the answer says so instead of claiming ``"ok"``."""
        if not self._sqlite:
            return f"not checked: {self.engine.dialect.name} has no PRAGMA integrity_check"
        with self.engine.connect() as conn:
            return "\n".join(conn.exec_driver_sql("PRAGMA integrity_check").scalars())

    # ---- plumbing -----------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One write transaction, under this store's lock; on SQLite it starts with
        ``BEGIN IMMEDIATE`` so that writers in other processes queue up instead of failing."""
        with self._lock, self.engine.connect() as conn:
            conn.execution_options(autopilot_write=True)
            with conn.begin():
                yield conn

    def _read(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query).mappings())

    def _require_run(self, conn: Connection, run_id: str) -> Row:
        run = conn.execute(select(runs.c.id, runs.c.folder).where(runs.c.id == run_id)).first()
        if run is None:
            raise UnknownRunError(self._no_run(run_id))
        return run

    def _no_run(self, run_id: str) -> str:
        return f"no run {run_id!r} in {self._where}; `autopilot runs` lists them"


def _folder_problem(folder: Path, error: OSError) -> str:
    """Why ``folder`` cannot be made or used, in words: a file in the way, no permission."""
    for p in (folder, *folder.parents):
        if p.exists() and not p.is_dir():
            return f"{p} is a file, not a folder"
    if isinstance(error, PermissionError):
        return f"no permission to write there ({error.strerror})"
    return error.strerror or str(error)


def _database_problem(error: Exception, sqlite: bool) -> str:
    """The first line of a database error, with what it means for a SQLite file."""
    orig = getattr(error, "orig", None) or error
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    if sqlite and "file is not a database" in text:
        return (f"{text}: the file is corrupt or not a SQLite database; move it aside (a new "
                "store is then created) or point --home / $AUTOPILOT_HOME elsewhere")
    if sqlite and "unable to open database file" in text:
        return (f"{text}: the path is a folder, or its folder is read-only for this user; "
                "point --home / $AUTOPILOT_HOME at a writable folder")
    if sqlite and "readonly database" in text:
        return (f"{text}: the database or its folder is read-only for this user; point "
                "--home / $AUTOPILOT_HOME at a writable folder")
    return text


def _redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for a URL SQLAlchemy cannot parse)."""
    return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    """Per-connection SQLite settings.

    WAL lets readers in other processes read while the loop writes. ``synchronous=FULL``: in
    WAL mode a commit is a write() to the -wal file, which already survives a SIGKILL of the
    process (the data sits in the OS page cache), so NORMAL would do for killed processes; FULL
    also fsyncs the WAL at every commit, so acknowledged commits survive an OS crash or power
    loss too. It costs one fsync per event, a handful per iteration of seconds: negligible.
    """
    dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _sqlite_begin)
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Reads get a deferred transaction (a consistent snapshot that blocks nobody); writes
    take the write lock up front, which avoids SQLITE_BUSY when a read upgrades to a write."""
    write = conn.get_execution_options().get("autopilot_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _runs_query() -> Any:
    done = (select(func.count()).select_from(iterations)
            .where(iterations.c.run_id == runs.c.id, iterations.c.status == "finished")
            .scalar_subquery())
    return select(runs, done.label("iterations_done"))


def _run_dict(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["spec"] = json.loads(d["spec"])
    return d


def _relative_name(name: str) -> PurePosixPath:
    """``name`` as a clean relative path; refuses absolute names and ``..`` anywhere. Either
    slash separates, so a name means the same file on every platform."""
    if not name or "\0" in name:
        raise ValueError(f"artifact name {name!r} is empty or contains NUL")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        raise ValueError(f"artifact name {name!r} is absolute; give a path inside the run "
                         "folder")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"artifact name {name!r} contains '..'; it must stay inside the run "
                         "folder")
    if not parts:
        raise ValueError(f"artifact name {name!r} names the run folder itself, not a file")
    return PurePosixPath(*parts)


def _atomic_write(target: Path, blob: bytes) -> None:
    """Readers see the old file or the new one, never a torn one; durable once returned."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # makes the rename itself durable
    finally:
        os.close(dir_fd)


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (a zombie counts as gone)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): the signal probe is all we have
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _check_one_of(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="microseconds")
