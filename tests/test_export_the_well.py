"""The Well-layout export: every split read back with The Well's own ``WellDataset``."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

import pdeflow.storage.export_the_well as well_export
from pdeflow.storage.export_the_well import WELL_BOUNDARIES, export_the_well
from pdeflow.storage.groups import encode_dataset
from tests.conftest import ROOT
from tests.test_export import CHUNK, SPLIT, N, f32, make_store

h5py = pytest.importorskip("h5py")
WHY = "the_well: make install (or pip install --no-deps the_well, then pip install einops)"
the_well = pytest.importorskip("the_well.data", reason=WHY)
ZScoreNormalization = pytest.importorskip("the_well.data.normalization").ZScoreNormalization

T = 5  # frames in tests/test_export.py's stores
# pdeflow's split codes (train val test calibration) -> the Well's directories.
DIRS = {0: "train", 1: "valid", 2: "test", 3: "calibration"}
BC = {"WALL": 0, "OPEN": 1, "PERIODIC": 2}  # the_well.data.datasets.BoundaryCondition


def well(out: Path, split: str, **kwargs):
    """The split read as whole trajectories: one item per trajectory (1 input, T - 1 output)."""
    return the_well.WellDataset(
        path=str(out), well_split_name=split, n_steps_input=1, n_steps_output=T - 1, **kwargs
    )


def trajectory(item) -> np.ndarray:
    """An item's frames, (T, *space, C), as numpy."""
    return np.concatenate([item["input_fields"].numpy(), item["output_fields"].numpy()])


def make_store_3d(path: Path) -> xr.Dataset:
    """tests/test_export.py's 2D store with a third axis ``z`` of 3 points."""
    base = make_store(path, "2d", pde="navier_stokes_3d", nodes=True)
    rng = np.random.default_rng(1)
    dims = ("sample", "time", "x", "y", "z")
    data = {
        f: (dims, rng.standard_normal((N, T, 16, 6, 3)), base[f].attrs)
        for f in base.attrs["fields"]
    }
    z = ("z", np.arange(3) / 3, {"units": "m", "grid_points": "periodic nodes"})
    ds = xr.Dataset(data, coords={**base.coords, "z": z}, attrs=base.attrs)
    ds.chunk({"sample": CHUNK}).to_zarr(path, zarr_format=3, mode="w")
    return ds


def with_attrs(path: Path, **attrs) -> None:
    """Rewrite the store at ``path`` with ``attrs`` added to its attributes."""
    ds = xr.open_zarr(path).load()
    ds.attrs.update(attrs)
    ds.chunk({"sample": CHUNK}).to_zarr(path, zarr_format=3, mode="w")


# Round trips through WellDataset -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["1d", "2d", "3d"])
def test_every_split_reads_back_exactly_with_well_dataset(tmp_path, kind):
    store = tmp_path / "store"
    ds = make_store_3d(store) if kind == "3d" else make_store(store, kind, pde="burgers")
    out = export_the_well(store, tmp_path / "burgers_well")
    fields = list(ds.attrs["fields"])
    space = ds[fields[0]].dims[2:]
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(DIRS.values())
    for code, split in DIRS.items():
        rows = np.flatnonzero(SPLIT == code)
        data = well(out, split)
        assert len(data) == rows.size == data.metadata.n_trajectories_per_file[0]
        assert data.metadata.field_names[0] == fields
        assert data.metadata.spatial_resolution == tuple(ds.sizes[d] for d in space)
        for i, row in enumerate(rows):
            item = data[i]
            expected = np.stack([ds[f].values[row] for f in fields], axis=-1)  # (T, *space, C)
            got = trajectory(item)
            assert got.dtype == np.float32 and got.shape == (T, *expected.shape[1:])
            np.testing.assert_array_equal(got, f32(expected))  # the store's float32 rounding
            # Sampled nu and beta, then the constant gamma, as float32 (the Well's dtype).
            scalars = [ds.nu.values[row], ds.beta.values[row], 1.4]
            np.testing.assert_array_equal(item["constant_scalars"].numpy(), f32(scalars))
            grid = np.stack(np.meshgrid(*(ds[d].values for d in space), indexing="ij"), -1)
            np.testing.assert_array_equal(item["space_grid"].numpy(), f32(grid))  # as stored
            times = np.concatenate(
                [item[k].numpy() for k in ("input_time_grid", "output_time_grid")]
            )
            np.testing.assert_array_equal(times, f32(ds.time.values))
            np.testing.assert_array_equal(item["boundary_conditions"].numpy(), 2)  # periodic


def test_file_holds_pdeflow_ids_and_exact_parameters(tmp_path):
    ds = make_store(tmp_path / "store", "2d", pde="gray_scott_2d")
    out = export_the_well(tmp_path / "store", tmp_path / "gs")
    rows = np.flatnonzero(SPLIT == 1)
    with h5py.File(out / "data" / "valid" / "gs.hdf5", "r") as f:
        assert f.attrs["dataset_name"] == "gs" and f.attrs["n_trajectories"] == rows.size
        assert f.attrs["split"] == "val" and f.attrs["pde"] == "gray_scott_2d"
        assert list(f.attrs["simulation_parameters"]) == ["nu", "beta", "gamma"]
        assert f.attrs["gamma"] == 1.4 and "nu" not in f.attrs  # one value per file only
        np.testing.assert_array_equal(f["pdeflow/sample"][()], rows)
        np.testing.assert_array_equal(f["pdeflow/seed"][()], ds.seed.values[rows])
        np.testing.assert_array_equal(f["pdeflow/parameters/nu"][()], ds.nu.values[rows])
        assert (
            f["scalars/nu"].attrs["sample_varying"]
            and not f["scalars/gamma"].attrs["sample_varying"]
        )
        for axis in ("x", "y"):
            np.testing.assert_array_equal(f[f"dimensions/{axis}"][()], f32(ds[axis].values))
            assert f[f"dimensions/{axis}"].attrs["grid_points"] == "cell centres"
        assert list(f["dimensions"].attrs["spatial_dims"]) == ["x", "y"]
        assert list(f["t1_fields"].attrs["field_names"]) == []


@pytest.mark.filterwarnings("ignore:In a future version of xarray:FutureWarning")  # the_well's
def test_well_to_xarray_gives_the_store_back(tmp_path):
    ds = make_store(tmp_path / "store", "1d2", pde="burgers")
    out = export_the_well(tmp_path / "store", tmp_path / "b")
    rows = np.flatnonzero(SPLIT == 0)
    got = well(out, "train").to_xarray(backend="numpy")
    for field in ("h", "q"):
        assert got[field].dims == ("sample", "time", "x")
        np.testing.assert_array_equal(got[field].values, f32(ds[field].values[rows]))
    for coord in ("x", "time"):
        np.testing.assert_array_equal(got[coord].values, f32(ds[coord].values))
    np.testing.assert_array_equal(got["nu"].values, f32(ds.nu.values[rows]))
    mask = np.asarray(got["x_periodic"].values).reshape(-1, 16)[0]  # per sample or not
    np.testing.assert_array_equal(mask, [True, *[False] * 14, True])


def test_stats_yaml_is_the_train_split_and_normalizes(tmp_path):
    ds = make_store(tmp_path / "store", "1d2")
    out = export_the_well(tmp_path / "store", tmp_path / "swe")
    stats = yaml.safe_load((out / "stats.yaml").read_text())
    train = np.flatnonzero(SPLIT == 0)
    for field in ("h", "q"):
        values = f32(ds[field].values[train]).astype(np.float64)
        deltas = np.diff(values, axis=1)
        for suffix, v in (("", values), ("_delta", deltas)):
            expected = {"mean": v.mean(), "std": v.std(), "rms": np.sqrt((v**2).mean())}
            for stat_name, value in expected.items():
                got = stats[stat_name + suffix][field]
                np.testing.assert_allclose(got, value, rtol=1e-12, atol=1e-15)
    data = well(out, "train", use_normalization=True, normalization_type=ZScoreNormalization)
    raw = np.stack([ds[f].values[train[0]] for f in ("h", "q")], axis=-1)
    mean = np.array([stats["mean"][f] for f in ("h", "q")])
    std = np.array([stats["std"][f] for f in ("h", "q")])
    np.testing.assert_allclose(trajectory(data[0]), (f32(raw) - mean) / std, rtol=1e-5, atol=1e-5)


def test_metadata_yaml_is_what_well_dataset_finds(tmp_path):
    make_store(tmp_path / "store", "2d", pde="fitzhugh_nagumo_2d")
    out = export_the_well(tmp_path / "store", tmp_path / "fhn")
    written = yaml.safe_load((out / "fhn.yaml").read_text())
    found = dataclasses.asdict(well(out, "train").metadata)
    found["spatial_resolution"] = list(found["spatial_resolution"])
    assert written == found
    assert written["boundary_condition_types"] == ["WALL"]
    assert written["constant_scalar_names"] == ["nu", "beta", "gamma"]


# Boundary conditions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pde", "kind", "options", "expected"),
    [
        ("burgers", "1d", None, "PERIODIC"),
        ("fitzhugh_nagumo_2d", "2d", None, "WALL"),  # no-flux
        ("shallow_water_2d", "2d", None, "WALL"),  # reflecting walls
        ("compressible_euler_1d", "1d", {}, "PERIODIC"),  # its default
        ("compressible_euler_1d", "1d", {"boundary": "outflow"}, "OPEN"),
        ("custom", "1d", None, None),  # a user simulator: the store does not say
    ],
)
def test_boundary_conditions_are_the_pdes(tmp_path, pde, kind, options, expected):
    make_store(tmp_path / "store", kind, pde=pde)
    if options is not None:
        with_attrs(tmp_path / "store", config={"pde": pde, "solver_options": options})
    out = export_the_well(tmp_path / "store", tmp_path / "out")
    axes = ["x"] if kind == "1d" else ["x", "y"]
    with h5py.File(out / "data" / "train" / "out.hdf5", "r") as f:
        groups = sorted(f["boundary_conditions"].keys())
        types = {f[f"boundary_conditions/{g}"].attrs["bc_type"] for g in groups}
        masks = [f[f"boundary_conditions/{g}/mask"][()] for g in groups]
    if expected is None:
        assert groups == [] and well(out, "train").metadata.boundary_condition_types == []
        expected = "OPEN"  # what the Well's loader reads where no boundary is given
    else:
        assert groups == [f"{a}_{expected.lower()}" for a in axes] and types == {expected}
        for mask in masks:
            assert mask.dtype == bool and mask[[0, -1]].all() and not mask[1:-1].any()
    bcs = well(out, "train")[0]["boundary_conditions"].numpy()
    np.testing.assert_array_equal(bcs, np.full((len(axes), 2), BC[expected]))


def test_every_registry_pde_has_a_well_boundary():
    catalog = json.loads((ROOT / "tasks" / "pde_catalog.json").read_text())
    assert {entry["name"] for entry in catalog} == set(WELL_BOUNDARIES)
    for entry in catalog:
        periodic = entry["boundary"].startswith("periodic")
        assert (WELL_BOUNDARIES[entry["name"]] == "PERIODIC") == periodic, entry["name"]


# Safety ----------------------------------------------------------------------------------------


def all_text(out: Path) -> list[str]:
    texts = [p.read_text() for p in out.glob("*.yaml")]

    def collect(_name, obj):
        texts.extend(str(v) for v in obj.attrs.values())

    for path in out.rglob("*.hdf5"):
        with h5py.File(path, "r") as f:
            texts.extend(str(v) for v in f.attrs.values())
            f.visititems(collect)
    return texts


def test_no_local_paths_in_the_export(tmp_path, monkeypatch):
    make_store(tmp_path / "store", "2d", pde="gray_scott_2d")
    monkeypatch.chdir(tmp_path / "store")  # "." must still name the store, not a path
    out = export_the_well(".", tmp_path / "exports" / "gs")
    with h5py.File(out / "data" / "test" / "gs.hdf5", "r") as f:
        assert f.attrs["source"] == "store"
    texts = all_text(out)
    assert len(texts) > 50
    assert not [t for t in texts if str(tmp_path) in t or "/" in t]


def test_no_partial_tree_when_export_fails_midway(tmp_path, monkeypatch):
    make_store(tmp_path / "store", "1d")
    real = well_export.iter_blocks

    def fail_after_first(*args):
        blocks = real(*args)
        yield next(blocks)
        raise OSError("disk full")

    monkeypatch.setattr(well_export, "iter_blocks", fail_after_first)
    with pytest.raises(OSError, match="disk full"):
        export_the_well(tmp_path / "store", tmp_path / "exports" / "out")
    assert list((tmp_path / "exports").iterdir()) == []


def test_failed_overwrite_keeps_the_old_tree(tmp_path):
    make_store(tmp_path / "good", "2d")
    make_store(tmp_path / "bad", "2d", nan_sample=9)  # in the last chunk: fails midway
    out = export_the_well(tmp_path / "good", tmp_path / "exports" / "out")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"samples \[9\] hold non-finite"):
        export_the_well(tmp_path / "bad", out, overwrite=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in (tmp_path / "exports").iterdir()] == ["out"]


def test_overwrite_replaces_only_an_export(tmp_path):
    one = make_store(tmp_path / "one", "1d")
    make_store(tmp_path / "two", "1d2")
    out = export_the_well(tmp_path / "two", tmp_path / "out")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_the_well(tmp_path / "one", out)
    export_the_well(tmp_path / "one", out, overwrite=True)
    np.testing.assert_array_equal(trajectory(well(out, "test")[0])[..., 0], f32(one.u.values[3]))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="refusing to replace it"):
        export_the_well(tmp_path / "one", tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "one", "out", "two"]


@pytest.mark.parametrize(("umask", "dirs", "files"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_tree_has_the_permissions_the_umask_gives(tmp_path, umask, dirs, files):
    make_store(tmp_path / "store", "1d")
    old = os.umask(umask)
    try:
        out = export_the_well(tmp_path / "store", tmp_path / "out")
    finally:
        os.umask(old)
    for path in [out, *out.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (dirs if path.is_dir() else files), path


def test_stationary_store_and_missing_splits_are_refused(tmp_path):
    make_store(tmp_path / "darcy", "darcy", pde="darcy_2d")
    with pytest.raises(ValueError, match="stationary store .* use --format pdebench"):
        export_the_well(tmp_path / "darcy", tmp_path / "out")
    ds = make_store(tmp_path / "store", "1d").drop_vars("split")
    ds.chunk({"sample": CHUNK}).to_zarr(tmp_path / "bare", zarr_format=3, mode="w")
    with pytest.raises(ValueError, match="no 'split' coordinate"):
        export_the_well(tmp_path / "bare", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_reads_a_store_whose_attributes_are_json_encoded(tmp_path):
    ds = make_store(tmp_path / "plain", "1d", pde="compressible_euler_1d")
    ds.attrs["config"] = {"pde": "compressible_euler_1d", "solver_options": {"boundary": "outflow"}}
    encoded = encode_dataset(ds.copy())
    assert "fields_json" in encoded.attrs and "config_json" in encoded.attrs
    encoded.chunk({"sample": CHUNK}).to_zarr(tmp_path / "store", zarr_format=3, mode="w")
    out = export_the_well(tmp_path / "store", tmp_path / "euler")
    with h5py.File(out / "data" / "train" / "euler.hdf5", "r") as f:
        assert list(f["t0_fields"].attrs["field_names"]) == ["u"]
        assert f["boundary_conditions/x_open"].attrs["bc_type"] == "OPEN"
        assert f.attrs["gamma"] == 1.4


def test_cli_refuses_split_with_the_well(tmp_path):
    from typer.testing import CliRunner

    from pdeflow.flows.cli import app

    args = ["export", "demo", str(tmp_path / "out"), "--format", "the_well", "--split", "val"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
