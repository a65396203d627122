"""Stage 1 on a real Dask cluster: values, blow-up reporting, kill and resume."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from distributed import Client, LocalCluster
from pdeflow.storage import RunStore
from pdeflow.storage.manifest import BlockManifest
from pdeflow.tasks.config import load_config
from pdeflow.tasks.generate import GenerationError, generate, solve_parameters, to_physical, to_unit

from tests.cli_helpers import cli, kill_when
from tests.conftest import TINY


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc,
        Client(lc) as c,
    ):
        yield c


def test_store_holds_the_solver_output_and_reruns_compute_nothing(client):
    cfg = load_config(TINY, ["store=gen-values"])
    first = generate(cfg, client)
    assert first["blocks_computed"] == cfg.generate.n_blocks
    ds = xr.open_zarr(RunStore.named(cfg.store).path)
    params = np.stack([ds[name].values for name in cfg.generate.parameter_names], axis=1)
    # Any sample regenerates alone from its stored parameters. Alone vs inside a batch the
    # float32 FFT kernels round differently (seen: 1 ulp, 6e-8); 1e-6 allows ~16 ulps at |u|~1
    # over the 100 steps, far below any physical difference.
    for i in (0, 37, 63):
        seed = ds.seed.values[i : i + 1]
        alone = solve_parameters(cfg.generate, params[i : i + 1], seed)[0, :, 0]
        np.testing.assert_allclose(alone, ds.u.values[i], rtol=0, atol=1e-6)
    np.testing.assert_allclose(to_physical(cfg.generate, to_unit(cfg.generate, params)), params)
    assert ds.u.dims == ("sample", "time", "x") and ds.attrs["config"]["n_samples"] == 64
    assert "Burgers" in ds.attrs["dataset_card"] and ds.attrs["fields"] == ["u"]
    assert set(ds.attrs["normalization"]["u"]) == {"mean", "std"}
    assert ds.attrs["dataset_card"] and ds.time.values[-1] == cfg.generate.t_end
    assert sorted(np.unique(ds.split.values)) == [0, 1, 2, 3]
    assert generate(cfg, client)["blocks_computed"] == 0


def test_blow_up_fails_its_block_and_names_samples(client):
    # A CFL guard of 0 cannot be set from the config, so provoke a real blow-up: an amplitude
    # far beyond what dt was validated for is impossible too (validation refuses it). Instead
    # corrupt one stored parameter to NaN: the solver must report that sample, not store NaNs.
    import zarr

    cfg = load_config(TINY, ["store=gen-blowup"])
    store = RunStore.named(cfg.store)
    from pdeflow.tasks.datasets import create_store

    create_store(store, cfg.generate)
    zarr.open_array(str(store.path), path="a2", mode="r+")[21] = np.nan
    with pytest.raises(GenerationError) as err:
        generate(cfg, client)
    assert "block 1" in str(err.value) and "[21]" in str(err.value)
    manifest = BlockManifest(store.path)
    assert manifest.missing() == [1] and manifest.n_complete() == cfg.generate.n_blocks - 1
    assert store.record("generate")["status"] == "running"


SLOW = [
    "generate.n_samples=64",
    "generate.block_size=8",
    "generate.chunk_size=8",
    "generate.n_x=512",
    "generate.n_frames=101",
    "generate.t_end=3.0",
    "generate.dt=0.005",
]


def test_sigkill_then_rerun_computes_only_missing_blocks(client, runs_dir):
    ref = load_config(TINY, ["store=gen-reference", *SLOW])
    generate(ref, client)
    name = "gen-killed"
    path = runs_dir / name
    manifest = BlockManifest(path)

    def half_done() -> bool:
        try:
            return 2 <= manifest.n_complete() <= 5
        except Exception:  # the store is still being created
            return False

    kill_when(
        [
            "run",
            "generate",
            "--config",
            str(TINY),
            "--set",
            f"store={name}",
            *sum((["--set", s] for s in SLOW), []),
        ],
        half_done,
    )
    done_before = manifest.n_complete()
    assert 2 <= done_before < 8
    assert RunStore(path).record("generate")["status"] == "running"
    cli(
        "run",
        "generate",
        "--config",
        str(TINY),
        "--set",
        f"store={name}",
        *sum((["--set", s] for s in SLOW), []),
    )
    record = RunStore(path).record("generate")
    assert record["status"] == "complete"
    assert record["blocks_computed_last_run"] == 8 - done_before
    killed = xr.open_zarr(path).u.values
    np.testing.assert_array_equal(killed, xr.open_zarr(runs_dir / "gen-reference").u.values)
    np.testing.assert_array_equal(
        BlockManifest(path).checksums(), BlockManifest(runs_dir / "gen-reference").checksums()
    )
