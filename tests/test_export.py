"""PDEBench-layout HDF5 export: round trips read back the way PDEBench's loaders read them."""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import pdeflow.storage.export as export
from pdeflow.storage.export import export_pdebench

h5py = pytest.importorskip("h5py")

N, CHUNK = 10, 4  # three stored chunks along sample: 4, 4, 2
SPLIT = np.array([0, 1, 0, 2, 0, 3, 1, 0, 0, 2], dtype=np.int8)  # train val test calibration
SPLIT_ATTRS = {"flag_values": [0, 1, 2, 3], "flag_meanings": "train val test calibration"}


def make_store(
    path: Path,
    kind: str,
    nan_sample: int | None = None,
    *,
    pde: str | None = None,
    params: dict[str, np.ndarray] | None = None,
    constants: dict[str, float] | None = None,
    nodes: bool = False,
) -> xr.Dataset:
    """A small synthetic run store: kind "1d" (one field), "1d2" (two), "2d" or "darcy".

    ``pde`` names it (default: ``kind``), ``params`` replaces the sampled parameters (default
    ``nu`` varying, ``beta`` constant), ``constants`` the fixed ones (default ``gamma``), and
    ``nodes`` puts the grid on periodic nodes ``i dx`` instead of cell centres.
    """
    rng = np.random.default_rng(0)
    two_d = kind in ("2d", "darcy")
    n_t = 1 if kind == "darcy" else 5
    space = {"x": 16, "y": 6} if two_d else {"x": 16}
    fields = {"1d": ["u"], "1d2": ["h", "q"], "2d": ["u", "v"], "darcy": ["a", "u"]}[kind]
    dims = ("sample", "time", *space)
    shape = (N, n_t, *space.values())
    data = {}
    for f in fields:
        values = rng.standard_normal(shape)  # float64 in the store: the export casts
        if nan_sample is not None:
            values[nan_sample, -1] = np.nan
        data[f] = (dims, values, {"units": "1", "long_name": f"field {f}"})
    if params is None:
        params = {"nu": np.linspace(0.01, 0.1, N), "beta": np.full(N, 0.5)}  # beta: a scalar
    coords = {
        "sample": ("sample", np.arange(N)),
        "time": ("time", np.linspace(0.0, 0.4, n_t), {"units": "s"}),
        "seed": ("sample", np.arange(N, dtype=np.uint64) * 7 + 1),
        "split": ("sample", SPLIT, SPLIT_ATTRS),
        **{name: ("sample", values) for name, values in params.items()},
    }
    # As the generate stage records them: where the stored values sit on each axis.
    points = "cell centres" if not nodes else "nodes" if pde == "custom" else "periodic nodes"
    for name, size in space.items():
        values = (np.arange(size) + (0 if nodes else 0.5)) / size
        coords[name] = (name, values, {"units": "m", "grid_points": points})
    attrs = {
        "fields": fields,
        "pde": pde or kind,
        "stationary": kind == "darcy",
        "parameters": list(params),
        "constants": {"gamma": 1.4} if constants is None else constants,
    }
    ds = xr.Dataset(data, coords=coords, attrs=attrs).chunk({"sample": CHUNK})
    ds.to_zarr(path, zarr_format=3, mode="w")
    return ds.load()


# Minimal readers following PDEBench's documented layouts -------------------------------------


def read_tensor_file(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in f.keys()}
        out["attrs"] = dict(f.attrs)
        out["dtypes"] = {k: f[k].dtype for k in f.keys()}
    return out


def read_group_file(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        keys = sorted(f.keys())
        return {
            "keys": keys,
            "data": np.stack([f[f"{k}/data"][()] for k in keys]),
            "dtype": f[f"{keys[0]}/data"].dtype,
            "grid": {g: f[f"{keys[0]}/grid/{g}"][()] for g in ("x", "y", "t")},
            "group_attrs": [dict(f[k].attrs) for k in keys],
            "attrs": dict(f.attrs),
        }


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


# Layouts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [None, "val"])
def test_1d_tensor_layout_round_trip(tmp_path, split):
    ds = make_store(tmp_path / "store", "1d")
    path = export_pdebench(tmp_path / "store", tmp_path / "out.hdf5", split=split)
    rows = np.arange(N) if split is None else np.flatnonzero(SPLIT == 1)
    got = read_tensor_file(path)
    assert set(got) - {"attrs", "dtypes"} == {"tensor", "x-coordinate", "t-coordinate", "split"}
    assert got["dtypes"]["tensor"] == np.float32 and got["tensor"].shape == (len(rows), 5, 16)
    # The store holds float64; the file holds its float32 rounding, exactly.
    np.testing.assert_array_equal(got["tensor"], f32(ds.u.values[rows]))
    np.testing.assert_array_equal(got["x-coordinate"], f32(ds.x.values))
    # PDEBench's 1D files hold T + 1 time values; the first T are the frames.
    t = got["t-coordinate"]
    assert t.shape == (6,)
    np.testing.assert_array_equal(t[:5], f32(ds.time.values))
    assert t[5] == pytest.approx(0.5, rel=1e-6)  # one frame spacing (0.1 s) on, float32
    attrs = got["attrs"]
    np.testing.assert_array_equal(attrs["nu"], ds.nu.values[rows])
    assert np.ndim(attrs["beta"]) == 0 and attrs["beta"] == 0.5
    assert attrs["gamma"] == 1.4
    np.testing.assert_array_equal(attrs["sample"], rows)
    np.testing.assert_array_equal(attrs["seed"], ds.seed.values[rows])
    assert attrs["pde"] == "1d" and attrs["split"] == (split or "all")


def test_1d_several_fields_one_dataset_each(tmp_path):
    ds = make_store(tmp_path / "store", "1d2")
    got = read_tensor_file(export_pdebench(tmp_path / "store", tmp_path / "out.hdf5"))
    for f in ("h", "q"):
        np.testing.assert_array_equal(got[f], f32(ds[f].values))
    assert "tensor" not in got and list(got["attrs"]["fields"]) == ["h", "q"]


@pytest.mark.parametrize("split", [None, "train"])
def test_2d_group_layout_round_trip(tmp_path, split):
    ds = make_store(tmp_path / "store", "2d")
    path = export_pdebench(tmp_path / "store", tmp_path / "out.h5", split=split)
    rows = np.arange(N) if split is None else np.flatnonzero(SPLIT == 0)
    got = read_group_file(path)
    assert got["keys"] == [f"{i:04d}" for i in range(len(rows))]
    assert got["dtype"] == np.float32 and got["data"].shape == (len(rows), 5, 16, 6, 2)
    expected = np.stack([ds.u.values[rows], ds.v.values[rows]], axis=-1)  # (N, T, X, Y, C)
    np.testing.assert_array_equal(got["data"], f32(expected))
    for g in ("x", "y"):
        np.testing.assert_array_equal(got["grid"][g], f32(ds[g].values))
    np.testing.assert_array_equal(got["grid"]["t"], f32(ds.time.values))  # T values here
    for i, attrs in enumerate(got["group_attrs"]):
        assert attrs["sample"] == rows[i] and attrs["seed"] == ds.seed.values[rows[i]]
        assert attrs["nu"] == ds.nu.values[rows[i]] and attrs["beta"] == 0.5


def test_darcy_layout_round_trip(tmp_path):
    ds = make_store(tmp_path / "store", "darcy")
    got = read_tensor_file(export_pdebench(tmp_path / "store", tmp_path / "darcy.hdf5"))
    assert set(got) - {"attrs", "dtypes"} == {
        "nu",
        "tensor",
        "x-coordinate",
        "y-coordinate",
        "split",
    }
    assert got["dtypes"]["nu"] == np.float32 and got["dtypes"]["tensor"] == np.float32
    assert got["nu"].shape == (N, 16, 6) and got["tensor"].shape == (N, 1, 16, 6)
    np.testing.assert_array_equal(got["nu"], f32(ds.a.values[:, 0]))
    np.testing.assert_array_equal(got["tensor"], f32(ds.u.values))
    np.testing.assert_array_equal(got["x-coordinate"], f32(ds.x.values))
    np.testing.assert_array_equal(got["y-coordinate"], f32(ds.y.values))
    assert got["attrs"]["stationary"]


# Streaming, safety, errors ---------------------------------------------------------------------


def test_reads_one_stored_chunk_at_a_time(tmp_path):
    make_store(tmp_path / "store", "1d")
    ds = xr.open_zarr(tmp_path / "store")
    sizes = [len(pos) for pos, _ in export.iter_blocks(ds, ["u"], np.arange(N))]
    assert sizes == [4, 4, 2]
    val = [pos.tolist() for pos, _ in export.iter_blocks(ds, ["u"], np.flatnonzero(SPLIT == 0))]
    assert val == [[0, 1], [2, 3], [4]]  # rows 0 2 | 4 7 | 8 by chunk


def test_refuses_to_overwrite_unless_asked(tmp_path):
    ds = make_store(tmp_path / "store", "1d")
    out = export_pdebench(tmp_path / "store", tmp_path / "out.hdf5", split="val")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_pdebench(tmp_path / "store", out)
    assert read_tensor_file(out)["tensor"].shape[0] == 2
    export_pdebench(tmp_path / "store", out, overwrite=True)
    np.testing.assert_array_equal(read_tensor_file(out)["tensor"], f32(ds.u.values))


def test_no_partial_file_when_export_fails_midway(tmp_path, monkeypatch):
    make_store(tmp_path / "store", "1d")
    out_dir = tmp_path / "exports"
    real = export.iter_blocks

    def fail_after_first(*args):
        blocks = real(*args)
        yield next(blocks)
        raise OSError("disk full")

    monkeypatch.setattr(export, "iter_blocks", fail_after_first)
    with pytest.raises(OSError, match="disk full"):
        export_pdebench(tmp_path / "store", out_dir / "out.hdf5")
    assert list(out_dir.iterdir()) == []


def test_failed_overwrite_keeps_the_old_file_and_names_bad_samples(tmp_path):
    make_store(tmp_path / "good", "2d")
    make_store(tmp_path / "bad", "2d", nan_sample=9)  # in the last chunk: fails midway
    out = export_pdebench(tmp_path / "good", tmp_path / "out.h5")
    before = out.read_bytes()
    with pytest.raises(ValueError, match=r"samples \[9\] hold non-finite"):
        export_pdebench(tmp_path / "bad", out, overwrite=True)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "out.h5"]


def test_bad_split_and_incomplete_store_attrs_raise_value_error(tmp_path):
    make_store(tmp_path / "store", "1d")
    with pytest.raises(ValueError, match="unknown split 'testing'; valid: train, val, test, cal"):
        export_pdebench(tmp_path / "store", tmp_path / "out.hdf5", split="testing")
    ds = xr.open_zarr(tmp_path / "store").load()
    del ds.attrs["pde"], ds.attrs["stationary"]
    ds.to_zarr(tmp_path / "bare", zarr_format=3, mode="w")
    with pytest.raises(ValueError, match=r"lacks attributes \['pde', 'stationary'\]"):
        export_pdebench(tmp_path / "bare", tmp_path / "out.hdf5")
    assert not (tmp_path / "out.hdf5").exists()


def test_missing_h5py_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` raise ImportError
    with pytest.raises(ImportError, match="pip install h5py"):
        export_pdebench(tmp_path / "store", tmp_path / "out.hdf5")


# What a PDEBench user relies on ----------------------------------------------------------------

K = np.linspace(0.004, 0.006, N)  # a sampled coefficient, for the cases below
COEFFICIENT_CASES = {
    # pde: (kind, sampled, constants, the PDEBench attributes expected, pdeflow names not there)
    "burgers": ("1d", {"nu": K}, {}, {"Nu": K * math.pi}, ["nu"]),
    "advection": ("1d", {}, {"c": 0.4}, {"beta": 0.4}, ["c"]),
    "fisher_kpp": ("1d", {"rho": 1 + K}, {"nu": 0.5}, {"Nu": 0.5, "rho": 1 + K}, ["nu"]),
    "darcy_2d": ("darcy", {"beta": 1 + K}, {}, {"beta": 1 + K}, []),
    "fitzhugh_nagumo_2d": (
        "2d",
        {"k": K},
        {"Du": 1e-3, "Dv": 5e-3},
        {"Du": 1e-3, "Dv": 5e-3, "k": K},
        [],
    ),
}


def out_name(kind: str) -> str:
    return "out.h5" if kind == "2d" else "out.hdf5"


@pytest.mark.parametrize("pde", sorted(COEFFICIENT_CASES))
def test_coefficients_carry_pdebench_names_and_scaling(tmp_path, pde):
    kind, sampled, constants, expected, absent = COEFFICIENT_CASES[pde]
    make_store(tmp_path / "store", kind, pde=pde, params=sampled, constants=constants)
    path = export_pdebench(tmp_path / "store", tmp_path / out_name(kind))
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        groups = [dict(f[k].attrs) for k in sorted(f.keys())] if kind == "2d" else []
    for name, value in expected.items():
        assert np.ndim(attrs[name]) == np.ndim(value), name  # scalar when constant, as PDEBench
        np.testing.assert_allclose(attrs[name], value, rtol=1e-12)
    assert not set(absent) & set(attrs)
    for i, group in enumerate(groups):  # each 2D sample's own values, PDEBench's names too
        for name in sampled:
            assert group[name] == pytest.approx(expected[name][i], rel=1e-12)
    own = json.loads(attrs["pdeflow_parameters"])  # nothing of pdeflow's lost
    assert own["constants"] == constants
    assert own["parameters"].keys() == sampled.keys()
    for name, values in sampled.items():
        np.testing.assert_array_equal(own["parameters"][name], values)


def test_burgers_constant_viscosity_is_pdebench_nu(tmp_path):
    # The pdebench-burgers preset's nu = 0.01/pi is PDEBench's Nu = 0.01 file.
    nu = round(0.01 / math.pi, 10)
    make_store(tmp_path / "store", "1d", pde="burgers", params={}, constants={"nu": nu})
    attrs = read_tensor_file(export_pdebench(tmp_path / "store", tmp_path / "b.hdf5"))["attrs"]
    # pi times the preset's 10-decimal rounding of 0.01/pi: 0.01 to 1.2e-8, not rounded again.
    assert attrs["Nu"] == pytest.approx(0.01, rel=2e-8) and "nu" not in attrs
    assert json.loads(attrs["pdeflow_parameters"])["constants"] == {"nu": nu}
    assert "Nu = 3.14159" in json.loads(attrs["pdeflow_parameters"])["pdebench_attributes"]["nu"]


@pytest.mark.parametrize(
    ("pde", "kind", "nodes", "shifted"),
    [
        ("burgers", "1d", True, True),  # periodic nodes 0 .. L - dx -> centres
        ("gray_scott_2d", "2d", True, True),
        ("kolmogorov_2d", "2d", True, False),  # its forcing is tied to the nodes
        ("darcy_2d", "darcy", False, False),  # already cell centres
        ("fitzhugh_nagumo_2d", "2d", False, False),
        ("custom", "1d", True, False),  # a user simulator's grid: unknown, as stored
    ],
)
def test_coordinates_are_cell_centres_as_in_pdebench(tmp_path, pde, kind, nodes, shifted):
    ds = make_store(tmp_path / "store", kind, pde=pde, nodes=nodes)
    path = export_pdebench(tmp_path / "store", tmp_path / out_name(kind))
    names = {"1d": ["x-coordinate"], "darcy": ["x-coordinate", "y-coordinate"]}
    names["2d"] = [f"{k}/grid/{a}" for k in ("0000", "0009") for a in ("x", "y")]
    with h5py.File(path, "r") as f:
        written = {name: (f[name][()], f[name].attrs["pdeflow_shift"]) for name in names[kind]}
        data = f["tensor"][()] if kind != "2d" else f["0000/data"][..., 0]
    for name, (values, shift) in written.items():
        stored = ds[name[-1] if kind == "2d" else name[0]].values
        dx = stored[1] - stored[0]
        expected = stored + dx / 2 if shifted else stored
        np.testing.assert_array_equal(values, f32(expected))
        assert shift == (dx / 2 if shifted else 0.0)
        if shifted:  # PDEBench's dx/2 .. L - dx/2 on the unit interval
            np.testing.assert_allclose(values[[0, -1]], [dx / 2, 1 - dx / 2], rtol=1e-6)
    expected_data = ds.u.values if kind != "2d" else ds.u.values[0]
    np.testing.assert_array_equal(data, f32(expected_data))  # the values stay the nodes'


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_finished_file_has_the_permissions_the_umask_gives(tmp_path, umask, mode):
    make_store(tmp_path / "store", "1d")
    old = os.umask(umask)
    try:
        path = export_pdebench(tmp_path / "store", tmp_path / "out.hdf5")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


@pytest.mark.parametrize("split", [None, "train"])
def test_each_sample_carries_its_split(tmp_path, split):
    make_store(tmp_path / "one", "1d")
    make_store(tmp_path / "two", "2d")
    rows = np.arange(N) if split is None else np.flatnonzero(SPLIT == 0)
    names = np.array(SPLIT_ATTRS["flag_meanings"].split())
    with h5py.File(export_pdebench(tmp_path / "one", tmp_path / "a.hdf5", split=split)) as f:
        np.testing.assert_array_equal(f["split"][()], SPLIT[rows])
        assert f["split"].attrs["flag_meanings"] == SPLIT_ATTRS["flag_meanings"]
        np.testing.assert_array_equal(f["split"].attrs["flag_values"], [0, 1, 2, 3])
    with h5py.File(export_pdebench(tmp_path / "two", tmp_path / "b.h5", split=split)) as f:
        assert [f[k].attrs["split"] for k in sorted(f.keys())] == list(names[SPLIT[rows]])
        np.testing.assert_array_equal(f.attrs["sample_split"], SPLIT[rows])
        assert f.attrs["split_flag_meanings"] == SPLIT_ATTRS["flag_meanings"]


def all_attribute_text(path: Path) -> list[str]:
    texts = []

    def collect(_name, obj):
        texts.extend(str(v) for v in obj.attrs.values())

    with h5py.File(path, "r") as f:
        texts.extend(str(v) for v in f.attrs.values())
        f.visititems(collect)
    return texts


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_no_local_paths_in_the_file(tmp_path, monkeypatch, kind):
    make_store(tmp_path / "store", kind)
    monkeypatch.chdir(tmp_path / "store")  # "." must still name the store, not a path
    path = export_pdebench(".", tmp_path / out_name(kind))
    assert h5py.File(path, "r").attrs["source"] == "store"
    assert not [t for t in all_attribute_text(path) if str(tmp_path) in t or "/" in t]


@pytest.mark.parametrize(
    ("kind", "name", "hint"),
    [("1d", "out.h5", "out.hdf5"), ("darcy", "d.nc", "d.hdf5"), ("2d", "out.hdf5", "out.h5")],
)
def test_refuses_names_pdebench_loaders_do_not_read(tmp_path, kind, name, hint):
    make_store(tmp_path / "store", kind)
    with pytest.raises(ValueError, match=f"name it {hint}"):
        export_pdebench(tmp_path / "store", tmp_path / "out" / name)
    assert not (tmp_path / "out").exists()


def fno_dataset_single(path: Path, initial_step: int, rr: int, rr_t: int, test_ratio=0.1):
    """PDEBench's ``FNODatasetSingle`` (pdebench/models/fno/utils.py) for its tensor files.

    Returns:
        (the training items ``(xx, yy, grid)`` as ``__getitem__`` gives them, the file attrs).
    """
    assert path.name[-2:] != "h5"  # names ending in h5 go down its 2D group branch
    with h5py.File(path, "r") as f:
        tensor = np.array(f["tensor"], dtype=np.float32)
        if tensor.ndim == 3:  # 1D: [batch, t, x] -> [batch, x, t, channel]
            data = np.transpose(tensor[:, ::rr_t, ::rr], (0, 2, 1))[..., None]
            grid = np.array(f["x-coordinate"], dtype=np.float32)[::rr][:, None]
        else:  # Darcy: the coefficient nu and the solution as two "frames"
            u = np.transpose(tensor[:, :, ::rr, ::rr], (0, 2, 3, 1))
            nu = np.transpose(
                np.array(f["nu"], dtype=np.float32)[:, None, ::rr, ::rr], (0, 2, 3, 1)
            )
            data = np.concatenate([nu, u], axis=-1)[..., None]
            x, y = (np.array(f[k], dtype=np.float32) for k in ("x-coordinate", "y-coordinate"))
            grid = np.stack(np.meshgrid(x, y, indexing="ij"), axis=-1)[::rr, ::rr]
        attrs = dict(f.attrs)
    train = data[int(len(data) * test_ratio) :]
    return [(d[..., :initial_step, :], d, grid) for d in train], attrs


def test_pdebench_loader_logic_reads_the_1d_export(tmp_path):
    ds = make_store(tmp_path / "store", "1d", pde="burgers", params={"nu": K}, nodes=True)
    path = export_pdebench(tmp_path / "store", tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5")
    items, attrs = fno_dataset_single(path, initial_step=2, rr=2, rr_t=2)
    assert len(items) == N - 1  # int(10 * 0.1) = 1 sample held out as its test set
    for i, (xx, yy, grid) in enumerate(items, start=1):
        assert xx.shape == (8, 2, 1) and yy.shape == (8, 3, 1) and grid.shape == (8, 1)
        np.testing.assert_array_equal(yy[..., 0], f32(ds.u.values[i, ::2, ::2]).T)
        np.testing.assert_array_equal(xx, yy[:, :2])
        np.testing.assert_array_equal(grid[:, 0], f32(ds.x.values[::2] + 1 / 32))
    np.testing.assert_allclose(attrs["Nu"], K * math.pi)  # PDEBench's 1D Burgers attribute
    assert "nu" not in attrs and attrs["source"] == "store"


def test_pdebench_loader_logic_reads_the_darcy_export(tmp_path):
    beta = {"beta": np.full(N, 0.1)}
    ds = make_store(tmp_path / "store", "darcy", pde="darcy_2d", params=beta)
    path = export_pdebench(tmp_path / "store", tmp_path / "2D_DarcyFlow_beta0.1_Train.hdf5")
    items, attrs = fno_dataset_single(path, initial_step=1, rr=2, rr_t=1)
    xx, yy, grid = items[0]
    assert xx.shape == (8, 3, 1, 1) and yy.shape == (8, 3, 2, 1) and grid.shape == (8, 3, 2)
    np.testing.assert_array_equal(yy[..., 0, 0], f32(ds.a.values[1, 0, ::2, ::2]))
    np.testing.assert_array_equal(yy[..., 1, 0], f32(ds.u.values[1, 0, ::2, ::2]))
    assert attrs["beta"] == 0.1  # PDEBench's Darcy attribute, one value per file
