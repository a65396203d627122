"""PDEBench-layout HDF5 export: round trips read back the way PDEBench's loaders read them."""

from __future__ import annotations

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


def make_store(path: Path, kind: str, nan_sample: int | None = None) -> xr.Dataset:
    """A small synthetic run store: kind "1d" (one field), "1d2" (two), "2d" or "darcy"."""
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
    coords = {
        "sample": ("sample", np.arange(N)),
        "time": ("time", np.linspace(0.0, 0.4, n_t), {"units": "s"}),
        "seed": ("sample", np.arange(N, dtype=np.uint64) * 7 + 1),
        "split": ("sample", SPLIT, SPLIT_ATTRS),
        "nu": ("sample", np.linspace(0.01, 0.1, N), {"units": "m^2/s"}),
        "beta": ("sample", np.full(N, 0.5)),  # constant: a scalar attribute, as in PDEBench
    }
    for name, size in space.items():
        coords[name] = (name, (np.arange(size) + 0.5) / size, {"units": "m"})
    attrs = {
        "fields": fields,
        "pde": kind,
        "stationary": kind == "darcy",
        "parameters": ["nu", "beta"],
        "constants": {"gamma": 1.4},
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
    assert set(got) - {"attrs", "dtypes"} == {"tensor", "x-coordinate", "t-coordinate"}
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
    assert set(got) - {"attrs", "dtypes"} == {"nu", "tensor", "x-coordinate", "y-coordinate"}
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
