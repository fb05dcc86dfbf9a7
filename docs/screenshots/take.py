"""Screenshots of the MLflow UI as a user sees a job: the experiment, the run tree, a run with its logged model.

    python docs/screenshots/take.py [--run-dir DIR] [--out docs/screenshots]

Runs a small A2D job (``jobs/a2d.py`` with tiny settings) into a fresh SQLite store, starts
``mlflow ui`` on 127.0.0.1, and takes headless-Chromium screenshots of it with Playwright
(``pip install playwright``: its driver only; the browser is Debian's ``chromium`` package at
``/usr/bin/chromium``, nothing is downloaded) of:

* ``experiment.png``: the experiment, opened in MLflow's model-training view, its runs listed;
* ``run_tree.png``: the parent run expanded to its child runs (one per step);
* ``student_run.png``: the student's run page, with its logged model listed;
* ``logged_model.png``: the logged model's page, linked back to the run that produced it.

Pages are opened with ``?workflowType=machine_learning``: MLflow 3.17's UI chooses between its
GenAI and model-training views from that (or the user's last choice), not from the experiment.
Prints one JSON object: the files written and the ids shown. Not a test: the suite checks the
same facts through MLflow's API (tests/test_a2d_job.py).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
#: No background networking: this machine has no internet, and Chromium's own connections are refused.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
TINY = ["--synthetic-size", "24", "--teacher-epochs", "1", "--epochs", "2", "--vocab-size", "500", "--quiet",
        "--json", "--experiment", "a2d-demo", "--run-name", "a2d demo"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"mlflow ui did not answer at {url} within {timeout:.0f} s")


def screenshot(page: Any, url: str, path: Path, expand_first_run: bool = False) -> None:
    """Open ``url``, close the assistant panel, optionally expand the first run's children, save the page."""
    page.goto(url)
    page.wait_for_timeout(8000)  # the single-page app renders after its data arrives (it polls: never idle)
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()
    if expand_first_run:
        page.locator("[col-id='attributes.`Run Name`'] button").first.click()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(path), full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", help="where the job runs (default: a temporary folder)")
    parser.add_argument("--out", default=str(Path(__file__).parent), help="folder for the PNG files")
    args = parser.parse_args()
    work = Path(args.run_dir or tempfile.mkdtemp(prefix="kd-shots-"))
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work}/mlflow.db"
    job = subprocess.run([sys.executable, str(ROOT / "jobs/a2d.py"), *TINY, "--run-dir", str(work / "run"),
                          "--tracking-uri", uri], check=True, capture_output=True, text=True, cwd=ROOT)
    summary = json.loads(job.stdout.strip().splitlines()[-1])  # --json: the summary is the last line

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = client.get_run(summary["mlflow_run_id"])
    experiment = parent.info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    student = next(r for r in children if r.info.run_name == "student")
    model_id = student.outputs.model_outputs[0].model_id

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    view = "workflowType=machine_learning"  # MLflow 3.17's UI picks its view from this (docs/mlflow.md)
    pages = {
        "experiment.png": f"{base}/#/experiments/{experiment}?{view}",
        "run_tree.png": f"{base}/#/experiments/{experiment}/runs?{view}",
        "student_run.png": f"{base}/#/experiments/{experiment}/runs/{student.info.run_id}?{view}",
        "logged_model.png": f"{base}/#/experiments/{experiment}/models/{model_id}?{view}",
    }
    try:
        wait_for_server(f"{base}/health")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            for name, url in pages.items():
                screenshot(page, url, out / name, expand_first_run=name == "run_tree.png")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps({"files": [str(out / name) for name in pages], "pages": pages, "experiment_id": experiment,
                      "parent_run": parent.info.run_id, "student_run": student.info.run_id, "model_id": model_id}))


if __name__ == "__main__":
    main()
