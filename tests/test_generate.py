"""Stage 1 on a real Dask cluster: values, blow-up reporting, kill and resume."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pdeflow.storage import RunStore
from pdeflow.tasks import datasets
from pdeflow.tasks.config import load_config
from pdeflow.tasks.design import to_physical, to_unit
from pdeflow.tasks.solve import solve_parameters
from pdeflow.tasks.stages import GenerationError
from tests.conftest import TINY
from tests.stage_helpers import complete_blocks, generate


def test_store_holds_the_solver_output_and_reruns_compute_nothing(client):
    cfg = load_config(TINY, ["store=gen-values"])
    first = generate(cfg, client)
    assert first.computed == cfg.generate.n_blocks == first.total
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
    attrs = RunStore.named(cfg.store).attrs()  # decoded: dicts and lists are JSON in Zarr
    assert ds.u.dims == ("sample", "time", "x") and attrs["config"]["n_samples"] == 64
    assert "Burgers" in attrs["dataset_card"] and attrs["fields"] == ["u"]
    assert set(attrs["normalization"]["u"]) == {"mean", "std"}
    assert attrs["dataset_card"] and ds.time.values[-1] == cfg.generate.t_end
    assert sorted(np.unique(ds.split.values)) == [0, 1, 2, 3]
    assert generate(cfg, client).computed == 0


def test_blow_up_fails_its_block_and_names_samples(client):
    # A CFL guard of 0 cannot be set from the config, and validation refuses an amplitude too
    # large for dt. So provoke a real blow-up with a template whose stored parameter of one
    # sample is NaN: the solver must report that sample, not store NaNs.
    cfg = load_config(TINY, ["store=gen-blowup"])
    store = RunStore.named(cfg.store)
    template = datasets.template(cfg.generate)
    dims, values, attrs = template.coords["a2"]
    values = values.copy()
    values[21] = np.nan
    template.coords["a2"] = (dims, values, attrs)
    with store.lock():
        store.write_template(template)
    with pytest.raises(GenerationError) as err:
        generate(cfg, client)
    assert "block 1" in str(err.value) and "[21]" in str(err.value)
    assert complete_blocks(store.path) == [0, 2, 3]
    rec = store.record("generate")
    assert rec.status == "failed" and "block 1" in rec.error


@pytest.mark.parametrize(
    "over",
    [
        ["generate.initial_condition.kind=modes"],
        ["generate.initial_condition.kind=fourier", "generate.parameters.nu.low=0.1"],
        ["generate.initial_condition.kind=grf", "generate.dt=0.002"],
        ["generate.initial_condition.kind=fourier", "generate.initial_condition.rescale=unit"],
    ],
    ids=["modes", "fourier", "grf", "fourier-unit"],
)
def test_initial_states_are_bitwise_the_same_alone_and_in_any_batch(over):
    import torch

    from pdeflow.tasks.solve import initial_state

    cfg = load_config(TINY, over).generate
    params = to_physical(cfg, np.random.default_rng(0).random((6, len(cfg.parameter_names))))
    seeds = np.array([8, 9, 8, 3, 1, 2])
    batch = initial_state(cfg, params, seeds, torch.device("cpu"), torch.float64)
    for i in range(len(seeds)):
        alone = initial_state(cfg, params[i : i + 1], seeds[i : i + 1], "cpu", torch.float64)
        assert torch.equal(alone[0], batch[i]), i
    reordered = initial_state(cfg, params[::-1].copy(), seeds[::-1].copy(), "cpu", torch.float64)
    assert torch.equal(reordered.flip(0), batch)
