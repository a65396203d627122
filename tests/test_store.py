"""Storage contract: template, aligned region writes, manifest, stage records, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from pdeflow.storage import ConfigMismatch, RunStore, StoreError, resolve_store
from pdeflow.storage import dataset as ds_io
from pdeflow.storage.checkpoints import list_checkpoints, load_latest, save_checkpoint
from pdeflow.storage.manifest import BlockManifest


def _template(path, n=10, chunk=4, t=3, nx=5, dtype="float32"):
    coords = {"sample": ("sample", np.arange(n)), "nu": ("sample", np.linspace(0.1, 1.0, n))}
    ds_io.create_trajectories(
        path,
        fields={"u": {"units": "velocity"}},
        space_dims=("x",),
        shape=(n, t, nx),
        chunk_size=chunk,
        n_blocks=-(-n // chunk),
        dtype=dtype,
        coords=coords,
        attrs={"note": "test"},
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_region_writes_round_trip(tmp_path, dtype):
    path = tmp_path / "s"
    _template(path, dtype=dtype)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((10, 3, 5)).astype(dtype)
    # Blocks in reverse order, the last one partial: each owns whole chunks.
    for block, start in reversed(list(enumerate(range(0, 10, 4)))):
        ds_io.write_block(path, block, start, data[start : start + 4][:, :, None], 0.1, ["u"])
    RunStore(path).consolidate()
    ds = xr.open_zarr(path)
    assert ds.u.dtype == dtype and ds.attrs["note"] == "test"
    np.testing.assert_array_equal(ds.u.values, data)
    np.testing.assert_allclose(ds.nu.values, np.linspace(0.1, 1.0, 10))
    assert BlockManifest(path).n_complete() == 3
    np.testing.assert_array_equal(
        ds_io.read_samples(path, np.array([9, 0, 5])), data[[0, 5, 9], :, None]
    )


def test_unwritten_blocks_read_as_nan_and_stay_incomplete(tmp_path):
    path = tmp_path / "s"
    _template(path)
    ds_io.write_block(path, 1, 4, np.ones((4, 3, 5))[:, :, None], 0.1, ["u"])
    manifest = BlockManifest(path)
    assert manifest.missing() == [0, 2]
    values = xr.open_zarr(path, consolidated=False).u.values
    assert np.isnan(values[:4]).all() and (values[4:8] == 1).all()


@pytest.mark.parametrize(("start", "n"), [(2, 4), (4, 3), (8, 3)])
def test_misaligned_region_is_refused(tmp_path, start, n):
    path = tmp_path / "s"
    _template(path)
    with pytest.raises(ValueError, match="not aligned"):
        ds_io.write_block(path, 0, start, np.zeros((n, 3, 5))[:, :, None], 0.0, ["u"])
    assert BlockManifest(path).n_complete() == 0


def test_iter_chunks_streams_selected_rows_in_given_order(tmp_path):
    path = tmp_path / "s"
    _template(path)
    data = np.arange(150, dtype="float32").reshape(10, 3, 5)
    for block, start in enumerate(range(0, 10, 4)):
        ds_io.write_block(path, block, start, data[start : start + 4][:, :, None], 0.0, ["u"])
    picked = np.array([1, 2, 6, 9])
    chunks = list(ds_io.iter_chunks(path, picked, order=np.array([2, 1, 0])))
    assert [list(rows) for rows, _ in chunks] == [[9], [6], [1, 2]]
    for rows, values in chunks:
        np.testing.assert_array_equal(values, data[rows, :, None])


def test_stage_records_refuse_other_config_unless_overwrite(tmp_path):
    store = RunStore(tmp_path / "s")
    store.start_stage("generate", {"n": 1}, "h1")
    store.finish_stage("generate", "h1", {"blocks_total": 1})
    store.start_stage("train", {"epochs": 2}, "t1")
    assert store.is_complete("generate", "h1") and not store.is_complete("train", "t1")
    store.check_config("generate", {"n": 1}, "h1", overwrite=False)
    with pytest.raises(ConfigMismatch, match=r"n: 1 -> 2"):
        store.check_config("generate", {"n": 2}, "h2", overwrite=False)
    store.check_config("train", {"epochs": 3}, "t2", overwrite=True)
    assert store.record("train") is None and store.record("generate") is not None
    store.check_config("generate", {"n": 2}, "h2", overwrite=True)
    assert not store.path.exists()


def test_store_names_cannot_escape_runs_dir(runs_dir):
    assert resolve_store("a/b") == (runs_dir / "a" / "b").resolve()
    with pytest.raises(StoreError, match="outside"):
        resolve_store("../elsewhere")


def test_checkpoints_atomic_latest_and_weights_only(tmp_path):
    d = tmp_path / "ck"
    for epoch in (1, 2, 3):
        save_checkpoint(d, epoch, {"epoch": epoch, "w": torch.full((2,), float(epoch))}, keep=2)
    assert [p.name for p in list_checkpoints(d)] == ["epoch-000002.pt", "epoch-000003.pt"]
    (d / ".tmp-partial").write_bytes(b"torn")  # what a kill mid-write leaves behind
    state = load_latest(d)
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.full((2,), 3.0))
    # weights_only refuses arbitrary pickled objects.
    torch.save({"obj": object()}, d / "epoch-000009.pt")
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_latest(d)
