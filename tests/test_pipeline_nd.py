"""The two families the old dialects could not hold, through the whole pipeline: 3D
Navier-Stokes (an FNO of dimension 3) and 1D compressible Euler (three fields in 1D)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from distributed import Client

from pdeflow.storage import RunStore
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.stages.models import load_surrogate
from pdeflow.tasks.surrogates.fno import FNO
from tests.stage_helpers import generate, quantify, reduce, train

# Each a PDE's own defaults on a coarse grid and a short horizon: the grid (8^3, 32 cells),
# frames and sizes are the test's; step, domain, coefficients and initial state the PDE's own.
CASES = {
    "navier_stokes_3d": {"grid": [8], "n_frames": 4, "t_end": 0.3},
    "compressible_euler_1d": {"grid": [32], "n_frames": 4, "t_end": 0.03},
}


def _config(name: str) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "store": f"nd-{name}",
            "generate": {
                "pde": name,
                "n_samples": 24,
                "design": "random",
                "block_size": 8,
                "chunk_size": 8,
                "split": {"train": 0.5, "val": 0.125, "test": 0.125, "calibration": 0.25},
                **CASES[name],
            },
            "train": {"width": 4, "modes": 3, "n_layers": 1, "epochs": 1, "batch_size": 16},
            "reduce": {"max_rank": 4},
            "quantify": {"alpha": 0.25, "n_mc": 8, "sobol_n_base": 8, "n_resplits": 5},
        }
    )


@pytest.mark.parametrize("name", list(CASES))
def test_the_pipeline_runs_on_the_new_families(name):
    cfg = _config(name)
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        generate(cfg, c)
        tm = train(cfg).metrics
        rm = reduce(cfg, c).metrics
        qm = quantify(cfg, c).metrics
    gen = cfg.generate
    ds = xr.open_zarr(RunStore.named(cfg.store).path)
    space = ("x", "y", "z")[: gen.dim]
    for field in gen.fields:
        assert ds[field].dims == ("sample", "time", *space)
        assert ds[field].shape == (24, 4, *gen.grid) and np.isfinite(ds[field].values).all()
    for metrics in (tm, rm, qm):
        assert all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))
    net = load_surrogate(cfg, RunStore.named(cfg.store)).net
    if gen.dim == 3:
        assert isinstance(net, FNO) and net.n_dims == 3
