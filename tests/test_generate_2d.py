"""The generate stage on the 2D registry entries: presets, PDE-specific initial states, forcing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from distributed import Client
from typer.testing import CliRunner

from pdeflow.storage import RunStore
from pdeflow.tasks.config import ConfigError, load_config
from pdeflow.tasks.presets import PRESETS
from tests.stage_helpers import generate

NEW_PRESETS = ["pdebench-darcy-2d", "pdebench-diffusion-reaction-2d"]
TINY = ["generate.n_samples=8", "generate.block_size=8", "generate.chunk_size=8"]


@pytest.fixture(scope="module")
def client():
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        yield c


def _store(cfg) -> xr.Dataset:
    return xr.open_zarr(RunStore.named(cfg.store).path)


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_new_presets_load_with_the_published_settings(name):
    gen = load_config(None, [f"generate.preset={name}"]).generate
    preset = PRESETS[name]
    assert gen.pde == preset["generate"]["pde"] and gen.grid == (128, 128)
    assert gen.parameter_names == [] and not gen.resolution_warnings()
    for coefficient, published in preset["values"].items():
        assert gen.constants[coefficient] in published


def test_darcy_preset_permeability_levels_and_linearity_in_beta(client):
    over = ["generate.preset=pdebench-darcy-2d", "generate.n_x=32", *TINY]
    one = load_config(None, ["store=darcy-b1", *over])
    ten = load_config(None, ["store=darcy-b10", *over, "generate.constants.beta=10.0"])
    generate(one, client)
    generate(ten, client)
    a, b = _store(one), _store(ten)
    assert a["u"].shape == (8, 1, 32, 32) and a.attrs["pde"] == "darcy_2d"
    assert set(np.unique(a["a"].values)) == {np.float32(0.1), np.float32(1.0)}
    assert (a["u"].values > 0).all()
    # Same seeds, same permeability; -div(a grad u) = beta is linear in beta.
    np.testing.assert_array_equal(a["a"].values, b["a"].values)
    np.testing.assert_allclose(b["u"].values, 10 * a["u"].values, rtol=1e-5)


def test_diffusion_reaction_preset_generates_from_standard_normal_states(client):
    over = ["store=fhn-preset", "generate.preset=pdebench-diffusion-reaction-2d", *TINY]
    cfg = load_config(None, [*over, "generate.n_x=32", "generate.n_frames=3", "generate.t_end=0.1"])
    generate(cfg, client)
    ds = _store(cfg)
    assert ds["u"].dims == ("sample", "time", "x", "y") and ds["v"].shape == (8, 3, 32, 32)
    np.testing.assert_allclose(ds.time.values, [0.0, 0.05, 0.1])
    u0 = ds["u"].isel(time=0).values
    # 8 * 32^2 standard normal draws: mean within 5 standard errors of 0, std within 3%.
    assert abs(u0.mean()) < 5 / np.sqrt(u0.size) and abs(u0.std() - 1) < 0.03
    assert float(ds["x"].min()) > -1 and float(ds["x"].max()) < 1


def test_shallow_water_initial_dam_matches_the_sampled_radius(client):
    cfg = load_config(
        None,
        [
            "store=swe-radius",
            "generate.pde=shallow_water_2d",
            "generate.n_x=32",
            "generate.n_frames=2",
            "generate.t_end=0.02",
            "generate.dt=0.01",
            "generate.initial_condition.kind=pde",
            *TINY,
        ],
    )
    generate(cfg, client)
    ds = _store(cfg)
    x, y = np.meshgrid(ds["x"].values, ds["y"].values, indexing="ij")
    inside = (x**2 + y**2)[None] < ds["radius"].values[:, None, None] ** 2
    np.testing.assert_array_equal(ds["h"].isel(time=0).values, np.where(inside, 2.0, 1.0))


def test_kolmogorov_forcing_is_set_by_constants_not_sampled(client):
    base = [
        "generate.n_x=32",
        "generate.n_frames=3",
        "generate.t_end=0.2",
        "generate.dt=0.01",
        "generate.initial_condition.kind=pde",
        "generate.parameters.nu={distribution: loguniform, low: 1e-3, high: 1e-2}",
        *TINY,
    ]
    with pytest.raises(ConfigError, match="one value per run"):
        load_config(
            None,
            [
                "generate.pde=kolmogorov_2d",
                *base,
                "generate.parameters.drag={low: 0.0, high: 0.2}",
            ],
        )
    forced = load_config(
        None,
        [
            "store=kolmogorov",
            "generate.pde=kolmogorov_2d",
            *base,
            "generate.constants={forcing_amplitude: 1.0, drag: 1.0}",
        ],
    )
    free = load_config(None, ["store=decaying", "generate.pde=navier_stokes_2d", *base])
    generate(forced, client)
    generate(free, client)
    a, b = _store(forced)["vorticity"].values, _store(free)["vorticity"].values
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
    # The forcing's curl, -F k_f cos(k_f y), k_f = 8 pi, is added at a rate F k_f ~ 25 per
    # unit time: after 0.2 the fields differ by O(1).
    assert np.abs(a[:, -1] - b[:, -1]).max() > 1.0


def test_initial_condition_options_are_checked_against_the_pde():
    darcy = ["generate.pde=darcy_2d", "generate.parameters=null", "generate.n_x=32"]
    with pytest.raises(ConfigError, match=r"no option \['level'\]; valid: \['coefficient'"):
        load_config(
            None,
            [
                *darcy,
                "generate.initial_condition.kind=pde",
                "generate.initial_condition.options={level: 1}",
            ],
        )
    with pytest.raises(ConfigError, match="kind 'pde' only"):
        load_config(None, ["generate.initial_condition.options={levels: [1, 2]}"])


def test_cli_lists_the_2d_pdes_and_presets():
    from pdeflow.flows.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["list", "pdes", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    two_d = {"navier_stokes_2d", "kolmogorov_2d", "darcy_2d", "fitzhugh_nagumo_2d"}
    assert two_d | {"gray_scott_2d", "shallow_water_2d"} <= set(rows)
    assert rows["darcy_2d"]["dim"] == 2 and rows["darcy_2d"]["stationary"]
    assert rows["fitzhugh_nagumo_2d"]["fields"] == ["u", "v"]
    assert "Neumann" in rows["fitzhugh_nagumo_2d"]["boundary"]
    per_run = {
        k for k, c in rows["kolmogorov_2d"]["coefficients"].items() if c.get("one_value_per_run")
    }
    assert per_run == {"forcing_amplitude", "drag"}
    assert rows["kolmogorov_2d"]["coefficients"]["drag"]["default"] == {"constant": 0.1}
    table = runner.invoke(app, ["list", "pdes"], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "shallow_water_2d" in table.stdout
    out = runner.invoke(app, ["list", "presets", "--json"])
    assert out.exit_code == 0
    presets = {r["name"]: r for r in json.loads(out.stdout)}
    assert presets["pdebench-darcy-2d"]["published_values"]["beta"] == [0.01, 0.1, 1.0, 10.0, 100.0]
    assert presets["pdebench-diffusion-reaction-2d"]["pde"] == "fitzhugh_nagumo_2d"
