"""The live panel of a run: score curves, the ladder of the current iteration, the hints with
Accept / Reject and a free-text hint, Continue and Stop, and at the end the best candidate
with its diff, the report summary, the artifact paths and "Insert as new cell".

Only standard ipywidgets and a plotly ``FigureWidget``, so it renders in JupyterLab,
Notebook 7 and VS Code. It subscribes to the run's events (:meth:`RunPanel.on_event`), which
arrive on the loop's thread; the buttons call the run's controls on the kernel's thread. One
lock orders both. Text from the store, a candidate or an agent is shown through :func:`_esc`:
HTML-escaped and without control characters or bidi overrides.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import ipywidgets as widgets
import plotly.graph_objects as go

from autopilot_lab.events import Event
from autopilot_lab.hints import Hint
from autopilot_lab.journal import rank
from autopilot_lab.text import DEFAULT_LIMIT, clean

BADGES = {  # state -> (symbol, background colour)
    "pending": ("○", "#e5e7eb"), "running": ("▶", "#bfdbfe"), "passed": ("✓", "#bbf7d0"),
    "failed": ("✗", "#fecaca"), "skipped": ("–", "#f3f4f6"),
}
MARKERS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon")
DASHES = ("dot", "dash", "dashdot", "longdash", "longdashdot")
HINT_COLUMNS = ("kind", "priority", "check", "observed", "expected", "suggestion", "decision")
TOTAL = "total"


class PanelControls(Protocol):
    """What the panel's buttons act on (a :class:`~autopilot_lab.jupyter.runner.NotebookRun`)."""

    objective: str
    interactive: bool
    error: BaseException | None

    @property
    def done(self) -> bool: ...
    @property
    def status(self) -> str: ...
    def decide(self, iteration: int, hint_key: str, decision: str) -> None: ...
    def note(self, iteration: int, text: str) -> None: ...
    def proceed(self) -> None: ...
    def stop(self) -> None: ...
    def decisions(self) -> dict[str, str]: ...
    def outcome(self) -> Any: ...
    def insert_best(self) -> str: ...
    def repair_choices(self, iteration: int) -> list[tuple[str, str]]: ...
    def choose_repair(self, iteration: int, name: str) -> None: ...


class RunPanel:
    """Widgets of one run, fed by its events."""

    def __init__(self, controls: PanelControls):
        self.controls = controls
        self.run_id: str | None = None
        self.iteration = 0
        self.checks: list[str] = []
        self.states: dict[str, str] = {}
        self.scores: dict[str, dict[int, float]] = {}
        self.iteration_hints: dict[int, list[Hint]] = {}
        self.frontier: int | None = None
        self._best: tuple[float, int, int] | None = None
        self.ended = False  # the run ended: no agent comes next, no Accept/Reject
        self._badges: dict[str, widgets.HTML] = {}
        self._lock = threading.RLock()

        self.title = widgets.HTML(self._title())
        self.status = widgets.HTML(_status("starting"))
        self.figure = go.FigureWidget(layout=go.Layout(
            height=300, margin={"l": 50, "r": 50, "t": 30, "b": 40}, template="plotly_white",
            title={"text": "Scores per check and total", "font": {"size": 13}},
            # iterations are whole numbers from 1: no tick at 0 or 1.5 (set per point below)
            xaxis={"title": {"text": "iteration"}, "dtick": 1, "tick0": 1,
                   "range": [0.5, 1.5]},
            yaxis={"title": {"text": "check score"}, "range": [-0.05, 1.05]},
            # the total is gates passed + quality: whole-number ticks, one per gate
            yaxis2={"title": {"text": "total score"}, "overlaying": "y", "side": "right",
                    "rangemode": "tozero", "dtick": 1, "tickformat": "d",
                    "showgrid": False},
            legend={"orientation": "h", "y": -0.25}))
        self.ladder_caption = widgets.HTML()
        self.ladder = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.hints_caption = widgets.HTML("<b>Hints</b>: none yet")
        # shown when the agent has at most one hint left: a playbook repair to apply next
        self.repair_box = widgets.HBox()
        self.hints_table = widgets.GridBox(layout=widgets.Layout(
            grid_template_columns="auto auto auto minmax(80px, 1fr) minmax(80px, 1fr) 2fr auto",
            grid_gap="2px 10px", width="100%"))
        self.note_text = widgets.Textarea(
            placeholder="A hint of your own: an LLM agent reads it in its next prompt "
                        "(the offline rules agent cannot read free text)",
            layout=widgets.Layout(width="60%", height="60px"))
        self.note_button = widgets.Button(description="Add hint", icon="comment",
                                          tooltip="store this text with the run; the LLM "
                                                  "agent's next prompt lists it")
        self.continue_button = widgets.Button(
            description="Continue", icon="play", disabled=True, button_style="primary",
            tooltip="go on to the next iteration with the decisions made")
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="danger",
                                          disabled=True, tooltip="stop after this iteration, "
                                          "keeping the best candidate so far")
        self.message = widgets.HTML()
        self.result = widgets.VBox()
        self.note_button.on_click(self._guard(self._add_note))
        self.continue_button.on_click(self._guard(lambda _: self.controls.proceed()))
        self.stop_button.on_click(self._guard(lambda _: self.controls.stop()))
        self.widget = widgets.VBox([
            widgets.HBox([self.title, self.status]), self.figure, self.ladder_caption,
            self.ladder, self.hints_caption, self.repair_box, self.hints_table,
            widgets.HBox([self.note_text, self.note_button]),
            widgets.HBox([self.continue_button, self.stop_button]), self.message, self.result,
        ], layout=widgets.Layout(border="1px solid #d1d5db", padding="8px"))
        self.widget.add_class("autopilot-panel")

    # ---- the run's life ------------------------------------------------------------------

    def start(self, run_id: str, checks: list[str]) -> None:
        """The run exists: its id and the ladder's checks, in order."""
        with self._lock:
            self.run_id = run_id
            for name in checks:
                self._check(name)
            self.title.value = self._title()
            self.stop_button.disabled = False

    def replay(self, events: Iterable[dict[str, Any]]) -> None:
        """Feed stored events (``Store.events`` rows) as if they had just happened."""
        for row in events:
            self.on_event(Event(row["type"], row["run_id"], row["data"]))

    def on_event(self, event: Event) -> None:
        """The event subscriber; called on the loop's thread."""
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is not None:
            with self._lock:
                handler(event.data)

    def waiting(self, n: int) -> None:
        with self._lock:
            self.status.value = _status("waiting", f"after iteration {n}: accept or reject the "
                                                   "hints, add your own, then Continue")
            self.continue_button.disabled = False

    def proceeding(self) -> None:
        with self._lock:
            self.continue_button.disabled = True
            self.status.value = _status("running")

    def stopping(self) -> None:
        with self._lock:
            self.stop_button.disabled = True
            self.continue_button.disabled = True
            self.status.value = _status("stopping", "after the current iteration")

    def finished(self) -> None:
        """The run ended (or is shown from the store): the outcome and the final status."""
        with self._lock:
            self.continue_button.disabled = self.stop_button.disabled = True
            error = self.controls.error
            if error is not None:
                self.status.value = _status("failed", f"{type(error).__name__}: {error}")
            elif self.run_id is not None:
                self.status.value = _status(self.controls.status)
            if self.run_id is not None:
                self._show_outcome()

    # ---- events --------------------------------------------------------------------------

    def _on_run_started(self, data: dict[str, Any]) -> None:
        target = (data.get("spec") or {}).get("target")
        self.status.value = _status("running", f"target {target}" if target else "")
        self.stop_button.disabled = self.run_id is None or self.controls.done

    def _on_iteration_started(self, data: dict[str, Any]) -> None:
        self.iteration = data["iteration"]
        for name in self.checks:
            self.states[name] = "pending"
        self.ladder_caption.value = f"<b>Iteration {self.iteration}</b>"
        self._render_ladder()

    def _on_candidate_proposed(self, data: dict[str, Any]) -> None:
        summary = (data.get("candidate") or {}).get("notes", {}).get("summary", "")
        self.ladder_caption.value = (f"<b>Iteration {data['iteration']}</b> "
                                     f"({_esc(data.get('agent', ''))}): {_esc(summary)}")

    def _on_check_started(self, data: dict[str, Any]) -> None:
        self._check(data["check"])
        self.states[data["check"]] = "running"
        self._render_ladder()

    def _on_check_finished(self, data: dict[str, Any]) -> None:
        verdict = data["verdict"]
        name = verdict["check"]
        self._check(name)
        self.states[name] = "passed" if verdict["passed"] else "failed"
        self.scores[name][data["iteration"]] = verdict["score"]
        self._render_ladder()
        self._plot(name)

    def _on_iteration_finished(self, data: dict[str, Any]) -> None:
        n, card = data["iteration"], data["scorecard"]
        for name in card.get("skipped", []):
            self._check(name)
            self.states[name] = "skipped"
        self._render_ladder()
        self.scores.setdefault(TOTAL, {})[n] = data["score"]
        self._plot(TOTAL)
        self.iteration_hints[n] = [Hint.from_dict(h) for v in card["verdicts"]
                                   for h in v["hints"]]
        # the agent builds on the best by the journal's one rule (journal.rank)
        key = rank(data["score"], sum(bool(v["passed"]) for v in card["verdicts"]), n)
        if self._best is None or key > self._best:
            self._best = key
            self.frontier = n
        self._render_hints()

    def _on_run_finished(self, data: dict[str, Any]) -> None:
        self.status.value = _status(data["status"], data.get("reason", ""))
        self._ended()

    def _on_run_failed(self, data: dict[str, Any]) -> None:
        self.status.value = _status("failed", data.get("error", ""))
        self._ended()

    def _ended(self) -> None:
        """No agent comes next once the run has ended: the hints stay, as the best
        iteration's, without Accept/Reject."""
        self.continue_button.disabled = self.stop_button.disabled = True
        self.ended = True
        self._render_hints()

    # ---- rendering -----------------------------------------------------------------------

    def _title(self) -> str:
        run = html.escape(self.run_id or "(starting)")
        return f"<b>autopilot {html.escape(self.controls.objective)}</b> &nbsp; run {run}"

    def _check(self, name: str) -> None:
        if name not in self.checks:
            self.checks.append(name)
            self.states.setdefault(name, "pending")
            self.scores.setdefault(name, {})
            self._badges[name] = widgets.HTML()
            self.ladder.children = [self._badges[c] for c in self.checks]
            self._render_ladder()

    def _render_ladder(self) -> None:
        for name in self.checks:
            self._badges[name].value = _badge(name, self.states[name])

    def _plot(self, name: str) -> None:
        points = sorted(self.scores[name].items())
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        trace = next((t for t in self.figure.data if t.name == name), None)
        with self.figure.batch_update():
            if trace is None:
                k = len(self.figure.data)
                # checks that score the same sit on one line: each its own marker and dash,
                # so none hides another
                self.figure.add_scatter(
                    name=name, x=xs, y=ys, mode="lines+markers",
                    yaxis="y2" if name == TOTAL else "y",
                    marker={"symbol": MARKERS[k % len(MARKERS)], "size": 9 if name == TOTAL
                            else 7},
                    line={"width": 4 if name == TOTAL else 2,
                          "dash": "solid" if name == TOTAL else DASHES[k % len(DASHES)]})
            else:
                trace.x, trace.y = xs, ys
            last = max((max(t.x, default=1) for t in self.figure.data), default=1)
            self.figure.layout.xaxis.range = [0.5, last + 0.5]

    def _render_hints(self) -> None:
        n = self.frontier
        if n is None:
            return
        hints = self.iteration_hints[n]
        decisions = self._render_caption(n, hints)
        cells: list[widgets.Widget] = [widgets.HTML(f"<b>{c}</b>") for c in HINT_COLUMNS]
        for hint in hints:
            cells += [widgets.HTML(f"<b>{hint.kind.name}</b>"),
                      widgets.HTML(hint.priority.name),
                      # the check and what it measured (a METRIC_GAP's metric and split)
                      widgets.HTML(_wrap(f"{_esc(hint.check)}<br><small>"
                                         f"{_esc(hint.metric)}</small>")),
                      widgets.HTML(_wrap(_cell(hint.observed))),
                      widgets.HTML(_wrap(_cell(hint.expected))),
                      widgets.HTML(_wrap(_esc(hint.suggestion))),
                      widgets.HTML(_esc(decisions.get(hint.key) or "-")) if self.ended
                      else self._decision_cell(n, hint, decisions.get(hint.key))]
        _replace_children(self.hints_table, cells)

    def _render_caption(self, n: int, hints: list[Hint]) -> dict[str, str]:
        """The caption above the hints: what the agent gets next, and a warning before the
        last open hint is rejected. Returns the decisions it read."""
        latest = n == max(self.iteration_hints)
        where = f"iteration {n}" + ("" if latest else ", the best so far")
        if self.ended:
            self.hints_caption.value = (f"<b>Hints of the best candidate</b> (iteration {n}); "
                                        "the run has ended")
        else:
            self.hints_caption.value = (
                f"<b>Hints the agent gets next</b> (from {where}): "
                + ("none, every check is satisfied" if not hints else
                   "a rejected hint is sent to no agent again and its repair is not applied"))
        decisions = self._decisions()
        open_hints = [h for h in hints if decisions.get(h.key) != "reject"]
        lonely = not self.ended and hints and len(open_hints) <= 1
        if lonely:
            self.hints_caption.value += "<br><span style='color:#b45309'>&#9888; " + (
                "one hint left: rejecting it leaves the agent nothing to act on, and the run "
                "ends with budget left" if open_hints else
                "every hint is rejected: the agent has nothing to act on, and the run ends "
                "with budget left") + "; or choose the next repair yourself:</span>"
        self._render_repair_choice(n if lonely else None)
        return decisions

    def _render_repair_choice(self, n: int | None) -> None:
        """A menu of the playbook's untried repairs for iteration ``n``'s candidate."""
        choices = self.controls.repair_choices(n) if n is not None else []
        if not choices:
            _replace_children(self.repair_box, [])
            return
        menu = widgets.Dropdown(options=[(f"{name}: {what}", name) for name, what in choices],
                                layout=widgets.Layout(width="60%"))
        use = widgets.Button(description="Use next", icon="wrench",
                             tooltip="apply this repair to the candidate of iteration "
                                     f"{n} at the next iteration, instead of the agent")

        def click(_: Any) -> None:
            self.controls.choose_repair(n, menu.value)
            self.message.value = (f"iteration {n + 1} applies {html.escape(menu.value)} to "
                                  f"iteration {n}'s candidate")
        use.on_click(self._guard(click))
        _replace_children(self.repair_box, [menu, use])

    def _decision_cell(self, n: int, hint: Hint, decided: str | None) -> widgets.Widget:
        accept = widgets.Button(description="Accept", tooltip=hint.key,
                                layout=widgets.Layout(width="80px"))
        reject = widgets.Button(description="Reject", tooltip=hint.key,
                                layout=widgets.Layout(width="80px"))
        state = widgets.HTML()

        def show(decision: str | None) -> None:
            accept.button_style = "success" if decision == "accept" else ""
            reject.button_style = "danger" if decision == "reject" else ""
            state.value = {"accept": "accepted", "reject": "rejected"}.get(decision or "", "")

        def decide(decision: str) -> Callable[[Any], None]:
            def click(_: Any) -> None:
                self.controls.decide(n, hint.key, decision)
                show(decision)
                self.message.value = f"{decision}ed {html.escape(hint.kind.name)} " \
                                     f"({_esc(hint.key)})"
                # the caption says what is left for the agent; the buttons stay (a re-render
                # would replace the widget the user just clicked)
                self._render_caption(n, self.iteration_hints[n])
            return self._guard(click)

        accept.on_click(decide("accept"))
        reject.on_click(decide("reject"))
        show(decided)
        return widgets.HBox([accept, reject, state])

    def _decisions(self) -> dict[str, str]:
        try:
            return self.controls.decisions()
        except ValueError:  # the run has not started: nothing decided yet
            return {}

    def _add_note(self, _: Any) -> None:
        n = self.frontier if self.frontier is not None else self.iteration
        self.controls.note(n, self.note_text.value)
        self.message.value = f"note stored for iteration {n}: {_esc(self.note_text.value)}"
        self.note_text.value = ""

    def _show_outcome(self) -> None:
        found = self.controls.outcome()
        if found is None:
            _replace_children(self.result, [widgets.HTML("<i>No iteration was scored.</i>")])
            return
        summary = "".join(f"<li>{_esc(line)}</li>" for line in found.summary)
        paths = "".join(f"<li>{_esc(k)}: <code>{_esc(v)}</code></li>"
                        for k, v in sorted(found.paths.items()))
        insert = widgets.Button(description="Insert as new cell", icon="plus",
                                button_style="info", layout=widgets.Layout(width="max-content"),
                                tooltip="hand the best candidate to the notebook as a new cell")
        insert.on_click(self._guard(self._insert))
        self.insert_note = widgets.HTML()  # the feedback, beside the button that was clicked
        diff = _diff_html(found.diff) if found.diff else "<i>no previous iteration</i>"
        _replace_children(self.result, [
            widgets.HTML(f"<h4>Best: iteration {found.best_iteration}, score "
                         f"{found.best_score}, targets met: {found.targets_met}</h4>"
                         f"<ul>{summary}</ul>"),
            widgets.Accordion(children=[
                widgets.HTML(_pre(_esc(found.cell, None))), widgets.HTML(_pre(diff)),
                widgets.HTML(f"<ul>{paths}</ul>")],
                titles=("Best candidate: code and recipe",
                        f"Diff against iteration {found.best_iteration - 1}",
                        "Artifacts"), selected_index=0),
            widgets.HBox([insert, self.insert_note]),
        ])

    def _insert(self, button: Any) -> None:
        self.controls.insert_best()
        text = ("&#10003; queued: the best candidate goes into a new cell below the next cell "
                "you run (the kernel hands it over with that cell's reply); <code>%autopilot "
                f"insert {html.escape(self.run_id or '')}</code> does it at once")
        self.insert_note.value = f"<span style='color:#047857'>{text}</span>"
        self.message.value = text
        if isinstance(button, widgets.Button):
            button.description, button.icon = "Insert again", "check"

    def _guard(self, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        """Run a button's action under the lock; show its error in the panel, not a log."""
        def run(button: Any) -> None:
            with self._lock:
                try:
                    fn(button)
                except Exception as e:  # a click must never leave the panel silent
                    self.message.value = (f"<span style='color:#b91c1c'>"
                                          f"{html.escape(type(e).__name__)}: "
                                          f"{_esc(e)}</span>")
        return run


def _replace_children(box: widgets.Box, children: list[widgets.Widget]) -> None:
    """Show new children and close the old ones (and what they hold), so that the front end
    and a saved notebook do not keep widgets nobody sees."""
    old = list(box.children)
    box.children = children
    while old:
        w = old.pop()
        old += list(getattr(w, "children", ()))
        w.close()


def _status(state: str, detail: str = "") -> str:
    colour = {"running": "#1d4ed8", "waiting": "#b45309", "finished": "#15803d",
              "stopped": "#6b7280", "stopping": "#6b7280", "failed": "#b91c1c"}.get(state,
                                                                                  "#374151")
    extra = f" &nbsp; {_esc(detail)}" if detail else ""
    return f"&nbsp; <b style='color:{colour}'>{html.escape(state)}</b>{extra}"


def _badge(name: str, state: str) -> str:
    symbol, colour = BADGES[state]
    return (f"<span title='{state}' style='background:{colour};border-radius:4px;"
            f"padding:2px 8px;margin-right:4px'>{symbol} {html.escape(name)}</span>")


def _esc(value: Any, limit: int | None = DEFAULT_LIMIT) -> str:
    """``value`` as HTML text: control characters and bidi overrides gone, then escaped."""
    return html.escape(clean(value, limit))


def _wrap(body: str) -> str:
    """A table cell's HTML that breaks long words (paths, numbers) instead of running into the
    next column at a narrow width."""
    return f"<div style='overflow-wrap:anywhere;word-break:break-word'>{body}</div>"


def _cell(value: Any) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else clean(value, None)
    return html.escape(text if len(text) <= 80 else text[:77] + "...")


def _pre(body: str) -> str:
    return (f"<pre style='max-height:320px;overflow:auto;font-size:12px;"
            f"background:#f9fafb;padding:6px'>{body}</pre>")


def _diff_html(diff: str) -> str:
    out = []
    for line in diff.splitlines():
        colour = {"+": "#15803d", "-": "#b91c1c", "@": "#6b7280"}.get(line[:1])
        text = _esc(line, None)
        out.append(f"<span style='color:{colour}'>{text}</span>" if colour else text)
    return "\n".join(out)
