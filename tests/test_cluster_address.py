"""The pipeline on a separately started Dask cluster (``cluster.kind: address``) equals a local run.

A scheduler and two workers are started with the ``dask`` command line on 127.0.0.1, as a user
would start them on other machines; the CLI runs the tiny pipeline against them. The same four
stages run again in this process on the test session's LocalCluster (two single-threaded
workers, as tiny.yaml's). Both runs must write the same data, value for value.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import xarray as xr
from distributed import Client

from pdeflow.storage import RunStore
from pdeflow.tasks.config import load_config
from pdeflow.tasks.stages import run_stage
from pdeflow.tasks.stages.status import summary
from tests.cli_helpers import cli
from tests.conftest import ROOT, TINY
from tests.stage_helpers import block_files

N_WORKERS = 2  # as many as tiny.yaml's LocalCluster, so both runs spread blocks alike
DASK = [sys.executable, "-m", "dask"]


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    """Start ``dask ARGS`` in its own process group, in the repository root (workers import
    the project from there), logging to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            [*DASK, *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ.copy(),
        )


def _stop(procs: list[subprocess.Popen]) -> None:
    # Workers first, so none of them logs a lost scheduler; the whole group takes the nanny's
    # child process with it.
    for proc in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for(path: Path, procs: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file() or not path.read_text().strip():
        dead = [(p, log) for p, log in zip(procs, logs, strict=True) if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            text = "\n".join(log.read_text() for log in logs)
            raise AssertionError(f"the Dask scheduler did not start:\n{text}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def scheduler_address(tmp_path_factory) -> Iterator[str]:
    """A scheduler and ``N_WORKERS`` single-threaded workers on 127.0.0.1; killed at the end."""
    base = tmp_path_factory.mktemp("dask-cluster")
    scheduler_file = base / "scheduler.json"
    logs = [base / "scheduler.log"]
    procs = [
        _spawn(
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"]
            + ["--scheduler-file", str(scheduler_file)],
            logs[0],
        )
    ]
    try:
        _wait_for(scheduler_file, procs, logs, timeout=60)
        for i in range(N_WORKERS):
            logs.append(base / f"worker-{i}.log")
            worker = ["worker", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1"]
            worker += ["--nthreads", "1", "--nworkers", "1", "--memory-limit", "0"]
            procs.append(_spawn([*worker, "--no-dashboard"], logs[-1]))
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout=30) as client:
            client.wait_for_workers(N_WORKERS, timeout=60)
        yield address
    finally:
        _stop(procs)


def _run(store: str, *overrides: str) -> float:
    t0 = time.perf_counter()
    cli("run", "pipeline", "--config", str(TINY), "--set", f"store={store}", *overrides)
    return time.perf_counter() - t0


def test_address_cluster_matches_local_cluster(scheduler_address, runs_dir, prefect_api, client):
    address_s = _run(
        "on-address",
        "--set",
        "cluster.kind=address",
        "--set",
        f"cluster.address={scheduler_address}",
    )
    with Client(scheduler_address, timeout=30) as remote_client:
        # A lambda travels by value: the workers cannot import this test module.
        executed = remote_client.run(lambda dask_worker: dask_worker.state.executed_count)
    t0 = time.perf_counter()
    local_cfg = load_config(TINY, ["store=on-local", "cluster.kind=local"])
    for stage in ("generate", "train", "reduce", "quantify"):
        run_stage(stage, local_cfg, client=client)
    local_s = time.perf_counter() - t0
    print(
        f"pipeline on kind address: {address_s:.1f} s, stages on a local cluster: {local_s:.1f} s"
    )
    remote, local = runs_dir / "on-address", runs_dir / "on-local"

    # The blocks really ran on the started workers, not on a cluster of the CLI's own.
    n_blocks = len(block_files(remote))
    assert len(executed) == N_WORKERS and sum(executed.values()) >= n_blocks

    # The solver runs on the workers: the same blocks must come out bit for bit.
    xr.testing.assert_equal(xr.open_zarr(remote), xr.open_zarr(local))
    assert block_files(remote) == block_files(local) and n_blocks == 4

    xr.testing.assert_equal(
        xr.open_zarr(remote, group="reduce"), xr.open_zarr(local, group="reduce")
    )
    # Quantify evaluates the surrogate in float32 in the calling process (the CLI's, or this
    # test's), where torch's thread count sets the order of its sums: those fields differ by
    # about 1e-7 of their largest value (measured: 1.2e-7 at most); everything else is equal.
    xr.testing.assert_allclose(
        xr.open_zarr(remote, group="quantify"), xr.open_zarr(local, group="quantify"), rtol=1e-6
    )
    ours, theirs = summary(RunStore(remote))["metrics"], summary(RunStore(local))["metrics"]
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert value == pytest.approx(theirs[key], rel=1e-6, abs=1e-12), key
        if not key.startswith("quantify."):
            assert value == theirs[key], key
