"""Shared fixtures: an isolated runs directory and Prefect home, one Dask cluster and one Prefect
server for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

from pdeflow.tasks.environment import configure_environment

# Before any test module imports torch or Prefect (OMP_WAIT_POLICY, telemetry off, ...).
configure_environment()

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """Runs and Prefect state go to temporary directories, never the user's."""
    base = tmp_path_factory.mktemp("pdeflow")
    saved = {k: os.environ.get(k) for k in ("PDEFLOW_RUNS_DIR", "PREFECT_HOME")}
    os.environ["PDEFLOW_RUNS_DIR"] = str(base / "runs")
    os.environ["PREFECT_HOME"] = str(base / "prefect")
    yield base
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def runs_dir() -> Path:
    return Path(os.environ["PDEFLOW_RUNS_DIR"])


@pytest.fixture(scope="session")
def client():
    """One local Dask cluster for the session: two single-threaded workers under nannies (a
    worker killed by a test is restarted, as in production)."""
    from distributed import Client, LocalCluster

    from pdeflow.tasks.runtime import use_worker_defaults

    use_worker_defaults()  # workers started as pdeflow starts its own
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc,
        Client(lc) as c,
    ):
        yield c


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect server for the session (``prefect_test_harness``). CLI subprocesses reach it
    through PREFECT_API_URL instead of starting an ephemeral server each (7-17 s)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        saved = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
        try:
            yield PREFECT_API_URL.value()
        finally:
            if saved is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = saved


# The slowest test files run first: `make test` gives pytest-xdist whole files in collection
# order, and a slow file collected late ran alone at the end while the other process idled
# (the crash-and-Retry browser test, 160 s, ended a 14 min 49 s CI run). Longest first keeps
# both processes busy to the end. Times from `--durations` in CI; a file missing here runs in
# its alphabetical place. pytest-xdist would then hand out the files with the most tests first,
# which sends the two browser files of one and three tests (crash-and-Retry, the UI form) out
# late, likely side by side: in one CI run they took 345 s and 291 s (alone: 157 s and 90 s)
# and the run 16 min 15 s. The Makefile passes --no-loadscope-reorder so this order holds, and
# the UI test is ranked to start once the crash-and-Retry test, on the other process, is done.
SLOW_FIRST = (
    "tests/e2e/test_crash_retry.py",  # 162 s
    "tests/test_cluster_address.py",  # 60 s
    "tests/test_schedules.py",  # 85 s
    "tests/backends/test_postgres.py",  # 70 s
    "tests/backends/test_slurm.py",  # 65 s
    # Each process starts with two files and takes the next when one is left: the UI test
    # comes sixth, so it starts after the other process's crash-and-Retry test is done.
    "tests/e2e/test_ui.py",  # 84 s + 25 s
    "tests/test_campaign.py",  # 70 s
    "tests/test_infer.py",  # 60 s
    "tests/faults/test_resume.py",  # 56 + 35 + 22 s
    "tests/faults/test_processes.py",
    "tests/test_cli_progress.py",
    "tests/faults/test_corruption.py",
    "tests/test_pipeline.py",
    "tests/test_reduce_methods.py",
    "tests/test_pipeline_2d.py",
    "tests/test_pipeline_nd.py",
    "tests/test_serve.py",
    "tests/test_train_units.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
