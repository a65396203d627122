"""The pipeline served on a Prefect server whose database is a real PostgreSQL server.

PostgreSQL is the server database for team use (deploy/compose.yaml; the SQLite server answers
"database is locked" under load, NOTES.md). Here Debian's PostgreSQL runs on 127.0.0.1 with a
fresh data directory, ``prefect server start`` migrates its schema into it, ``pdeflow serve``
serves the deployments, and one run of the ``pipeline`` deployment is created through the API as
the UI's "Run" button does. The run must complete, the server's API and the database's own
``flow_run`` table must both say so, and ``pdeflow verify`` must find the store intact.

Skipped, with the reason, where PostgreSQL is not installed (``.ci/install-services``).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.backends.services import Postgres, postgres_missing, postgres_server
from tests.cli_helpers import cli
from tests.conftest import TINY
from tests.e2e.prefect_server import api, prefect_server, server_env, stop_group

pytestmark = pytest.mark.skipif(postgres_missing() is not None, reason=str(postgres_missing()))

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_TIMEOUT_S = 300
STAGES = ("generate", "train", "reduce", "quantify")
STORE = "tiny"  # tests/configs/tiny.yaml's store, under this test's own runs directory


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    with postgres_server("prefect") as pg:
        yield pg


@contextlib.contextmanager
def _serving(base: str, home: Path, runs: Path) -> Iterator[subprocess.Popen]:
    """``pdeflow serve --config tiny.yaml`` until the ``pipeline`` deployment is READY."""
    log = home / "serve.log"
    # Poll for new runs every second, not every 10 s (Prefect's default).
    env = server_env(
        home,
        PREFECT_API_URL=f"{base}/api",
        PDEFLOW_RUNS_DIR=str(runs),
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )
    cmd = [sys.executable, "-m", "pdeflow.flows.cli", "serve", "--config", str(TINY)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while not any(
            d["name"] == "pipeline" and d["status"] == "READY"
            for d in api(base, "/deployments/filter", {})
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"pdeflow serve not ready:\n{log.read_text()}")
            time.sleep(0.5)
        yield proc
    finally:
        stop_group(proc, grace=30)


def _run_to_end(base: str, serve: subprocess.Popen, log: Path) -> dict:
    """Create a run of the ``pipeline`` deployment (its served parameters); wait for its end."""
    (dep,) = api(base, "/deployments/filter", {"deployments": {"name": {"any_": ["pipeline"]}}})
    run = api(base, f"/deployments/{dep['id']}/create_flow_run", {})
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while run["state_type"] not in TERMINAL:
        if serve.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"run {run['state_type']} when serving stopped:\n{log.read_text()}"
            )
        time.sleep(1)
        run = api(base, f"/flow_runs/{run['id']}")
    # The API says COMPLETED before the flow-run process has exited; stopping the runner now
    # would cancel it. Let it end first.
    _, alive = psutil.wait_procs(psutil.Process(serve.pid).children(), timeout=60)
    assert not alive, f"flow-run processes still running:\n{log.read_text()}"
    return run


def test_pipeline_served_on_a_postgres_backed_server_completes(tmp_path, postgres):
    home, runs = tmp_path / "server", tmp_path / "runs"
    db = {"PREFECT_API_DATABASE_CONNECTION_URL": postgres.url}
    with prefect_server(home, "--no-ui", **db) as base:
        assert api(base, "/admin/version")
        with _serving(base, home, runs) as serve:
            run = _run_to_end(base, serve, home / "serve.log")
        # Read after serving stopped: stopping must not have changed what the run left.
        run = api(base, f"/flow_runs/{run['id']}")
        log = (home / "serve.log").read_text()
        assert run["state_type"] == "COMPLETED", f"{run['state']}\n{log[-4000:]}"
        assert run["parameters"]["config"]["store"] == STORE

    # What the API served came from PostgreSQL: the row is there, in its final state.
    rows = postgres.query(f"SELECT state_type, name FROM flow_run WHERE id = '{run['id']}'")
    assert rows == [["COMPLETED", run["name"]]]
    verdict = json.loads(cli("verify", "--json", str(runs / STORE), timeout=120).stdout)
    assert verdict["ok"] and verdict["blocks"]["complete"] == verdict["blocks"]["total"] > 0
    # infer runs on its own, on observations: the pipeline leaves it missing.
    verdicts = {s: v["verdict"] for s, v in verdict["stages"].items()}
    assert verdicts == {**dict.fromkeys(STAGES, "ok"), "infer": "missing"}
