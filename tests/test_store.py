"""The run store's contract: template, durable block writes, checked reads, verification,
the lock, store names, records, checkpoints, and what wiping and clearing remove."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import xarray as xr

from pdeflow.storage import (
    RunStore,
    StageRecord,
    StoreBusy,
    StoreDamaged,
    StoreError,
    StoreNested,
    resolve_store,
)
from pdeflow.storage.dataset import Layout, Template
from pdeflow.storage.errors import NonFiniteData
from pdeflow.storage.fsio import TMP_MARK, file_entry

N, CHUNK, BLOCK, T, NX = 10, 2, 4, 3, 5


def _layout(n=N, key="k1", dtype="float32") -> Layout:
    return Layout(
        fields=("u",), space_dims=("x",), space=(NX,), n_frames=T, n_samples=n,
        chunk_size=CHUNK, block_size=BLOCK, dtype=dtype, key=key,
    )  # fmt: skip


def _template(n=N, key="k1", dtype="float32") -> Template:
    coords = {
        "sample": ("sample", np.arange(n)),
        "nu": ("sample", np.linspace(0.1, 1.0, 100)[:n]),
        "split": ("sample", np.arange(n) % 2, {"flag_meanings": "train test"}),
    }
    return Template(_layout(n, key, dtype), coords, {"note": "test"}, {"u": {"units": "m/s"}})


def _store(tmp_path, n=N, key="k1", dtype="float32") -> RunStore:
    store = RunStore(tmp_path / "s")
    with store.lock():
        store.write_template(_template(n, key, dtype))
    return store


def _data(n=N, dtype="float32", seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, T, 1, NX)).astype(dtype)


def _write_all(store: RunStore, data: np.ndarray) -> None:
    layout = store.layout()
    for block in reversed(range(layout.n_blocks)):  # any order: each block owns its chunks
        start, stop = layout.block_range(block)
        store.write_block(block, data[start:stop], 0.1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blocks_round_trip_through_xarray_and_checked_reads(tmp_path, dtype):
    store = _store(tmp_path, dtype=dtype)
    data = _data(dtype=dtype)
    _write_all(store, data)  # the last block holds 2 of 4 samples: a partial edge chunk too
    ds = xr.open_zarr(store.path)
    assert ds.u.dtype == dtype and ds.attrs["note"] == "test" and ds.u.attrs["units"] == "m/s"
    np.testing.assert_array_equal(ds.u.values, data[:, :, 0])
    np.testing.assert_array_equal(store.read_samples([9, 0, 5]), data[[0, 5, 9]])
    assert sorted(store.complete_blocks()) == [0, 1, 2]
    # Chunks of 2 samples: rows 1 | 2 | 6 | 9 lie in chunks 0, 1, 3, 4, visited in this order.
    chunks = list(store.iter_chunks(np.array([1, 2, 6, 9]), order=np.array([3, 2, 0, 1])))
    assert [list(rows) for rows, _ in chunks] == [[9], [6], [1], [2]]
    for rows, values in chunks:
        np.testing.assert_array_equal(values, data[rows])
    np.testing.assert_array_equal(store.dask_trajectories([3, 8]).compute(), data[[3, 8]])
    np.testing.assert_array_equal(store.sample_indices("test"), np.arange(1, N, 2))


def test_every_chunk_file_is_recorded_exactly_and_no_temp_file_remains(tmp_path):
    store = _store(tmp_path)
    _write_all(store, _data())
    layout = store.layout()
    for block, entry in store.complete_blocks().items():
        assert set(entry.files) == set(layout.block_files(block))
        for rel, (size, crc) in entry.files.items():
            assert (size, crc) == tuple(file_entry(store.path / rel))
            assert size == layout.chunk_nbytes
    assert not [p for p in store.path.rglob("*") if TMP_MARK in p.name or ".partial" in p.name]


def test_unwritten_blocks_read_as_nan_and_are_never_complete(tmp_path):
    store = _store(tmp_path)
    store.write_block(1, np.ones((BLOCK, T, 1, NX)), 0.1)
    assert sorted(store.complete_blocks()) == [1]
    values = xr.open_zarr(store.path).u.values
    assert np.isnan(values[:4]).all() and (values[4:8] == 1).all()
    with pytest.raises(StoreDamaged, match="block 0 is not complete"):
        store.read_samples([0])


def test_a_block_of_the_wrong_shape_or_with_nan_is_refused_and_leaves_no_entry(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(ValueError, match="expected"):
        store.write_block(0, np.zeros((3, T, 1, NX)), 0.0)
    with pytest.raises(ValueError, match="does not exist"):
        store.write_block(3, np.zeros((2, T, 1, NX)), 0.0)  # beyond n_samples
    bad = np.zeros((BLOCK, T, 1, NX))
    bad[2, 1, 0, 3] = np.nan
    with pytest.raises(NonFiniteData, match=r"samples \[2\]"):
        store.write_block(0, bad, 0.0)
    assert store.complete_blocks() == {}


@pytest.mark.parametrize("fault", ["truncate", "overwrite", "delete"])
def test_damaged_chunks_are_found_by_verification_and_refused_on_read(tmp_path, fault):
    store = _store(tmp_path)
    _write_all(store, _data())
    chunk = store.path / "u" / "c" / "3" / "0" / "0"  # block 1
    if fault == "truncate":
        with open(chunk, "r+b") as fh:
            fh.truncate(10)
    elif fault == "overwrite":
        with open(chunk, "r+b") as fh:
            fh.seek(20)
            fh.write(b"\x00\x00\x80\x7f")  # +inf where a float was
    else:
        chunk.unlink()
    expected = {"truncate": "wrong size", "overwrite": "wrong CRC32", "delete": "missing"}[fault]
    bad = store.block_problems(store.complete_blocks(), deep=True)
    assert list(bad) == [1] and expected in bad[1] and "u/c/3/0/0" in bad[1]
    # A size check finds all but the overwrite, which only the CRC32 sees.
    shallow = store.block_problems(store.complete_blocks(), deep=False)
    assert list(shallow) == ([] if fault == "overwrite" else [1])
    with pytest.raises(StoreDamaged, match="u/c/3/0/0"):
        store.read_samples([6])
    store.read_samples([0, 9])  # the other blocks still read


def test_an_unfinished_template_is_recognised_and_a_rebuild_keeps_the_blocks(tmp_path):
    store = _store(tmp_path)
    data = _data()
    _write_all(store, data)
    files = {b: dict(e.files) for b, e in store.complete_blocks().items()}
    # What a kill during the template write leaves: the marker says "building".
    marker = store.marker()
    with store.lock():
        store._write_marker({"state": "building", "layout": marker["layout"]})
    assert store.layout() is None and store.complete_blocks() == {}
    assert "not complete (state: building)" in store.template_problems()[0]
    (store.path / "nu" / "zarr.json").unlink()  # and a half-written coordinate
    with store.lock():
        store.write_template(_template())
    assert store.template_problems() == []
    assert {b: dict(e.files) for b, e in store.complete_blocks().items()} == files
    np.testing.assert_array_equal(xr.open_zarr(store.path).u.values, data[:, :, 0])


def test_template_damage_is_found(tmp_path):
    store = _store(tmp_path)
    with open(store.path / "nu" / "c" / "0", "r+b") as fh:
        fh.write(b"\xff")
    (problem,) = store.template_problems()
    assert "nu/c/0" in problem and "CRC32" in problem


def test_growing_the_template_keeps_old_rows_and_reopens_a_grown_block(tmp_path):
    store = _store(tmp_path)
    data = _data(16)
    _write_all(store, data[:N])
    with store.lock():
        store.write_template(_template(16))
    # Blocks 0 and 1 are unchanged; block 2 held samples 8-9 of 8-11: it is no longer complete.
    assert sorted(store.complete_blocks()) == [0, 1]
    store.write_block(2, data[8:12], 0.1)
    store.write_block(3, data[12:16], 0.1)
    ds = xr.open_zarr(store.path)
    np.testing.assert_array_equal(ds.u.values, data[:, :, 0])
    np.testing.assert_array_equal(ds.nu.values, np.linspace(0.1, 1.0, 100)[:16])


def test_entries_of_another_dataset_key_are_not_complete(tmp_path):
    store = _store(tmp_path)
    _write_all(store, _data())
    with store.lock():
        store.write_template(_template(key="k2"))  # what an orphan of another config wrote
    assert store.complete_blocks() == {}


def _try_lock(path, what="other") -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        f"""
        from pdeflow.storage import RunStore, StoreBusy
        try:
            with RunStore({str(path)!r}).lock({what!r}):
                print("locked")
        except StoreBusy as err:
            print("busy:", err)
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_the_lock_refuses_a_second_process_and_ends_with_its_holder(tmp_path):
    store = RunStore(tmp_path / "s")
    with store.lock("first run"):
        with store.lock("again"):  # re-entrant in one process
            assert store.holds_lock()
        out = _try_lock(store.path).stdout
        assert out.startswith("busy:") and f"pid {os.getpid()}" in out and "first run" in out
    assert not store.holds_lock() and _try_lock(store.path).stdout.strip() == "locked"
    # A holder killed by SIGKILL leaves no stale lock: the kernel drops it with the process.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import sys, time
from pdeflow.storage import RunStore
with RunStore({str(store.path)!r}).lock("killed"):
    print("held", flush=True)
    time.sleep(60)
""",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(StoreBusy):
        with store.lock():
            pass
    holder.kill()
    holder.wait()
    with store.lock():
        assert store.holds_lock()


def test_store_names_cannot_escape_nest_or_contain_stores(runs_dir):
    assert resolve_store("a/b") == (runs_dir / "a" / "b").resolve()
    with pytest.raises(StoreError, match="outside"):
        resolve_store("../elsewhere")
    outer = RunStore.named("nest-outer")
    with outer.lock():
        outer.write_template(_template())
    for inner in ("nest-outer/u", "nest-outer/u/c", "nest-outer/new"):
        with pytest.raises(StoreNested, match="inside store 'nest-outer'"):
            RunStore.named(inner)
    deep = RunStore.named("nest-parent/child")
    with deep.lock():
        pass
    with pytest.raises(StoreNested, match="would contain store 'nest-parent/child'"):
        RunStore.named("nest-parent")


def test_records_round_trip_and_a_damaged_record_is_no_record(tmp_path):
    store = RunStore(tmp_path / "s")
    rec = StageRecord(stage="train", config_hash="h", config={"train": {}}, status="complete",
                      metrics={"loss": 0.5}, artifacts={"a": (3, 7)}, outputs="o")  # fmt: skip
    with store.lock():
        store.write_record(rec)
    assert store.record("train") == rec and store.record("reduce") is None
    same = rec.model_copy(update={"metrics": {"loss": 0.1}, "finished": None})
    assert same.digest() == rec.digest()  # lineage ignores times and metrics
    assert rec.model_copy(update={"outputs": "p"}).digest() != rec.digest()
    (store.meta / "stages" / "train.json").write_text('{"stage": "tr')
    assert store.record("train") is None
    with pytest.raises(RuntimeError, match="needs the store's lock"):
        store.write_record(rec)


def test_checkpoints_keep_two_and_fall_back_past_a_damaged_newest(tmp_path):
    store = RunStore(tmp_path / "s")
    with store.lock():
        for epoch in (1, 2, 3):
            store.save_checkpoint("train", epoch, {"epoch": epoch, "w": torch.full((2,), 1.0)})
    folder = store.work_dir("train") / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch-000002.json", "epoch-000002.pt", "epoch-000003.json", "epoch-000003.pt",
    ]  # fmt: skip
    state, warnings = store.load_checkpoint("train")
    assert state["epoch"] == 3 and warnings == []
    with open(folder / "epoch-000003.pt", "r+b") as fh:
        fh.truncate(50)
    state, warnings = store.load_checkpoint("train")
    assert state["epoch"] == 2 and "epoch-000003.pt is damaged" in warnings[0]
    # A checkpoint whose checksum file was never written (a kill in between) is no checkpoint.
    torch.save({"epoch": 9}, folder / "epoch-000009.pt")
    assert store.load_checkpoint("train")[0]["epoch"] == 2
    # weights_only refuses arbitrary pickled objects: such a file counts as damaged too.
    other = RunStore(tmp_path / "t")
    with other.lock():
        other.save_checkpoint("train", 1, {"epoch": 1})
        other.save_checkpoint("train", 2, {"epoch": 2})
    torch.save({"obj": object()}, other.work_dir("train") / "checkpoints" / "epoch-000002.pt")
    state, warnings = other.load_checkpoint("train")
    assert state["epoch"] == 1 and "epoch-000002.pt" in warnings[0]


def test_models_are_checked_before_they_load(tmp_path):
    store = RunStore(tmp_path / "s")
    with store.lock():
        rel, entry = store.save_model("train", "model.pt", {"w": torch.arange(3.0)})
    assert torch.equal(store.load_model(rel, entry)["w"], torch.arange(3.0))
    with open(store.path / rel, "r+b") as fh:
        fh.seek(entry.size // 2)
        fh.write(b"\x00")
    with pytest.raises(StoreDamaged, match="model.pt"):
        store.load_model(rel, entry)


def test_wipe_and_clear_remove_what_belongs_to_the_store_and_nothing_else(tmp_path):
    store = _store(tmp_path)
    _write_all(store, _data())
    neighbour = tmp_path / "neighbour.txt"
    neighbour.write_text("not the store's")
    with store.lock():
        store.write_group("reduce", {"m": (("k",), np.ones(3))})
        store.save_model("reduce", "x.pt", {"a": torch.ones(1)})
        store.write_plot("sobol", b"\x89PNG fake")
        assert xr.open_zarr(store.path, group="reduce").m.values.tolist() == [1, 1, 1]
        assert store.template_problems() == []  # consolidation re-recorded the root metadata
        store.clear_stage("reduce")
        assert not (store.path / "reduce").exists() and store.plots() == {}
        assert not store.work_dir("reduce").exists() and store.template_problems() == []
        store.wipe()
    assert sorted(p.name for p in store.path.rglob("*")) == ["_pdeflow", "lock"]
    assert neighbour.read_text() == "not the store's"


def test_sweep_removes_what_killed_writers_left(tmp_path):
    store = _store(tmp_path)
    stray = store.path / "u" / "c" / f"{TMP_MARK}0.123.abcd"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half")
    (store.path / "nu" / "zarr.json.0123.partial").write_bytes(b"half")
    (store.scratch / "block-3").mkdir(parents=True)
    with store.lock():
        assert store.sweep() >= 2
    assert not stray.exists() and not store.scratch.exists()
    assert store.template_problems() == []
