"""The tiny pipeline on a real single-node Slurm through dask-jobqueue (``cluster.kind: slurm``).

munged, slurmctld and slurmd run on localhost from Debian's packages (NOTES.md's recipe, in a
temporary directory). ``pdeflow run pipeline`` builds a SLURMCluster from the config's
``cluster.slurm`` section, scales it adaptively from zero jobs, and every Dask task of the run
executes in a worker started by ``sbatch``. The generated data must equal, byte for byte, what a
local cluster generates from the same config.

The settings this test runs are those of ``deploy/slurm/pipeline.yaml`` with site values swapped
for this machine's; the test checks that the example uses no key it did not run.

Skipped, with the reason, where Slurm/munge are not installed (``.ci/install-services``) or the
tests do not run as root (slurmd starts jobs as their users).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from pdeflow.storage import RunStore
from pdeflow.tasks.config import load_config
from tests.backends.services import Slurm, slurm_cluster, slurm_missing
from tests.conftest import ROOT, TINY
from tests.stage_helpers import block_files, generate

pytestmark = pytest.mark.skipif(slurm_missing() is not None, reason=str(slurm_missing()))

SITE_EXAMPLE = ROOT / "deploy" / "slurm" / "pipeline.yaml"
STAGES = ("generate", "train", "reduce", "quantify")
RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def slurm() -> Iterator[Slurm]:
    # 2 CPUs: one job of two single-threaded workers, as on the 2-core machines of this project.
    with slurm_cluster(cpus=2, memory_mb=8000) as cluster:
        yield cluster


def slurm_settings(slurm: Slurm, work: Path) -> dict:
    """``cluster.slurm`` as this test runs it: one key for every key of the site example."""
    return {
        "queue": slurm.partition,
        "account": "pdeflow-test",  # no accounting database here: accepted, not checked
        "cores": 2,
        "memory": "4GB",
        "processes": 2,
        "walltime": "00:15:00",
        "job_extra_directives": ["--qos=normal", f"--output={work}/dask-worker-%j.out"],
        "job_script_prologue": ["export OMP_NUM_THREADS=1"],
        "local_directory": str(work / "scratch"),
        # The loopback interface: scheduler and workers reach each other on 127.0.0.1 only.
        "interface": "lo",
        "minimum_jobs": 0,
        "maximum_jobs": 1,
    }


def _key_paths(tree: dict, prefix: str = "") -> set[str]:
    """Every key of a nested mapping as a dotted path; lists are values, not nested keys."""
    paths = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict):
            paths |= _key_paths(value, f"{path}.")
    return paths


def _run_pipeline(slurm: Slurm, config: Path, runs: Path, work: Path) -> None:
    """``pdeflow run pipeline`` in ``work`` (where sbatch is called from), on this Slurm."""
    env = {**slurm.env, "PDEFLOW_RUNS_DIR": str(runs)}
    proc = subprocess.run(
        [sys.executable, "-m", "pdeflow.flows.cli", "run", "pipeline", "--config", str(config)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    if proc.returncode != 0:
        jobs = "\n".join(p.read_text()[-3000:] for p in work.glob("dask-worker-*.out"))
        ctld = (slurm.logs / "slurmctld.log").read_text()[-3000:]
        raise AssertionError(f"{proc.stdout}\n{proc.stderr}\n--- jobs:\n{jobs}\n--- ctld:\n{ctld}")


def _same_bytes(a: Path, b: Path) -> None:
    """Every variable of two stores' generated datasets holds the same bytes."""
    with xr.open_zarr(a) as da, xr.open_zarr(b) as db:
        assert set(da.variables) == set(db.variables)
        for name in da.variables:
            x, y = da[name].values, db[name].values
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert x.tobytes() == y.tobytes(), f"{name} differs"
        assert np.isfinite(da["u"].values).all()


def test_pipeline_on_slurm_equals_a_local_run(tmp_path, slurm, client):
    work, runs = tmp_path / "work", tmp_path / "runs"
    (work / "scratch").mkdir(parents=True)
    ran = yaml.safe_load(TINY.read_text())
    ran.update(store="on-slurm", cluster={"kind": "slurm", "slurm": slurm_settings(slurm, work)})
    config = tmp_path / "slurm.yaml"
    config.write_text(yaml.safe_dump(ran))
    site = yaml.safe_load(SITE_EXAMPLE.read_text())
    assert _key_paths(site) <= _key_paths(ran), "the site example uses keys this test never ran"
    assert set(site["cluster"]["slurm"]) == set(ran["cluster"]["slurm"])
    assert load_config(SITE_EXAMPLE).cluster.kind == "slurm"

    _run_pipeline(slurm, config, runs, work)

    # The work ran in Slurm jobs: each job's output shows its Dask workers.
    outputs = [p.read_text() for p in work.glob("dask-worker-*.out")]
    assert outputs and any("Start worker at" in text for text in outputs), outputs
    store = runs / "on-slurm"
    verdict = subprocess.run(
        [sys.executable, "-m", "pdeflow.flows.cli", "verify", str(store)],
        capture_output=True,
        text=True,
    )
    assert verdict.returncode == 0, verdict.stdout

    # The same config on the session's local cluster (this process's runs directory).
    local = load_config(config, ["store=slurm-local-reference", "cluster.kind=local"])
    generate(local, client)
    reference = RunStore.named(local.store).path
    assert block_files(store) == block_files(reference)  # every chunk file's size and CRC32
    _same_bytes(store, reference)
