"""The user's sentence in the real UI: a run whose process died shows Crashed; Retry resumes it.

A real ``prefect server start`` and ``pdeflow serve`` (heartbeat every 30 s), headless Chromium:
1. the pipeline is started from its deployment's form with a store and a sample count typed in;
2. ``pdeflow serve``'s whole process group (the flow run and its Dask workers) is SIGKILLed
   while generation is half done, as a crashed machine, an OOM kill or a pre-empted job would;
3. serve is restarted, and the run shows Crashed (the heartbeat automation);
4. the Retry button of the run's page is clicked;
5. the run completes.
Then only the missing blocks were computed, no finished chunk file was rewritten, the task run
the dead attempt left Running is Crashed, and the data equal an uninterrupted run of the same
config bit for bit. Screenshots of every step go to ``$E2E_OUT/crash-retry`` or the pytest
temporary directory.

Budget: Prefect refuses a heartbeat under 30 s (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, ge=30),
so the test uses 30 s, and the automation's window is pdeflow's own, two periods (60 s): the run
is Crashed 30-60 s after the kill. The rest is the tiny config with a small time step (2e-4) that
makes each of the 8 blocks take most of a second, and the process group is stopped (SIGSTOP) as
soon as the first block is complete, then killed: the 7 others, two at a time, leave seconds for
that (with 4 blocks and a kill at 2, a loaded CI machine once saw all 4 complete first).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pdeflow.flows.automations import AUTOMATION_NAME, MISSED_PERIODS
from pdeflow.storage import RunStore
from pdeflow.tasks.config import PipelineConfig
from tests.conftest import TINY
from tests.e2e.browser import Browser, missing_browser
from tests.e2e.prefect_server import api, pdeflow_serve, prefect_server
from tests.stage_helpers import block_files, complete_blocks, generate

REASON = missing_browser()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

HEARTBEAT_S = 30  # Prefect's minimum
STORE = "crash-e2e"  # typed into the form; the served default is 'tiny'
# n_samples typed into the form (served: 64), in 8 blocks; quantify's conformal bands need 9
# calibration samples (15 %) at alpha=0.1, so no fewer than 64.
N_SAMPLES, BLOCK = 128, 16
N_BLOCKS = N_SAMPLES // BLOCK
SLOW = ["--set", f"generate.block_size={BLOCK}", "--set", "generate.dt=0.0002"]
DEPLOYMENTS = {"pipeline"}
RUN_TIMEOUT_S = 900
# Crashed comes 1-2 heartbeat periods after the kill, plus the server's proactive evaluation
# (every 5 s); a loaded machine delays events further.
CRASH_TIMEOUT_S = MISSED_PERIODS * HEARTBEAT_S + 120
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    if os.environ.get("E2E_OUT"):
        return Path(os.environ["E2E_OUT"]).resolve() / "crash-retry"
    return tmp_path_factory.mktemp("e2e-crash-screenshots")


@pytest.fixture(scope="module")
def browser(out_dir):
    b = Browser(out_dir)
    yield b
    b.close()


def _serve(url: str, home: Path, runs: Path, log_name: str):
    return pdeflow_serve(
        url,
        home,
        runs,
        "--config",
        str(TINY),
        *SLOW,
        names=DEPLOYMENTS,
        log_name=log_name,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_S),
    )


def _state(url: str, run_id: str) -> str:
    return api(url, f"/flow_runs/{run_id}")["state"]["type"]


def _wait_state(url: str, run_id: str, wanted: set[str], timeout: float, log: Path) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = api(url, f"/flow_runs/{run_id}")
        if run["state"]["type"] in wanted:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(
                f"run {run_id} not {wanted} after {timeout:.0f} s: {run['state']}"
                f"\n{log.read_text() if log.exists() else ''}"
            )
        time.sleep(1)


def _n_complete(path: Path) -> int:
    """Complete blocks of the store at ``path``; 0 while it is still being created."""
    try:
        return len(complete_blocks(path))
    except Exception:
        return 0


def _kill_mid_generation(serving, path: Path, url: str, run_id: str) -> dict[int, dict]:
    """SIGKILL serve's process group once a block is complete; the finished blocks' chunk
    files with their inode and mtime."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while _n_complete(path) < 1:
        assert _state(url, run_id) not in FINAL, "the run ended before the kill"
        assert time.monotonic() < deadline, "generation never completed a block"
        time.sleep(0.05)
    os.killpg(serving.pid, signal.SIGSTOP)  # nothing completes between the count and the kill
    time.sleep(0.05)
    os.killpg(serving.pid, signal.SIGKILL)
    serving.wait()
    done = RunStore(path).complete_blocks()
    assert 1 <= len(done) < N_BLOCKS, sorted(done)
    return {
        block: {f: (os.stat(path / f).st_ino, os.stat(path / f).st_mtime_ns) for f in entry.files}
        for block, entry in done.items()
    }


def _start_from_form(browser: Browser, url: str) -> str:
    driver = browser.driver
    with browser.step("pipeline-deployment"):
        driver.get(f"{url}/deployments")
        browser.click_text("pipeline", tag="a")
        browser.clickable("//button[normalize-space()='Run']")
    with browser.step("form-filled"):
        browser.click_text("Run", tag="button")
        browser.click_text("Custom run")
        browser.fill("Store (Optional)", STORE, "textarea")
        browser.fill("N Samples (Optional)", str(N_SAMPLES))
    with browser.step("run-submitted"):
        browser.click_text("Submit", tag="button")
        browser.clickable("//a[contains(@href, '/runs/flow-run/')]").click()
        browser.wait().until(lambda d: "/runs/flow-run/" in d.current_url)
    return re.search(r"/flow-run/([0-9a-f-]{36})", driver.current_url).group(1)


def _retry_from_ui(browser: Browser, url: str, run_id: str) -> None:
    with browser.step("crashed"):
        browser.driver.refresh()
        browser.visible("//*[normalize-space()='Crashed']", timeout=60)
    with browser.step("retry-dialog"):
        browser.click_text("Retry", tag="button")
        # The dialog "Retry <run name>?" has Retry and Close in its footer.
        confirm = browser.clickable(
            "//*[contains(@class, 'p-modal__footer')]//button[normalize-space()='Retry']"
        )
    with browser.step("retried"):
        confirm.click()
        # The UI proposes AwaitingRetry; the restarted serve then picks the run up.
        browser.wait().until(lambda _: _state(url, run_id) != "CRASHED")
        browser.driver.refresh()
        browser.visible("//*[normalize-space()='AwaitingRetry' or normalize-space()='Running']")


def _task_runs(url: str, run_id: str) -> list[dict]:
    body = {"flow_runs": {"id": {"any_": [run_id]}}}
    return api(url, "/task_runs/filter", body)


def _assert_dead_attempt_crashed(url: str, run_id: str) -> None:
    """No task run stays Running: the one the killed attempt left is Crashed (serve's watcher
    checks every 10 s)."""
    deadline = time.monotonic() + 60
    while True:
        tasks = _task_runs(url, run_id)
        if not any(t["state"]["type"] in ("RUNNING", "PENDING") for t in tasks):
            break
        assert time.monotonic() < deadline, [(t["name"], t["state"]["type"]) for t in tasks]
        time.sleep(1)
    first = [t for t in tasks if t["flow_run_run_count"] == 1]
    assert first and first[0]["state"]["type"] == "CRASHED", first
    assert first[0]["name"].startswith("generate")


def _assert_same_data(path: Path, reference: Path) -> None:
    ds, ref = xr.open_zarr(path), xr.open_zarr(reference)
    assert set(ds.variables) == set(ref.variables)
    for name in ref.variables:
        np.testing.assert_array_equal(ds[name].values, ref[name].values, err_msg=name)
    assert block_files(path) == block_files(reference)


def test_killed_run_shows_crashed_and_retry_from_the_ui_resumes_it(
    tmp_path_factory, browser, client
):
    base = tmp_path_factory.mktemp("crash-e2e")
    home, runs = base / "prefect", base / "runs"
    path = runs / STORE
    with prefect_server(home) as url:
        with _serve(url, home, runs, "serve-1.log") as serving:
            run_id = _start_from_form(browser, url)
            finished = _kill_mid_generation(serving, path, url, run_id)
        killed_at = time.monotonic()
        assert _state(url, run_id) == "RUNNING"  # what users saw for ever before
        with _serve(url, home, runs, "serve-2.log"):
            run = _wait_state(url, run_id, {"CRASHED"}, CRASH_TIMEOUT_S, home / "serve-2.log")
            crashed_after = time.monotonic() - killed_at
            print(f"\nCrashed {crashed_after:.0f} s after the kill (heartbeat {HEARTBEAT_S} s)")
            assert "No heartbeat" in run["state"]["message"], run["state"]
            _retry_from_ui(browser, url, run_id)
            run = _wait_state(url, run_id, FINAL - {"CRASHED"}, RUN_TIMEOUT_S, home / "serve-2.log")
            assert run["state"]["type"] == "COMPLETED", run["state"]
            assert run["run_count"] == 2
            with browser.step("completed"):
                browser.driver.refresh()
                browser.visible("//*[normalize-space()='Completed']", timeout=120)
            _assert_dead_attempt_crashed(url, run_id)
        automations = api(url, "/automations/filter", {})
        assert [a["name"] for a in automations].count(AUTOMATION_NAME) == 1  # two serve starts
    config = PipelineConfig.model_validate(run["parameters"]["config"])
    assert config.store == STORE and config.generate.n_samples == N_SAMPLES
    record = RunStore(path).record("generate")
    assert record.status == "complete"
    assert record.details["blocks_computed_last_run"] == N_BLOCKS - len(finished)
    for block, files in finished.items():
        for name, (inode, mtime) in files.items():
            stat = os.stat(path / name)
            assert (stat.st_ino, stat.st_mtime_ns) == (inode, mtime), f"block {block}: {name}"
    reference = config.model_copy(update={"store": "crash-e2e-reference"})
    generate(reference, client)
    _assert_same_data(path, RunStore.named(reference.store).path)
