"""The console end to end: JupyterLab on 127.0.0.1 in Debian's headless Chromium (driven by
Playwright, no browser download) shows the runs a test wrote, opens one from the keyboard,
and shows its hints, score charts and code diff in the light and the dark theme. Screenshots
go to test-artifacts/console/. Also: pip installed both halves of the extension, enabled.

First use without a stumble (one JupyterLab for these, its runs seeded by ``seed_first_use``):
no ghost iteration after the agent had no further proposal, the best of a tie as
``journal.rank`` picks it, durations in whole seconds, a long hint value that wraps in its
column at a narrow width, the user's notes and the notebook a run came from."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from . import (
    ARTIFACTS,
    ITERATION_SECONDS,
    LONG_VALUE,
    NO_PROPOSAL,
    NOTEBOOK_PATH,
    NOTES,
    RUN_SECONDS,
    TOKEN,
    Server,
    seed_first_use,
    seed_runs,
)

CHROMIUM = os.environ.get("AUTOPILOT_CHROMIUM") or shutil.which("chromium") \
    or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _jupyter(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "jupyter", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def test_both_extensions_are_installed_and_enabled(tmp_path):
    pytest.importorskip("jupyterlab", reason="pip install 'autopilot-lab[console]'")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path), "NO_COLOR": "1"}
    labext = _jupyter("labextension", "list", env=env)
    server = _jupyter("server", "extension", "list", env=env)
    assert any("autopilot-lab" in line and "enabled" in line and "OK" in line
               for line in labext.splitlines()), labext
    assert any("autopilot_lab.jupyter" in line and "enabled" in line
               for line in server.splitlines()), server


LAB_ARGS = ("--LabApp.news_url=", "--LabServerApp.extension_manager=readonly",
            "--LabApp.expose_app_in_browser=True")


def _browser_requirements() -> None:
    if not CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    for module in ("jupyterlab", "playwright"):
        pytest.importorskip(module, reason="pip install 'autopilot-lab[console]'")


@pytest.fixture
def lab(tmp_path):
    _browser_requirements()
    home = tmp_path / "home"
    seeded = seed_runs(home)
    root = tmp_path / "root"
    root.mkdir()
    server = Server("jupyterlab", tmp_path, home, root, *LAB_ARGS)
    yield server, seeded
    server.close()


def test_console_shows_a_run_its_hints_and_charts(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    server, seeded = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1500, "height": 1300})
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/lab?token={TOKEN}")
            tab = page.locator(".jp-SideBar [data-id='autopilot-runs']")
            tab.wait_for(timeout=90_000)
            tab.click()
            sidebar = page.locator("#autopilot-runs")
            row = sidebar.locator(f".ap-run[data-run-id='{seeded.finished}']")
            expect(row).to_contain_text("TabularMLP", timeout=30_000)
            expect(row).to_contain_text("3/3 iterations")
            expect(sidebar.locator(f".ap-run[data-run-id='{seeded.interrupted}']")) \
                .to_contain_text("interrupted")
            sidebar.screenshot(path=str(ARTIFACTS / "sidebar.png"))

            row.focus()  # keyboard: the run opens with Enter
            page.keyboard.press("Enter")
            view = page.locator(".ap-runview")
            hints = view.locator(".ap-hint")
            expect(hints).to_have_count(3, timeout=30_000)
            expect(hints.nth(0)).to_contain_text("NAN_LOSS")
            expect(hints.nth(0)).to_contain_text("accepted")
            expect(hints.nth(1)).to_contain_text("RESOURCE_LIMIT")
            expect(hints.nth(1)).to_contain_text("rejected")
            expect(hints.nth(2)).to_contain_text("METRIC_GAP")
            expect(view.locator(".ap-priority.ap-p1").first).to_be_visible()
            charts = view.locator(".ap-chart")
            expect(charts).to_have_count(6)  # the total, then one per check
            expect(charts.nth(0).locator("circle")).to_have_count(3)
            assert charts.evaluate_all("cs => cs.map(c => c.dataset.chart)")[1:] == \
                ["static", "build", "trainability", "stability", "metric"]
            metric = view.locator(".ap-chart[data-chart='metric'] circle")
            assert metric.evaluate_all("cs => cs.map(c => c.getAttribute('class'))") == \
                ["ap-dot ap-dot-skipped", "ap-dot ap-dot-fail", "ap-dot ap-dot-pass"]
            expect(view.locator(".ap-sandbox")).to_contain_text("timeout")
            expect(view.locator(".ap-errors")).to_contain_text("401: invalid key [redacted]")
            expect(view.locator(".ap-artifacts a", has_text="report.md")).to_be_visible()
            view.locator(".ap-diff select").nth(0).select_option("1")
            view.get_by_role("button", name="Show diff").click()
            expect(view.locator(".ap-diff-add")).to_contain_text("hidden: int = 64")
            expect(view.get_by_role("button", name="Resume")).to_be_enabled()
            expect(view.get_by_role("button", name="Stop")).to_be_disabled()
            view.evaluate("v => v.scrollTo(0, 0)")
            page.wait_for_timeout(300)
            page.screenshot(path=str(ARTIFACTS / "run-light.png"))
            for name in ("charts-section", "hints", "diff", "sandbox", "errors", "artifacts"):
                view.locator(f".ap-{name}").screenshot(path=str(ARTIFACTS / f"{name}.png"))
            view.evaluate("v => v.scrollTo(0, 0)")

            page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', "
                          "{theme: 'JupyterLab Dark'})")
            page.wait_for_function("document.body.dataset.jpThemeLight === 'false'",
                                   timeout=30_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "run-dark.png"))
        finally:
            browser.close()
    for name in ("sidebar", "run-light", "charts-section", "hints", "diff", "run-dark"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000, name


# ---- first use without a stumble ----------------------------------------------------------


@pytest.fixture(scope="module")
def first_use(tmp_path_factory):
    """One JupyterLab over the first-use runs, for the tests below."""
    _browser_requirements()
    tmp = tmp_path_factory.mktemp("first-use")
    home = tmp / "home"
    seeded = seed_first_use(home)
    root = tmp / "root"
    root.mkdir()
    server = Server("jupyterlab", tmp, home, root, *LAB_ARGS)
    yield server, seeded
    server.close()


@contextmanager
def _console(server: Server, profile: Any, width: int = 1400, height: int = 1100
             ) -> Iterator[Any]:
    """JupyterLab in Chromium (a fresh workspace: no run view restored), the Autopilot tab
    ready."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height})
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/lab?reset&token={TOKEN}")
            page.locator(".jp-SideBar [data-id='autopilot-runs']").wait_for(timeout=90_000)
            yield page
        finally:
            browser.close()


def _open(page: Any, run_id: str) -> Any:
    """Open a run from the sidebar (as a person does); returns its view once rendered."""
    from playwright.sync_api import expect

    sidebar = page.locator("#autopilot-runs")
    if not sidebar.is_visible():
        page.locator(".jp-SideBar [data-id='autopilot-runs']").click()
    row = sidebar.locator(f".ap-run[data-run-id='{run_id}']")
    row.click(timeout=30_000)
    view = page.locator(f"#autopilot-run-{run_id} .ap-runview")
    expect(view.locator(".ap-head h2")).to_contain_text(run_id, timeout=30_000)
    expect(view.locator(".ap-artifacts p, .ap-artifacts li").first).to_be_visible()
    return view


def _fact(view: Any, name: str) -> Any:
    return view.locator(f".ap-facts dd[data-fact='{name}']")


def test_no_ghost_iteration_after_the_agent_has_no_further_proposal(first_use, tmp_path):
    """The agent had no proposal in iteration 3: the run ends at 2 iterations, with no
    "Iteration 3", no "has no candidate for iteration 3" (the diff of the last two), and no
    clock that counts; an interrupted run's unfinished iteration has no clock either."""
    from playwright.sync_api import expect

    server, seeded = first_use
    with _console(server, tmp_path / "profile") as page:
        view = _open(page, seeded.ghost)
        expect(_fact(view, "ended because")).to_have_text(NO_PROPOSAL)
        expect(_fact(view, "iterations")).to_have_text("2 of 5")
        rows = view.locator(".ap-ladder tbody tr")
        expect(rows).to_have_count(2)
        assert rows.locator("th").all_inner_texts() == ["1", "2"]
        # the diff of the last two iterations is fetched once the run opens: its files, or
        # the server's message
        expect(view.locator(".ap-file-diff, .ap-message:not(:empty)").first).to_be_visible(
            timeout=30_000)
        assert view.locator(".ap-diff select").nth(1).locator("option").all_inner_texts() == \
            ["iteration 1", "iteration 2"]
        text = view.inner_text()
        view.locator(".ap-ladder").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "ghost-iteration.png"))
        for ghost in ("Iteration 3", "iteration 3", "has no candidate for iteration",
                      "running…", "still running"):
            assert ghost not in text, (ghost, text)
        assert view.locator(".ap-message").inner_text().strip() == ""
        time.sleep(1.5)  # nothing in the view counts on
        assert view.inner_text() == text

        view = _open(page, seeded.interrupted)
        expect(_fact(view, "ended because")).to_contain_text("ended while the run was running")
        row = view.locator(".ap-ladder tbody tr")
        expect(row).to_have_count(1)
        expect(row.locator(".ap-state")).to_have_text("not finished")
        assert row.locator("td").last.inner_text() == "–"
        text = view.inner_text()
        assert "running…" not in text and "still running" not in text
        time.sleep(1.5)
        assert view.inner_text() == text


def test_the_best_of_a_tie_is_the_one_journal_rank_picks(first_use, tmp_path):
    """Four candidates of one score: the console names journal.rank's pick (more checks
    passed, then the later iteration) and shows that iteration's hints and code."""
    from playwright.sync_api import expect

    from autopilot_lab.journal import rank
    from autopilot_lab.store import Store

    server, seeded = first_use
    with Store(server.home) as store:
        its = store.iterations(seeded.tie)
        hints = {it["n"]: store.hints(seeded.tie, it["n"]) for it in its}

    def passed(it: dict) -> int:
        return sum(v.passed for v in it["scorecard"].verdicts)

    best = max(its, key=lambda it: rank(it["score"], passed(it), it["n"]))
    n = best["n"]
    # a tie that only journal.rank settles this way
    assert len({it["score"] for it in its}) == 1
    most = max(passed(it) for it in its)
    assert n not in (its[0]["n"], its[-1]["n"],
                     next(it["n"] for it in its if passed(it) == most))
    # how the section would word another iteration's hint
    others = [f"{h['kind']} {h['metric']}: observed {h['observed']}, expected {h['expected']}"
              for m, hs in hints.items() if m != n for h in hs]

    with _console(server, tmp_path / "profile") as page:
        view = _open(page, seeded.tie)
        expect(_fact(view, "best")).to_have_text(re.compile(rf"^iteration {n}, score "))
        best_row = view.locator(".ap-ladder tr.ap-row-best")
        expect(best_row).to_have_count(1)
        assert best_row.get_attribute("data-iteration") == str(n)
        expect(best_row.locator(".ap-state")).to_have_text("best")
        expect(view.locator(".ap-hint-group h4", has_text="· best")) \
            .to_have_text(re.compile(rf"^Iteration {n}\b"))

        section = view.locator(".ap-best")
        expect(section.locator(".ap-best-line")).to_contain_text(f"Iteration {n}, score")
        shown = section.locator(".ap-best-hints li")
        expect(shown).to_have_count(len(hints[n]))
        for h, li in zip(hints[n], shown.all()):
            expect(li).to_contain_text(h["kind"])
            expect(li).to_contain_text(f"observed {h['observed']}")
        text = section.inner_text()
        assert all(o not in text for o in others), (others, text)
        summary = section.locator(".ap-best-file summary")
        expect(summary).to_have_text([f"model.py (iteration {n})"], timeout=30_000)
        summary.focus()  # the code opens from the keyboard
        page.keyboard.press("Enter")
        code = section.locator(".ap-best-file[open] pre")
        expect(code).to_be_visible()
        assert code.text_content() == best["candidate"].files["model.py"]
        view.evaluate("v => v.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "tie-best.png"))


def test_durations_are_whole_minutes_and_seconds(first_use, tmp_path):
    """119.6 s reads "2 min 0 s" in the sidebar and the run's facts, an iteration of 59.96 s
    "1 min 0 s": never "60 s" inside a minute."""
    from playwright.sync_api import expect

    server, seeded = first_use
    status, _, run = server.call("GET", f"/autopilot/api/runs/{seeded.timed}")
    assert status == 200 and run["duration_s"] == pytest.approx(RUN_SECONDS, abs=1e-3)
    sixty = re.compile(r"(?<![\d.])60(\.\d+)? s\b")
    with _console(server, tmp_path / "profile") as page:
        sidebar = page.locator("#autopilot-runs")
        view = _open(page, seeded.timed)
        row = sidebar.locator(f".ap-run[data-run-id='{seeded.timed}'] .ap-run-facts")
        expect(row).to_contain_text("2 min 0 s")
        expect(_fact(view, "duration")).to_have_text("2 min 0 s")
        times = view.locator(".ap-ladder tbody tr td:last-child")
        expect(times).to_have_count(len(ITERATION_SECONDS))
        assert times.all_inner_texts() == ["1 min 0 s", "59.3 s"]
        for text in (view.inner_text(), sidebar.inner_text()):
            assert not sixty.search(text) and "min 60" not in text, text
        page.screenshot(path=str(ARTIFACTS / "durations.png"))


def test_a_long_hint_value_wraps_in_its_column_at_a_narrow_width(first_use, tmp_path):
    """At 700 px, an observed value of 300 characters without a break stays in its column:
    its text ends before the expected column begins, inside the hint, with no sideways
    scrolling of the run view."""
    from playwright.sync_api import expect

    server, seeded = first_use
    with _console(server, tmp_path / "profile", width=700, height=900) as page:
        view = _open(page, seeded.long_hint)
        hint = view.locator(".ap-hints .ap-hint")
        expect(hint).to_have_count(1)
        observed = hint.locator(".ap-observed")
        expect(observed.locator("xpath=following-sibling::*[1]")).to_have_class(
            re.compile(r"\bap-expected\b"))
        assert observed.locator(".ap-value").text_content() == LONG_VALUE
        box = observed.evaluate("""o => {
            const range = document.createRange();
            range.selectNodeContents(o);
            const view = o.closest('.ap-runview');
            return {text: range.getBoundingClientRect().toJSON(),
                    cell: o.getBoundingClientRect().toJSON(),
                    next: o.nextElementSibling.getBoundingClientRect().toJSON(),
                    hint: o.closest('li').getBoundingClientRect().toJSON(),
                    scroll: view.scrollWidth, width: view.clientWidth};
        }""")
        hint.scroll_into_view_if_needed()
        hint.screenshot(path=str(ARTIFACTS / "long-hint-narrow.png"))
        page.screenshot(path=str(ARTIFACTS / "long-hint-narrow-page.png"))
        assert box["cell"]["width"] > 40, box  # a column, not a sliver
        assert box["text"]["right"] <= box["next"]["left"] + 0.5, box
        assert box["cell"]["right"] <= box["next"]["left"] + 0.5, box
        assert box["text"]["right"] <= box["hint"]["right"] + 0.5, box
        assert box["scroll"] <= box["width"], box


def test_notes_and_the_notebook_a_run_came_from(first_use, tmp_path):
    """The notes added through the run's controls and the notebook (JPY_SESSION_NAME) are in
    the run's API answer and in its view; a run from elsewhere has neither."""
    from playwright.sync_api import expect

    server, seeded = first_use
    status, _, run = server.call("GET", f"/autopilot/api/runs/{seeded.notebook}")
    assert status == 200
    assert run["notebook"] == NOTEBOOK_PATH
    assert [(n["iteration"], n["text"]) for n in run["notes"]] == [(1, t) for t in NOTES]
    status, _, other = server.call("GET", f"/autopilot/api/runs/{seeded.tie}")
    assert status == 200 and other["notebook"] is None and other["notes"] == []
    with _console(server, tmp_path / "profile") as page:
        view = _open(page, seeded.notebook)
        fact = _fact(view, "notebook")
        expect(fact).to_have_text(NOTEBOOK_PATH.rsplit("/", 1)[1])
        assert fact.get_attribute("title") == NOTEBOOK_PATH
        notes = view.locator(".ap-notes .ap-note")
        expect(notes).to_have_count(len(NOTES))
        for note, li in zip(NOTES, notes.all()):
            expect(li).to_have_text(f"after iteration 1: {note}")
        view.evaluate("v => v.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "notebook-header.png"))
        view.locator(".ap-notes").screenshot(path=str(ARTIFACTS / "notes.png"))

        view = _open(page, seeded.tie)
        expect(_fact(view, "notebook")).to_have_count(0)
        expect(view.locator(".ap-notes")).to_contain_text("No notes.")
