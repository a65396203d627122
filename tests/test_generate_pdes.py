"""The generate stage over the whole PDE registry, user simulators, presets, export, extension."""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
import xarray as xr
from distributed import Client

from pdeflow.storage import RunStore
from pdeflow.storage.export import export_pdebench
from pdeflow.tasks.config import ConfigError, load_config
from pdeflow.tasks.pdes import PDES
from pdeflow.tasks.sampling import SobolBalanceWarning
from pdeflow.tasks.stages import GenerationError
from tests.conftest import TINY
from tests.contract.problems import config
from tests.stage_helpers import complete_blocks, generate

CONFIGS = TINY.parent
SMALL = ["generate.n_samples=16", "generate.block_size=8", "generate.chunk_size=4"]


@pytest.fixture(scope="module")
def client():
    # Threads in this process: these stores are tiny, and worker processes would cost more
    # start-up than the solves.
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c


@pytest.mark.parametrize("name", list(PDES))
def test_every_registered_pde_generates_a_store(client, name):
    cfg = config(name).model_copy(update={"store": f"reg-{name}"})
    gen, problem = cfg.generate, cfg.generate.problem
    summary = generate(cfg, client)
    assert summary.computed == gen.n_blocks
    ds = xr.open_zarr(RunStore.named(cfg.store).path)
    attrs = RunStore.named(cfg.store).attrs()  # decoded: dicts and lists are JSON in Zarr
    assert attrs["fields"] == list(problem.fields) and attrs["pde"] == name
    space = ("x", "y", "z")[: problem.dim]
    frames = 1 if problem.stationary else gen.n_frames
    for field in problem.fields:
        assert ds[field].dims == ("sample", "time", *space)
        assert ds[field].shape == (16, frames, *gen.grid)
        assert ds[field].dtype == np.float32 and np.isfinite(ds[field].values).all()
        # Registered PDEs are non-dimensional: CF units "1", the quantity in the long_name.
        assert ds[field].attrs["units"] == "1"
        assert problem.units[field] in ds[field].attrs["long_name"]
        stats = attrs["normalization"][field]
        assert stats["std"] >= 0 and np.isfinite(stats["mean"])
    for axis, coords in zip(space, problem.coordinates(gen), strict=True):
        np.testing.assert_array_equal(ds[axis].values, coords)
    assert name in attrs["dataset_card"]
    for param in gen.parameter_names:
        assert ds[param].shape == (16,)
    # Same seed, same data: a second store of the same config is bitwise equal.
    again = cfg.model_copy(update={"store": f"reg2-{name}"})
    generate(again, client)
    ds2 = xr.open_zarr(RunStore.named(again.store).path)
    for field in problem.fields:
        np.testing.assert_array_equal(ds[field].values, ds2[field].values)


def test_unknown_pde_and_bad_ranges_are_refused_before_compute():
    with pytest.raises(ConfigError, match="'burgers'.*'heat'"):
        load_config(TINY, ["generate.pde=navier"])
    with pytest.raises(ConfigError, match="outside the valid range"):
        load_config(TINY, ["generate.parameters.nu={low: 0.0, high: 1e6}"])
    with pytest.raises(ConfigError, match="stability limit"):
        load_config(TINY, ["generate.pde=kdv", "generate.parameters=null", "generate.dt=0.1"])


def test_coarse_grid_warns_with_the_resolution_needed():
    cfg = load_config(
        TINY,
        [
            "generate.parameters.nu={distribution: loguniform, low: 1e-3, high: 0.01}",
            "generate.dt=0.001",
        ],
    )
    (warning,) = cfg.generate.resolution_warnings()
    assert "generate.grid" in warning and ">= " in warning


def test_python_simulator_runs_through_blocks_and_matches_the_exact_solution(client):
    from pdeflow.tasks.simulators.examples.heat_rod import heat_rod

    cfg = load_config(CONFIGS / "custom_python.yaml", ["store=byo-python"])
    assert generate(cfg, client).computed == 2
    ds = xr.open_zarr(RunStore.named(cfg.store).path)
    assert ds.T.dims == ("sample", "time", "x") and ds.T.attrs["units"] == "K"
    params = {k: ds[k].values for k in ("alpha", "t_left", "t_right")}
    expected = heat_rod(params, ds.seed.values, **cfg.generate.simulator.options)
    # float32 storage of temperatures ~300 K: 3e-5 relative is a few ulps.
    np.testing.assert_allclose(ds.T.values, expected[:, :, 0], rtol=3e-5)


def test_executable_simulator_fails_only_the_bad_block(client):
    cfg = load_config(CONFIGS / "custom_executable.yaml", ["store=byo-exe"])
    command = list(cfg.generate.simulator.command)
    # Sample 11 (block 1) exits 3 before simulating; the others run the example program.
    failing = [
        "/bin/sh",
        "-c",
        'grep -q \'"sample": 11,\' {params} && { echo boom >&2; exit 3; }; exec "$0" "$@"',
        sys.executable,
        *command[1:],
    ]
    bad = load_config(
        CONFIGS / "custom_executable.yaml",
        ["store=byo-exe", f"generate.simulator.command={json.dumps(failing)}"],
    )
    with pytest.raises(GenerationError) as err:
        generate(bad, client)
    assert "block 1" in str(err.value) and "11" in str(err.value) and "boom" in str(err.value)
    assert complete_blocks(RunStore.named(bad.store).path) == [0]
    # The healthy program solves every block of the same design.
    healthy = json.dumps([sys.executable, *command[1:]])
    good = load_config(
        CONFIGS / "custom_executable.yaml",
        ["store=byo-exe-ok", f"generate.simulator.command={healthy}"],
    )
    assert generate(good, client).computed == 2
    u = xr.open_zarr(RunStore.named(good.store).path).u.values
    assert u.shape == (16, 6, 32) and np.isfinite(u).all()


def test_extension_adds_blocks_and_equals_a_fresh_store(client):
    base = ["generate.n_samples=40", "generate.block_size=16", "generate.chunk_size=8"]
    small = load_config(TINY, ["store=ext", *base])
    # 40 Sobol' points are unbalanced until the extension reaches 64: said, not refused.
    with pytest.warns(SobolBalanceWarning, match="40 points"):
        generate(small, client)
    grown = load_config(TINY, ["store=ext", *base[1:], "generate.n_samples=64"])
    summary = generate(grown, client)
    # Blocks 0-1 stay; block 2 (samples 32-39, partial before) and block 3 are solved.
    assert summary.computed == 2
    fresh = load_config(TINY, ["store=ext-fresh", *base[1:], "generate.n_samples=64"])
    generate(fresh, client)
    a = xr.open_zarr(RunStore.named("ext").path)
    b = xr.open_zarr(RunStore.named("ext-fresh").path)
    xr.testing.assert_equal(a.reset_coords(), b.reset_coords())
    record = RunStore.named("ext").record("generate")
    assert record.details["extended_from"] == 40 and record.status == "complete"


def test_pdebench_preset_exports_to_the_pdebench_layout(client, tmp_path):
    # Not from TINY: its own parameters and initial condition would win over the preset's.
    over = [
        "store=preset-burgers",
        "cluster.n_workers=1",
        "generate.preset=pdebench-burgers",
        "generate.n_samples=16",
        "generate.block_size=8",
        "generate.chunk_size=8",
        "generate.n_x=128",
        "generate.n_frames=11",
        "generate.t_end=0.1",
        "generate.dt=0.002",
    ]
    cfg = load_config(None, over)
    assert cfg.generate.constants == {"nu": round(0.01 / np.pi, 10)}
    assert cfg.generate.length == 1.0 and cfg.generate.parameter_names == []
    generate(cfg, client)
    store = RunStore.named(cfg.store).path
    assert "PDEBench" in xr.open_zarr(store).attrs["dataset_card"]
    out = export_pdebench(store, tmp_path / "burgers.hdf5")
    with h5py.File(out, "r") as f:
        # What PDEBench's 1D loader reads: tensor (N, T, X), x-coordinate, t-coordinate.
        tensor = f["tensor"][...]
        assert tensor.shape == (16, 11, 128) and tensor.dtype == np.float32
        assert f["x-coordinate"].shape == (128,) and f["t-coordinate"].shape[0] >= 11
    np.testing.assert_array_equal(tensor, xr.open_zarr(store).u.values)
