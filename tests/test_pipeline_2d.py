"""The four stages end to end on 2D data (tests/configs/tiny2d.yaml), as plain functions.

The Prefect flow itself is tested once, in 1D, by tests/test_pipeline.py; here the stage
functions run on an in-process Dask client so the 2D paths cost seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from distributed import Client

from pdeflow.storage import RunStore
from pdeflow.tasks.config import load_config
from pdeflow.tasks.pdes import PDES, get_pde
from pdeflow.tasks.stages.models import load_surrogate
from pdeflow.tasks.surrogates.factory import surrogate_name
from tests.conftest import ROOT
from tests.stage_helpers import generate, quantify, reduce, train

TINY2D = ROOT / "tests" / "configs" / "tiny2d.yaml"
DEMO = ROOT / "flows" / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def pipeline_2d():
    cfg = load_config(TINY2D)
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        summaries = {
            "generate": generate(cfg, c),
            "train": train(cfg),
            "reduce": reduce(cfg, c),
            "quantify": quantify(cfg, c),
        }
    return cfg, summaries


def _finite(metrics: dict) -> bool:
    return all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))


def test_generate_writes_2d_trajectories(pipeline_2d):
    cfg, summaries = pipeline_2d
    gen = cfg.generate
    ds = xr.open_zarr(RunStore.named(cfg.store).path)
    w = ds["vorticity"]
    assert w.dims == ("sample", "time", "x", "y")
    assert w.shape == (gen.n_samples, gen.n_frames, gen.grid[0], gen.grid[0])
    assert np.isfinite(w.values).all() and summaries["generate"].computed == 2
    # The solver's own initial vorticity has unit rms per sample.
    rms = np.sqrt((w.isel(time=0).values.astype(np.float64) ** 2).mean(axis=(1, 2)))
    np.testing.assert_allclose(rms, 1.0, rtol=1e-5)


def test_train_fits_an_fno2d_with_finite_metrics(pipeline_2d):
    cfg, summaries = pipeline_2d
    m = summaries["train"].metrics
    assert m["epochs"] == cfg.train.epochs and _finite(m)
    assert m["nrmse_one_step"] > 0 and m["nrmse_rollout"] > 0
    assert surrogate_name(cfg) == "fno" and cfg.generate.dim == 2
    # The saved weights load into the 2D architecture the config names.
    load_surrogate(cfg, RunStore.named(cfg.store))


def test_reduce_and_quantify_carry_the_2d_field(pipeline_2d):
    cfg, summaries = pipeline_2d
    gen, path = cfg.generate, RunStore.named(cfg.store).path
    features = gen.grid[0] * gen.grid[0]
    red = xr.open_zarr(path, group="reduce")
    rank = summaries["reduce"].metrics["rank"]
    assert red.modes.shape == (rank, features) and red["mean"].shape == (features,)
    assert _finite(summaries["reduce"].metrics)
    q = xr.open_zarr(path, group="quantify")
    for name in ("solver", "surrogate", "rom"):
        assert q[f"mean_{name}"].dims == ("time", "channel", "x", "y")
        assert q[f"mean_{name}"].shape == (gen.n_frames, 1, gen.grid[0], gen.grid[0])
        assert np.isfinite(q[f"mean_{name}"].values).all()
        assert q[f"ST_{name}"].shape == (1,)
    m = summaries["quantify"].metrics
    assert _finite(m) and 0 <= m["conformal_coverage_resplit_mean"] <= 1


@pytest.mark.parametrize("name", [n for n in PDES if n != "burgers"])
def test_demo_config_switches_pde_by_name(name):
    # What a user adds to the Burgers demo: the PDE's name, nothing PDE-specific. The grid,
    # domain, step, horizon, initial state and coefficient ranges become the PDE's own, and the
    # surrogate follows the data's dimension (demo: auto).
    cfg = load_config(DEMO, [f"generate.pde={name}"])
    gen, info = cfg.generate, get_pde(name).info
    assert gen.pde == name and gen.dim == info.dim and gen.domain_length == info.defaults.length
    assert gen.grid == (info.defaults.n,) * info.dim
    assert set(gen.coefficient_specs) == set(info.default_parameters)
    assert surrogate_name(cfg) == "fno"  # auto: the FNO, built for the PDE's dimension


def test_user_simulator_runs_through_the_whole_pipeline():
    # The heat-rod example (pde: custom): the surrogate starts from the simulator's own initial
    # states, which only the solver's blocks know. Measured: mean field 2e-4, std field 6e-3,
    # Sobol indices 0.014 off the simulator's. The bounds (1e-2, 0.1, 0.1) leave room for a
    # 2-epoch FNO and catch rollouts from wrong initial states, whose random perturbation then
    # misses the std field by O(1) and scrambles the attribution to t_left / t_right / alpha.
    cfg = load_config(ROOT / "tests" / "configs" / "custom_python.yaml", ["store=byo-pipeline"])
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        generate(cfg, c)
        train(cfg)
        reduce(cfg, c)
        summary = quantify(cfg, c)
    m = summary.metrics
    assert _finite(m) and m["mc_mean_rel_diff_surrogate"] < 1e-2
    assert m["mc_std_rel_diff_surrogate"] < 0.1 and m["sobol_max_abs_diff_surrogate"] < 0.1
    q = xr.open_zarr(RunStore.named(cfg.store).path, group="quantify")
    assert q["mean_surrogate"].dims == ("time", "channel", "x")


def test_randomized_pod_keeps_sample_chunks_and_matches_tsqr(pipeline_2d):
    # TSQR needs row blocks at least twice as tall as wide (2 * n_x^2 rows here); the
    # randomized SVD streams the store's own sample chunks, so 2D fields never force one huge
    # block. Its leading singular values must agree with the exact ones: with 2 power
    # iterations and 10 oversampled columns the top 5 measured within 1e-13 here; 1e-3 leaves
    # room for other BLAS and still catches a wrong basis or centring (the spectrum falls only
    # ~12% per mode, so a mix-up of modes moves them by far more).
    from pdeflow.tasks.config import ReduceConfig
    from pdeflow.tasks.stages.reduce import pod_out_of_core, snapshot_matrix

    cfg, _ = pipeline_2d
    store = RunStore.named(cfg.store)
    idx = store.sample_indices("train")
    tall = snapshot_matrix(store, idx)
    lean = snapshot_matrix(store, idx, tall_blocks=False)
    assert lean.chunks[0][0] == cfg.generate.chunk_size * cfg.generate.n_frames
    assert lean.numblocks[0] > 1 and tall.numblocks[0] == 1  # 108 rows < 2 * 256 columns
    exact = pod_out_of_core(tall, ReduceConfig(svd="tsqr", max_rank=8, energy=0.999999))
    fast = pod_out_of_core(lean, ReduceConfig(svd="randomized", max_rank=8, energy=0.999999))
    np.testing.assert_allclose(fast.singular_values_[:5], exact.singular_values_[:5], rtol=1e-3)
