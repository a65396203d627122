"""The Prefect UI drives a pdeflow run: pick a deployment, fill its form, run, read the artifacts.

A real ``prefect server start`` (127.0.0.1, own PREFECT_HOME), ``pdeflow serve`` of the tiny
config, and headless Chromium. Skipped where Chromium, chromedriver or selenium are missing;
``make e2e`` installs them. Screenshots of every step go to ``$E2E_OUT`` (``make e2e``:
``e2e-out/``) or the pytest temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from pdeflow.flows.automations import AUTOMATION_NAME
from pdeflow.storage import RunStore
from pdeflow.tasks.sampling import DESIGNS
from tests.conftest import TINY
from tests.e2e.browser import Browser, missing_browser
from tests.e2e.prefect_server import (
    STARTUP_TIMEOUT_S,
    api,
    free_port,
    pdeflow_serve,
    prefect_server,
    server_env,
    stop_group,
    wait_healthy,
)

REASON = missing_browser()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

STORE = "ui-e2e"  # the store name typed into the form; the served default is 'tiny'
EPOCHS = 3  # typed into train.epochs; the served default is 2
DEPLOYMENTS = {"generate", "train", "reduce", "quantify", "infer", "pipeline", "campaign"}
# The tiny pipeline takes 1-3 min on 2 idle cores; loaded machines and cold imports add minutes.
RUN_TIMEOUT_S = 900
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    if os.environ.get("E2E_OUT"):
        return Path(os.environ["E2E_OUT"]).resolve()
    return tmp_path_factory.mktemp("e2e-screenshots")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    runs = base / "runs"
    with (
        prefect_server(base / "prefect") as url,
        pdeflow_serve(
            url, base / "prefect", runs, "--config", str(TINY), names=DEPLOYMENTS
        ) as serving,
    ):
        yield url, runs, serving.pid


@pytest.fixture(scope="module")
def browser(out_dir):
    b = Browser(out_dir)
    yield b
    b.close()


def _wait_final(url: str, run_id: str) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = api(url, f"/flow_runs/{run_id}")
        if run["state"]["type"] in FINAL:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"flow run {run_id} unfinished after {RUN_TIMEOUT_S} s: {run}")
        time.sleep(2)


def test_serve_listens_on_loopback_only(stack):
    *_, pid = stack
    process = psutil.Process(pid)
    listening = [
        (p.pid, c.laddr)
        for p in (process, *process.children(recursive=True))
        # psutil < 6 names it connections().
        for c in (getattr(p, "net_connections", None) or p.connections)(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    # Prefect's runner keeps one token-authenticated control channel on loopback for the flow
    # runs it starts (prefect/runner/_control_channel.py); nothing may listen beyond it.
    assert len(listening) <= 1
    assert all(addr.ip == "127.0.0.1" for _, addr in listening), listening


def test_ui_form_runs_pipeline_and_shows_artifacts(stack, browser):
    url, runs, _ = stack
    driver = browser.driver
    with browser.step("deployments"):
        driver.get(f"{url}/deployments")
        browser.clickable("//a[normalize-space()='pipeline']")
        assert {"generate", "train", "reduce", "quantify"} <= set(browser.text().split())
    with browser.step("pipeline-deployment"):
        browser.click_text("pipeline", tag="a")
        browser.clickable("//button[normalize-space()='Run']")
    with browser.step("custom-run-form"):
        browser.click_text("Run", tag="button")
        browser.click_text("Custom run")
        # Prefilled from the served config, with each field's description, range and dropdown.
        assert browser.form_field("Epochs (Optional)").get_attribute("value") == "2"
        design = browser.form_field("Design (Optional)", "select")
        options = [o.get_attribute("value") for o in design.find_elements("tag name", "option")]
        assert options == list(DESIGNS)
        store = browser.form_field("Store (Optional)", "textarea")
        assert store.get_attribute("value") == "tiny"
        assert "Store name under the runs directory" in browser.text()
        # Top of the page: breadcrumbs, run name, then the first fields.
        browser.scroll_to(browser.visible("//*[normalize-space()='Run Name']"))
    with browser.step("form-filled"):
        browser.fill("Store (Optional)", STORE, "textarea")
        browser.fill("Epochs (Optional)", str(EPOCHS))
    with browser.step("run-submitted"):
        browser.click_text("Submit", tag="button")
        # The UI goes back to the deployment, whose run list links the new run.
        browser.clickable("//a[contains(@href, '/runs/flow-run/')]").click()
        browser.wait().until(lambda d: "/runs/flow-run/" in d.current_url)
        run_id = re.search(r"/flow-run/([0-9a-f-]{36})", driver.current_url).group(1)
    with browser.step("run-completed"):
        run = _wait_final(url, run_id)
        serve_log = runs.parent / "prefect" / "serve.log"
        assert run["state"]["type"] == "COMPLETED", f"{run['state']}\n{serve_log.read_text()}"
        driver.refresh()
        browser.visible("//*[normalize-space()='Completed']", timeout=120)
        # The run's INFO logs reach the UI (pdeflow's CLI default for `run` is WARNING).
        browser.visible("//*[contains(normalize-space(), 'Beginning flow run')]", timeout=60)
    # The form's values, not the served defaults, drove the run.
    config = run["parameters"]["config"]
    assert config["store"] == STORE and config["train"]["epochs"] == EPOCHS
    assert RunStore(runs / STORE).record("train").config["train"]["epochs"] == EPOCHS
    assert not (runs / "tiny").exists()
    with browser.step("artifacts"):
        browser.click_text("Artifacts")
        for what in ("metrics", "report"):
            browser.visible(f"//*[normalize-space()='pdeflow-{STORE}-{what}']", timeout=60)
    # The stage-4 table belongs to the quantify task run of this flow run.
    artifacts = api(url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    assert {a["key"] for a in artifacts} >= {
        f"pdeflow-{STORE}-{what}" for what in ("metrics", "report", "uq-metrics")
    }
    with browser.step("metrics-table"):
        browser.click_text(f"pdeflow-{STORE}-metrics")
        browser.wait().until(lambda d: "/artifacts/artifact/" in d.current_url)
        browser.visible("//table//*[normalize-space()='metric']", timeout=60)
        assert "reduce.rom_rel_error_mean" in browser.text()


def test_server_start_on_any_port_gives_a_ui_that_reaches_its_own_api(tmp_path, browser):
    """`pdeflow server start --port P` in a shell where a client URL for port 4200 is exported:
    the UI must call port P (plain `prefect server start --port P` calls 4200)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    code = f"from pdeflow.flows.server import start; raise SystemExit(start(port={port}))"
    env = server_env(tmp_path / "home", PREFECT_API_URL="http://127.0.0.1:4200/api")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        wait_healthy(url, proc, log, STARTUP_TIMEOUT_S)
        # The automation is created once the server answers; the page does not poll for it.
        deadline = time.monotonic() + 120
        while "crash detection created" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.5)
        with urllib.request.urlopen(f"{url}/ui-settings", timeout=10) as resp:
            assert json.loads(resp.read())["api_url"] == f"{url}/api"
        with browser.step("server-start-automations"):
            browser.driver.get(f"{url}/automations")
            # Listed by the UI from its API: the crash detection `server start` created.
            browser.visible(f"//*[normalize-space()='{AUTOMATION_NAME}']", timeout=120)
            assert "Can't connect to Server API" not in browser.text()
    finally:
        stop_group(proc)
    assert f"export PREFECT_API_URL={url}/api" in log.read_text()
