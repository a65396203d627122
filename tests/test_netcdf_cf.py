"""netCDF out of every group of a run store: exact round trips, JSON attributes, CF attributes.

One tiny store goes through all four stages (an ensemble of two, a DMD reduced-order model, so
that every group a stage writes exists); each group is written with ``to_netcdf()`` (h5netcdf)
and read back with ``xarray.open_dataset``. A store written in the older form (dicts, bools and
lists in its Zarr attributes, non-UDUNITS ``units``) must read as before and export too.
"""

from __future__ import annotations

import math
import shutil

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import numpy as np
import pytest
import xarray as xr
import zarr

from pdeflow.storage import RunStore
from pdeflow.storage.fsio import file_entry
from pdeflow.storage.groups import decode_attrs, encode_attrs
from pdeflow.tasks.config import load_config
from pdeflow.tasks.stages import run_stage
from tests.conftest import TINY

ENGINE = "h5netcdf"
# The root dataset and every group the stages write (train.ensemble > 1, a reduce method that
# saves its fitted state): a new group is caught by test_these_are_all_the_groups.
GROUPS = (None, "train_ensemble", "reduce", "reduce_model", "quantify")
# Smaller than tiny.yaml wherever it costs time (about 5 s for the four stages on 2 cores);
# enough samples for every split, for DMD, and for conformal bands at alpha 0.25.
SMALL = [
    "generate.n_samples=32",
    "generate.block_size=16",
    "generate.n_x=32",
    "generate.n_frames=6",
    "train={width: 4, modes: 4, n_layers: 1, epochs: 1, batch_size: 32, ensemble: 2}",
    "reduce.method=dmd",
    "quantify.alpha=0.25",
    "quantify.n_mc=16",
    "quantify.n_resplits=4",
    "quantify.sobol_n_base=8",
]


@pytest.fixture(scope="module")
def built(runs_dir):
    """The tiny store after all four stages, run on an in-process Dask cluster (threads: the
    store is small, and worker processes would cost more start-up than the work)."""
    from distributed import Client

    cfg = load_config(TINY, ["store=netcdf-cf", *SMALL])
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        for stage in ("generate", "train", "reduce", "quantify"):
            run_stage(stage, cfg, client=c)
    return cfg, RunStore.named(cfg.store)


def _plain(value):
    """An attribute value as plain Python (netCDF gives numpy scalars and arrays back)."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


def _same_attr(got, want) -> bool:
    """netCDF gives a one-element numeric list back as a scalar: compare as lists then."""
    got, want = _plain(got), _plain(want)
    if isinstance(want, list) and not isinstance(got, list):
        return [got] == want
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    return got == want


def _write_and_read(ds: xr.Dataset, path) -> xr.Dataset:
    ds.to_netcdf(path, engine=ENGINE)
    with xr.open_dataset(path, engine=ENGINE) as back:
        return back.load()


def test_these_are_all_the_groups(built):
    _, store = built
    names = {name for name, _ in zarr.open_group(str(store.path), mode="r").groups()}
    assert names == {g for g in GROUPS if g is not None}


@pytest.mark.parametrize("group", GROUPS, ids=[g or "root" for g in GROUPS])
def test_every_group_round_trips_through_netcdf_exactly(built, tmp_path, group):
    _, store = built
    ds = store.open_dataset(group).load()
    back = _write_and_read(ds, tmp_path / f"{group or 'root'}.nc")
    assert set(back.variables) == set(ds.variables)
    for name, var in ds.variables.items():
        got = back.variables[name]
        assert got.dims == var.dims, name
        if var.dtype.kind in "US":  # fixed-width strings come back as Python strings
            assert got.values.astype(str).tolist() == var.values.astype(str).tolist(), name
            continue
        # Exact: netCDF stores the same bits (NaN compares equal to NaN here).
        assert got.dtype == var.dtype, name
        np.testing.assert_array_equal(got.values, var.values, err_msg=name)
        got_attrs, want_attrs = decode_attrs(got.attrs), decode_attrs(var.attrs)
        assert got_attrs.keys() == want_attrs.keys(), name
        assert all(_same_attr(got_attrs[k], want_attrs[k]) for k in want_attrs), name
    # Every attribute, once decoded, is what the store's own reader gives.
    want = store.attrs() if group is None else store.read_group(group).attrs
    got = decode_attrs(back.attrs)
    assert got.keys() == want.keys()
    assert all(_same_attr(got[k], want[k]) for k in want), {k: got[k] for k in want}


def test_json_attributes_decode_to_the_original_values(built, tmp_path):
    cfg, store = built
    back = _write_and_read(store.open_dataset(), tmp_path / "root.nc")
    assert isinstance(back.attrs["config_json"], str) and "config" not in back.attrs
    attrs = decode_attrs(back.attrs)
    assert attrs["config"] == cfg.generate.model_dump(mode="json")
    assert attrs["fields"] == ["u"] and attrs["stationary"] is False
    assert attrs["parameters"] == list(cfg.generate.parameter_names)
    assert set(attrs["normalization"]["u"]) == {"mean", "std"}
    saved = _write_and_read(store.open_dataset("reduce_model"), tmp_path / "m.nc")
    model = decode_attrs(saved.attrs)
    assert model["pdeflow_model"]["method"] == "dmd"
    assert model["pdeflow_model"] == store.read_group("reduce_model").attrs["pdeflow_model"]
    reduce = decode_attrs(_write_and_read(store.open_dataset("reduce"), tmp_path / "r.nc").attrs)
    assert reduce["basis_state"] == store.read_group("reduce").attrs["basis_state"]
    assert isinstance(reduce["basis_state"]["settings"], dict)


def test_the_encoding_round_trips_every_kind_of_value_through_netcdf(tmp_path):
    values = {
        "text": "a b", "integer": 3, "real": 0.1, "nan": float("nan"), "ints": [0, 1, 2, 3],
        "floats": [0.5, 1e-300], "flag": True, "nothing": None, "empty": [], "names": ["u"],
        "mixed": [1, "a", 2.5], "nested": {"a": {"b": [1, 2]}, "c": None},
        "numpy": {"i": np.int64(7), "x": np.float32(0.25), "v": np.arange(2)},
    }  # fmt: skip
    encoded = encode_attrs(values)
    assert encode_attrs(encoded) == encoded  # idempotent: a store's attrs encode to themselves
    assert set(encoded) == {
        "text", "integer", "real", "nan", "ints", "floats", "flag_json", "nothing_json",
        "empty_json", "names_json", "mixed_json", "nested_json", "numpy_json",
    }  # fmt: skip
    path = tmp_path / "attrs.nc"
    xr.Dataset(attrs=encoded).to_netcdf(path, engine=ENGINE)
    with xr.open_dataset(path, engine=ENGINE) as back:
        got = decode_attrs(back.attrs)
    want = values | {"numpy": {"i": 7, "x": 0.25, "v": [0, 1]}}
    assert got.keys() == want.keys()
    assert all(_same_attr(got[k], want[k]) for k in want), got
    assert got["flag"] is True and got["nothing"] is None and got["names"] == ["u"]
    # Old-form values pass through; where both forms exist the encoded one wins.
    assert decode_attrs({"config": {"a": 1}, "config_json": '{"a": 2}'}) == {"config": {"a": 2}}
    assert decode_attrs({"note_json": "not json"}) == {"note_json": "not json"}


def test_coordinates_and_fields_carry_cf_attributes(built, tmp_path):
    from cf_xarray.units import units

    cfg, store = built
    ds = _write_and_read(store.open_dataset(), tmp_path / "root.nc")
    assert ds.attrs["Conventions"] == "CF-1.12"
    assert ds.cf.axes == {"T": ["time"], "X": ["x"]}
    assert ds.cf.coordinates == {"time": ["time"]}
    # Burgers is non-dimensional: no CF standard name applies (time's and
    # projection_x_coordinate's canonical units are s and m).
    assert ds.cf.standard_names == {}
    assert ds.u.attrs["units"] == "1" and ds.u.attrs["long_name"] == "burgers field u (velocity)"
    assert ds.x.attrs["units"] == "1" and ds.time.attrs["units"] == "1"
    # CF flags: values of the variable's own type, one meaning each.
    assert ds.split.attrs["flag_values"].dtype == ds.split.dtype == np.int8
    assert ds.split.attrs["flag_meanings"].split() == ["train", "val", "test", "calibration"]
    for name in cfg.generate.parameter_names:
        assert ds[name].attrs["units"] == "1" and ds[name].attrs["long_name"]
    for name, var in ds.variables.items():
        assert var.attrs.get("long_name"), name
        if "units" in var.attrs:  # every units string parses (pint, CF's UDUNITS spelling)
            assert units.parse_units(var.attrs["units"]).dimensionless, name


def _old_form(store: RunStore) -> None:
    """Rewrite the store's attributes as the code before JSON attributes wrote them: dicts,
    bools and lists as they are, and the old units words."""
    root = zarr.open_group(str(store.path), mode="r+")
    root.attrs.put(decode_attrs(root.attrs))
    for group in GROUPS[1:]:
        sub = zarr.open_group(str(store.path), path=group, mode="r+")
        sub.attrs.put(decode_attrs(sub.attrs))
    zarr.open_array(str(store.path), path="u", mode="r+").attrs.put(
        {"units": "velocity", "long_name": "burgers field u"}
    )
    zarr.open_array(str(store.path), path="x", mode="r+").attrs.put(
        {"units": "length", "grid_points": "periodic nodes"}
    )
    with store.lock():
        store.consolidate()
        for stage in ("train", "reduce", "quantify"):  # records vouch for the files as written
            rec = store.record(stage)
            files = {rel: tuple(file_entry(store.path / rel)) for rel in rec.artifacts}
            store.write_record(rec.model_copy(update={"artifacts": files}))


def test_a_store_of_the_older_form_still_reads_and_exports(built, runs_dir, tmp_path):
    from pdeflow.storage.export import export_pdebench
    from pdeflow.storage.trajectory import open_run
    from pdeflow.tasks.stages.models import load_rom

    cfg, new = built
    shutil.copytree(new.path, runs_dir / "netcdf-old")
    old = RunStore.named("netcdf-old")
    _old_form(old)
    raw = dict(zarr.open_group(str(old.path), mode="r").attrs)
    assert isinstance(raw["config"], dict) and raw["stationary"] is False  # the old form
    assert old.attrs() == new.attrs()
    for group in GROUPS[1:]:
        assert old.read_group(group).attrs == new.read_group(group).attrs, group
    assert old.record("reduce") is not None
    assert load_rom(cfg.model_copy(update={"store": "netcdf-old"}), old).method == "dmd"
    ds, splits = open_run(old)
    assert ds.attrs["fields"] == ["u"] and sum(map(len, splits.values())) == 32
    # Opening encodes the old attributes, so to_netcdf works on every group of the old store.
    for group in GROUPS:
        want = old.attrs() if group is None else old.read_group(group).attrs
        back = _write_and_read(old.open_dataset(group), tmp_path / f"{group or 'root'}.nc")
        assert decode_attrs(back.attrs).keys() == want.keys(), group
    assert export_pdebench(old.path, tmp_path / "old.hdf5").is_file()
    # A new attribute replaces the old form of its name instead of standing beside it.
    with old.lock():
        old.update_attrs({"normalization": {"u": {"mean": 0.0, "std": 1.0}}})
    raw = dict(zarr.open_group(str(old.path), mode="r").attrs)
    assert "normalization" not in raw and "normalization_json" in raw
    assert old.attrs()["normalization"] == {"u": {"mean": 0.0, "std": 1.0}}
