"""The reduce stage's method registry: config, refusals, the side-by-side table, save and restore.

Each method's numerics are tested in its own file (tests/test_rom_*.py); here the stage runs the
methods on one small Burgers store (64 points, 64 samples) and checks what it reports and keeps.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest

from pdeflow.tasks.config import load_config
from pdeflow.tasks.config_reduce import MethodName, ReduceConfig
from pdeflow.tasks.rom.methods import METHODS, get_method
from tests.conftest import TINY
from tests.stage_helpers import generate, reduce

# 2D Navier-Stokes from its own initial vorticity, a random field drawn from each sample's seed.
NS_RANDOM = [
    "generate.pde=navier_stokes_2d",
    "generate.n_x=16",
    "generate.initial_condition={kind: pde}",
]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def test_the_config_lists_exactly_the_registered_methods():
    assert set(typing.get_args(MethodName)) == set(METHODS)
    with pytest.raises(ValueError, match="valid: pod-rbf"):
        get_method("pod-svr")


def test_the_old_approximation_field_still_means_a_pod_regression():
    assert ReduceConfig(approximation="gpr").method == "pod-gpr"
    assert ReduceConfig(approximation="rbf", method="pod-rbf").method == "pod-rbf"
    with pytest.raises(ValueError, match="disagree"):
        ReduceConfig(approximation="rbf", method="pod-gpr")
    with pytest.raises(ValueError, match="must be 'rbf' or 'gpr'"):
        ReduceConfig(approximation="kriging")


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"method": "pod-rbf", "compare": ["pod-rbf"]}, "compare lists each method once"),
        ({"compare": ["pod-gpr", "pod-gpr"]}, "compare lists each method once"),
        ({"galerkin_rank": 16, "deim_points": 8}, "deim_points must be 0"),
        ({"method": "svd"}, "method"),
    ],
)
def test_bad_reduce_settings_are_refused_naming_the_field(settings, match):
    with pytest.raises(ValueError, match=match):
        ReduceConfig(**settings)


@pytest.fixture(scope="module")
def burgers(runs_dir, client):
    cfg = load_config(TINY, ["store=reduce-methods", "reduce.compare=[pod-gpr, pod-nn]"])
    generate(cfg, client)
    return cfg, reduce(cfg, client)


def test_compared_methods_are_scored_side_by_side(burgers):
    from pdeflow.storage import RunStore

    cfg, summary = burgers
    rec = RunStore.named(cfg.store).record("reduce")
    rows, m = rec.details["methods"], summary.metrics
    assert set(rows) == {"pod-rbf", "pod-gpr", "pod-nn"} and rec.details["method"] == "pod-rbf"
    assert m["rom_rel_error_mean"] == rows["pod-rbf"]["rel_error_mean"]
    assert m["pod_nn_rel_error_mean"] == rows["pod-nn"]["rel_error_mean"]
    for row in rows.values():
        # Both share the stage's POD: one floor, below each regression's error.
        assert row["floor_mean"] == rows["pod-rbf"]["floor_mean"] < row["rel_error_mean"]
        assert row["rel_error_mean"] <= row["rel_error_max"]
        assert row["offline_s"] > 0 and row["online_s_per_eval"] > 0 and row["speedup"] > 0
        curve = {int(r): v for r, v in row["rank_errors"].items()}
        ranks = sorted(curve)
        assert ranks[0] == 1 and ranks[-1] == m["rank"]
        # At the full rank the truncated prediction is the prediction, and the floor is the
        # stage's floor: equal up to the float32 store's rounding (relative 1e-6).
        assert curve[ranks[-1]][0] == pytest.approx(row["rel_error_mean"], rel=1e-6)
        assert curve[ranks[-1]][1] == pytest.approx(row["floor_mean"], rel=1e-6)
        # Projection onto nested POD bases: the floor can only fall with the rank.
        floors = [curve[r][1] for r in ranks]
        assert all(a >= b - 1e-12 for a, b in zip(floors, floors[1:], strict=False))
    assert rec.details["solver_s_per_sample"] > 0


def test_the_report_and_show_carry_the_table(burgers):
    from pdeflow.storage import RunStore
    from pdeflow.tasks.report import method_table

    cfg, _ = burgers
    rows = RunStore.named(cfg.store).record("reduce").details["methods"]
    table = method_table(rows, "pod-rbf")
    assert table[0].startswith("| method | error mean |") and len(table) == 2 + len(rows) + 1
    assert table[2].startswith("| **pod-rbf** (used) |") and table[3].startswith("| pod-gpr |")
    assert np.isfinite([r["rel_error_mean"] for r in rows.values()]).all()


def test_an_extended_store_updates_its_basis_from_the_new_samples_alone(runs_dir, client):
    """64 -> 72 samples: the basis is updated from the 4 new training samples (Brand's update)
    and equals a full recompute on all 72; with reduce.incremental off it is recomputed."""
    from scipy.linalg import subspace_angles

    from pdeflow.storage import RunStore

    grown = ["store=grown", "generate.n_samples=72"]
    generate(load_config(TINY, ["store=grown"]), client)
    reduce(load_config(TINY, ["store=grown"]), client)
    generate(load_config(TINY, grown), client)
    updated = reduce(load_config(TINY, grown), client)
    fresh = ["store=fresh", "generate.n_samples=72", "reduce.incremental=false"]
    generate(load_config(TINY, fresh), client)
    full = reduce(load_config(TINY, fresh), client)
    a, b = RunStore.named("grown"), RunStore.named("fresh")
    basis = a.record("reduce").details["basis"]
    assert basis["incremental"] and basis["added_samples"] == 4 and basis["previous_samples"] == 40
    assert b.record("reduce").details["basis"]["incremental"] is False
    assert updated.metrics["rank"] == full.metrics["rank"]
    ga, gb = a.read_group("reduce"), b.read_group("reduce")
    # The buffer of 16 modes keeps everything this 64-point problem has beyond rank 6, so the
    # update is exact up to rounding: angles ~1e-8 (sqrt(eps) from the Gram-based tail).
    assert np.max(subspace_angles(ga.modes.values.T, gb.modes.values.T)) < 1e-6
    np.testing.assert_allclose(ga["mean"].values, gb["mean"].values, rtol=1e-12, atol=1e-12)
    assert updated.metrics["rom_rel_error_mean"] == pytest.approx(
        full.metrics["rom_rel_error_mean"], rel=1e-6
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["reduce.method=rb"], "rb needs an affinely parametrized"),
        ([*NS_RANDOM, "reduce.method=dmd"],
         "drawn at random"),
        ([*NS_RANDOM, "reduce.compare=[autoencoder]"],
         "reduce.compare: autoencoder maps the parameters alone"),
        ([*NS_RANDOM, "reduce.method=pod-galerkin"],
         "right-hand side"),
    ],
)  # fmt: skip
def test_a_method_that_cannot_apply_is_refused_before_any_compute(runs_dir, overrides, match):
    from pdeflow.tasks.stages import run_stage

    cfg = load_config(TINY, ["store=refused", *overrides])
    with pytest.raises(ValueError, match=match):
        run_stage("reduce", cfg)
    assert not (runs_dir / "refused").exists()


def test_time_methods_are_refused_for_a_stationary_problem(runs_dir):
    from pdeflow.tasks.stages import run_stage

    cfg = load_config(
        None, ["store=refused", "generate.pde=thermal_block_2x2", "reduce.method=dmd"]
    )
    with pytest.raises(ValueError, match="reduce.method: dmd needs a trajectory"):
        run_stage("reduce", cfg)


@pytest.mark.parametrize(
    "settings",
    [
        ["reduce.method=dmd"],
        ["reduce.method=pod-galerkin", "reduce.galerkin_rank=8", "reduce.deim_points=16"],
        ["reduce.method=autoencoder", "reduce.ae_epochs=20", "reduce.latent_dim=3"],
    ],
    ids=["dmd", "pod-galerkin", "autoencoder"],
)
def test_the_stage_rom_is_saved_and_restored_for_quantify(burgers, client, settings):
    """The stage keeps its ROM's fitted state; what quantify loads predicts what was scored."""
    from pdeflow.storage import RunStore
    from pdeflow.tasks.stages.models import load_rom, unit_parameters

    base, _ = burgers
    name = settings[0].split("=")[1]
    cfg = load_config(TINY, [f"store={base.store}", *settings])
    summary = reduce(cfg, client, overwrite=True)
    store = RunStore.named(cfg.store)
    assert store.record("reduce").details["method"] == name
    assert any(rel.startswith("reduce_model/") for rel in store.record("reduce").artifacts)
    rom = load_rom(cfg, store)
    test = store.sample_indices("test")
    truth = store.read_samples(test)
    flat = truth.reshape(len(test), truth.shape[1], -1).astype(np.float64)
    predicted = rom.predict(unit_parameters(store, cfg, test), flat[:, 0])
    err = np.linalg.norm((predicted - flat).reshape(len(test), -1), axis=1)
    rel = err / np.linalg.norm(flat.reshape(len(test), -1), axis=1)
    # Restored from float64 arrays: the same predictions to rounding (1e-9 relative).
    assert rel.mean() == pytest.approx(summary.metrics["rom_rel_error_mean"], rel=1e-9)
    # Each of these beats the trivial mean-field prediction on this smooth Burgers set.
    assert rel.mean() < summary.metrics["baseline_mean_rel_error_mean"]


def test_the_thermal_block_config_runs_rb_from_the_cli(runs_dir, prefect_api):
    """The shipped config, smaller (32^2 cells, 32 samples): the pipeline of a stationary
    problem is generate and reduce, and its ROM is the certified reduced basis."""
    from pdeflow.storage import RunStore
    from tests.cli_helpers import cli

    config = TINY.parents[2] / "flows" / "configs" / "darcy_thermal_block.yaml"
    proc = cli("run", "pipeline", "--config", str(config), "--set", "store=thermal",
               "--set", "generate.grid=[32]", "--set", "generate.n_samples=32",
               "--set", "reduce.rb_training_size=200")  # fmt: skip
    assert "Traceback" not in proc.stderr
    store = RunStore.named("thermal")
    assert store.record("train") is None and store.record("quantify") is None
    rec = store.record("reduce")
    row = rec.details["methods"]["rb"]
    assert rec.details["method"] == "rb" and "rb" in proc.stdout
    # The bound is rigorous: at least the true energy-norm error for every test sample.
    assert row["effectivity_min"] >= 1.0
    # At 32^2 the greedy reaches its 1e-6 bound (measured ~1e-8 L2 error); 1e-5 leaves room.
    assert row["rel_error_max"] < 1e-5 and row["estimate_max"] < 1e-5


def test_a_store_reduced_before_the_registry_keeps_its_name():
    """A reduce config that sets none of the registry's new fields hashes as it did before
    (the old field set, ``approximation`` included): its finished stage is found, not redone."""
    from pdeflow.tasks.config import config_hash

    before = {
        "energy": 0.99999, "max_rank": 48, "center": True, "svd": "tsqr",
        "approximation": "gpr", "rbf_kernel": "thin_plate_spline", "smoothing": 0.0,
        "initial_modes": 8,
    }  # fmt: skip
    rc = ReduceConfig(energy=0.99999, max_rank=48, method="pod-gpr")
    assert rc.identity() == before and config_hash(rc) == config_hash(before)
    # Any new setting changes the name, as a changed config must.
    assert config_hash(rc.model_copy(update={"compare": ("dmd",)})) != config_hash(before)
    assert "method" in ReduceConfig(method="dmd").identity()
