"""A screenshot of the panel in JupyterLab and in Notebook 7, in headless Chromium: the score
curves and the hints table render with the standard widget manager. The PNGs go to
test-artifacts/. The run records the notebook it was started from (Jupyter Server gives the
kernel its path in JPY_SESSION_NAME), and the console's API names it."""

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
from typing import Any

import pytest

from . import ROOT

CHROMIUM = os.environ.get("AUTOPILOT_CHROMIUM") or shutil.which("chromium") \
    or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOKEN = "autopilot-screenshot"
# the server app, the URL path of the notebook in it, the screenshot's name
APPS = {"jupyterlab": ("lab/tree/panel.ipynb", "panel_jupyterlab.png"),
        "notebook": ("notebooks/panel.ipynb", "panel_notebook7.png")}
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


def _requirements(app: str) -> None:
    if not CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    for module in ("jupyterlab", "playwright", "ipywidgets", "plotly", app):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install "
                                           "'autopilot-lab[notebook]')")
    if app == "notebook":
        from importlib.metadata import version

        if int(version("notebook").split(".")[0]) < 7:
            pytest.skip(f"notebook {version('notebook')} is installed; this needs Notebook 7 "
                        "(pip install 'notebook>=7')")


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


@pytest.fixture(params=list(APPS))
def lab(request, tmp_path):
    """JupyterLab or Notebook 7 (``python -m notebook``) on a free port, the console's server
    extension enabled, its settings, data and store in tmp_path. Yields (app, url, notebook)."""
    app = request.param
    _requirements(app)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    config = tmp_path / "config"  # the console's API, so the test can ask it about the run
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {"autopilot_lab.jupyter": True}}}))
    root = tmp_path / "work"
    root.mkdir()
    _notebook(root / "panel.ipynb")
    port = _free_port()
    env = {**os.environ, "AUTOPILOT_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
           "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    env.pop("JPY_SESSION_NAME", None)  # only the server's kernel may name the notebook
    extra = ["--LabApp.news_url=", "--LabServerApp.extension_manager=readonly"] \
        if app == "jupyterlab" else []
    log = (tmp_path / f"{app}.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", app, "--no-browser", f"--port={port}",
         "--ip=127.0.0.1", "--allow-root", f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={root}", *extra],
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
                pytest.fail(f"{app} did not start:\n" + (tmp_path / f"{app}.log").read_text())
            time.sleep(0.5)
    yield app, url, root / "panel.ipynb"
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
    raise AssertionError(f"the page did not run cell {count}: prompt {prompt.inner_text()!r}")


def _api(url: str, path: str) -> Any:
    request = urllib.request.Request(f"{url}/autopilot/api/{path}",
                                     headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def test_panel_screenshot(lab, tmp_path):
    """In JupyterLab and in Notebook 7: the panel renders its curves and hints; the run names
    the notebook it came from."""
    from playwright.sync_api import sync_playwright

    app, url, notebook = lab
    where, name = APPS[app]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 2200})
        try:
            page = browser.new_page()
            page.goto(f"{url}/{where}?token={TOKEN}")
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
    # the kernel Jupyter Server started for panel.ipynb recorded it: the console names the
    # notebook, not a kernel id
    runs = _api(url, "runs")["runs"]
    assert len(runs) == 1, runs
    run = _api(url, f"runs/{runs[0]['id']}")
    assert run["notebook"] and Path(run["notebook"]).resolve() == notebook.resolve(), run
