"""A screenshot of the panel in JupyterLab, in headless Chromium: the score curves and the
hints table render with the standard widget manager. The PNG goes to test-artifacts/."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from . import ROOT

CHROMIUM = os.environ.get("AUTOPILOT_CHROMIUM") or shutil.which("chromium") \
    or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOKEN = "autopilot-screenshot"
# Iteration 1 fails on the .detach() (NO_GRADIENT), iteration 2 removes it and trains, short of
# the target on raw features (METRIC_GAP): two points per curve and a hint row at the end.
CELLS = [
    "%load_ext autopilot_lab",
    '%%autopilot improve --data sklearn:breast_cancer --target "roc_auc>=0.995" --max-iters 2\n'
    "import torch\nfrom torch import nn\n\n\nclass TabularNet(nn.Module):\n"
    "    def __init__(self, n_features: int, n_outputs: int, hidden: int = 32):\n"
    "        super().__init__()\n        self.inp = nn.Linear(n_features, hidden)\n"
    "        self.out = nn.Sequential(nn.ReLU(), nn.Linear(hidden, n_outputs))\n\n"
    "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
    "        return self.out(self.inp(x).detach())\n",
]


def _requirements() -> None:
    if not CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    for module in ("jupyterlab", "playwright", "ipywidgets", "plotly"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install "
                                           "'autopilot-lab[notebook]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free port, its settings, data and store in tmp_path."""
    _requirements()
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    root = tmp_path / "work"
    root.mkdir()
    _notebook(root / "panel.ipynb")
    port = _free_port()
    env = {**os.environ, "AUTOPILOT_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         "--ip=127.0.0.1", "--allow-root", f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabServerApp.extension_manager=readonly"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("jupyter lab did not start:\n" + (tmp_path / "lab.log").read_text())
            time.sleep(0.5)
    yield url
    server.terminate()
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def _run_cell(page, cell, count: int) -> None:
    """Select the cell and run it with Shift+Enter until its prompt shows that it runs or ran:
    a key pressed while the kernel connection is still settling can be lost."""
    prompt = cell.locator(".jp-InputPrompt")
    for _ in range(3):
        prompt.click()
        page.keyboard.press("Shift+Enter")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if re.search(r"\[(\*|\d+)\]", prompt.inner_text()):
                return
            page.wait_for_timeout(250)
    raise AssertionError(f"JupyterLab did not run cell {count}: prompt {prompt.inner_text()!r}")


def test_panel_screenshot_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "panel_jupyterlab.png"
    shot.unlink(missing_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 2200})
        try:
            page = browser.new_page()
            page.goto(f"{lab}/lab/tree/panel.ipynb?token={TOKEN}")
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                                   timeout=90_000, state="attached")
            cells = page.locator(".jp-Notebook .jp-CodeCell")
            for i in range(len(CELLS)):
                _run_cell(page, cells.nth(i), i + 1)
            panel = page.locator(".autopilot-panel")
            panel.wait_for(timeout=90_000)
            # the run ends (two iterations) with the best candidate shown
            panel.get_by_text("Insert as new cell").wait_for(timeout=240_000)
            page.wait_for_selector(".autopilot-panel .js-plotly-plot .scatterlayer .trace",
                                   timeout=30_000)
            page.wait_for_timeout(1500)  # let plotly finish its transition
            panel.screenshot(path=str(shot))
            text = panel.inner_text()
            legend = page.locator(".autopilot-panel .legendtext").all_text_contents()
            traces = page.locator(".autopilot-panel .js-plotly-plot .scatterlayer .trace").count()
        finally:
            browser.close()
    assert shot.stat().st_size > 20_000
    assert {"static", "build", "trainability", "stability", "metric", "total"} <= set(legend)
    assert traces == 6
    for expected in ("Hints of the best candidate", "METRIC_GAP", "Continue", "Stop",
                     "Best: iteration"):
        assert expected in text
    # the run has ended: no agent comes next, so no Accept / Reject is offered any more
    assert "Hints the agent gets next" not in text and "Reject" not in text
