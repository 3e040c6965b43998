"""The console end to end: JupyterLab on 127.0.0.1 in Debian's headless Chromium (driven by
Playwright, no browser download) shows the runs a test wrote, opens one from the keyboard,
and shows its hints, score charts and code diff in the light and the dark theme. Screenshots
go to test-artifacts/console/. Also: pip installed both halves of the extension, enabled."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from . import ARTIFACTS, TOKEN, Server, seed_runs

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


@pytest.fixture
def lab(tmp_path):
    if not CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    for module in ("jupyterlab", "playwright"):
        pytest.importorskip(module, reason="pip install 'autopilot-lab[console]'")
    home = tmp_path / "home"
    seeded = seed_runs(home)
    root = tmp_path / "root"
    root.mkdir()
    server = Server("jupyterlab", tmp_path, home, root, "--LabApp.news_url=",
                    "--LabServerApp.extension_manager=readonly",
                    "--LabApp.expose_app_in_browser=True")
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
