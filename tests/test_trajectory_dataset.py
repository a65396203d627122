"""``TrajectoryDataset`` and ``open_run``: the run store as PyTorch windows and as xarray.

Two real stores come from the generate stage: 1D Burgers (one field, 22 samples in chunks of 4,
so the last chunk is partial) and 2D shallow water (three fields ``h, hu, hv`` on 12 x 12).
Every item is compared with the store's arrays read independently, by ``read_samples`` and by
xarray; windows are enumerated here from their definition (loops over samples and starts), not
from the dataset's index arithmetic. Values are compared exactly: the dataset only slices and
copies the stored float32 bytes, so any difference at all is a bug.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from distributed import Client
from torch.utils.data import DataLoader

from pdeflow.storage import (
    RunStore,
    StoreDamaged,
    TrajectoryDataset,
    chunk_order_sampler,
    open_run,
)
from pdeflow.tasks.config import load_config
from tests.conftest import ROOT, TINY
from tests.stage_helpers import generate

SMALL = ["generate.chunk_size=4", "generate.block_size=8", "generate.design=random"]
ONE_D = ["store=trajectory-1d", "generate.n_samples=22", *SMALL]
TWO_D = [
    "store=trajectory-2d",
    "generate.pde=shallow_water_2d",
    "generate.n_x=12",
    "generate.n_frames=5",
    "generate.t_end=0.04",
    "generate.dt=0.01",
    "generate.initial_condition.kind=pde",
    "generate.n_samples=10",
    "train.modes=4",
    *SMALL,
]


@pytest.fixture(scope="module")
def stores(runs_dir) -> dict[str, RunStore]:
    # Threads in this process, closed before any test forks DataLoader workers.
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as c:
        generate(load_config(TINY, ONE_D), c)
        generate(load_config(None, TWO_D), c)
    return {"1d": RunStore.named("trajectory-1d"), "2d": RunStore.named("trajectory-2d")}


def _expected_windows(store, split, history, horizon, stride=1, channels=None):
    """Every (sample, first target frame, input, target) of the split, enumerated directly."""
    idx = store.sample_indices(split)
    traj = store.read_samples(idx)
    if channels is not None:
        traj = traj[:, :, channels]
    n_frames, size = traj.shape[1], history + horizon
    out = []
    for k, sample in enumerate(idx):
        for start in range(0, n_frames - size + 1, stride):
            mid = start + history
            out.append((sample, mid, traj[k, start:mid], traj[k, mid : start + size]))
    return out


def _params(store, split) -> np.ndarray:
    ds, splits = open_run(store)
    names = ds.attrs["parameters"]
    return np.stack([ds[n].values for n in names], axis=1)[splits[split]].astype(np.float32)


@pytest.mark.parametrize(
    ("kind", "split", "history", "horizon", "stride"),
    [
        ("1d", "train", 1, 1, 1),
        ("1d", "train", 3, 2, 1),
        ("1d", "test", 2, 4, 3),
        ("1d", "val", 10, 1, 1),
        ("2d", "train", 1, 1, 1),
        ("2d", "calibration", 2, 2, 2),
        ("2d", "train", 1, 4, 1),
    ],
)
def test_items_equal_the_stored_windows(stores, kind, split, history, horizon, stride):
    store = stores[kind]
    ds = TrajectoryDataset(store, split, history=history, horizon=horizon, stride=stride)
    expected = _expected_windows(store, split, history, horizon, stride)
    params = _params(store, split)
    assert len(ds) == len(expected) > 0
    n_windows = len(expected) // len(store.sample_indices(split))
    for i, (sample, mid, u_in, u_out) in enumerate(expected):
        item = ds[i]
        assert int(item["sample"]) == sample and int(item["time"]) == mid
        assert item["input"].dtype == torch.float32
        np.testing.assert_array_equal(item["input"].numpy(), u_in)
        np.testing.assert_array_equal(item["target"].numpy(), u_out)
        np.testing.assert_array_equal(item["params"].numpy(), params[i // n_windows])


def test_length_and_indexing(stores):
    store = stores["1d"]
    n_train, n_frames = len(store.sample_indices("train")), store.layout().n_frames
    for history, horizon, stride in [(1, 1, 1), (2, 3, 2), (4, 4, 5), (5, 6, 1)]:
        ds = TrajectoryDataset(store, history=history, horizon=horizon, stride=stride)
        windows = len(range(0, n_frames - history - horizon + 1, stride))
        assert len(ds) == n_train * windows
    ds = TrajectoryDataset(store)
    last = ds[len(ds) - 1]
    np.testing.assert_array_equal(ds[-1]["target"].numpy(), last["target"].numpy())
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]
    # A store given by name, by path and by handle is the same dataset.
    by_path = TrajectoryDataset(str(store.path))
    np.testing.assert_array_equal(by_path[7]["input"].numpy(), ds[7]["input"].numpy())
    assert len(TrajectoryDataset("trajectory-1d")) == len(ds)


def test_fields_select_channels_by_name_in_the_order_given(stores):
    store = stores["2d"]
    assert store.layout().fields == ("h", "hu", "hv")
    ds = TrajectoryDataset(store, history=2, horizon=1, fields=["hv", "h"])
    expected = _expected_windows(store, "train", 2, 1, channels=[2, 0])
    assert ds.fields == ("hv", "h") and len(ds) == len(expected)
    for i, (_, _, u_in, u_out) in enumerate(expected):
        assert ds[i]["input"].shape == (2, 2, 12, 12)
        np.testing.assert_array_equal(ds[i]["input"].numpy(), u_in)
        np.testing.assert_array_equal(ds[i]["target"].numpy(), u_out)
    # One name alone is one channel, read from its own chunk files.
    one = TrajectoryDataset(store, fields="hu")
    first = store.sample_indices("train")[0]
    np.testing.assert_array_equal(one[0]["input"].numpy(), store.read_samples([first])[0, :1, 1:2])


def test_float64_output(stores):
    ds = TrajectoryDataset(stores["1d"], dtype=torch.float64)
    item = ds[0]
    assert item["input"].dtype == item["params"].dtype == torch.float64
    assert item["sample"].dtype == item["time"].dtype == torch.int64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"history": 0}, r"history=0 .* 1 \.\. 10"),
        ({"horizon": 0}, r"horizon=0 .* 1 \.\. 10"),
        ({"history": 11}, r"history=11 .* 1 \.\. 10 \(the store saves 11 frames"),
        ({"history": 6, "horizon": 6}, r"horizon=6 .* 1 \.\. 5 .*history=6"),
        ({"history": 1.5}, r"history=1\.5 .* integer"),
        ({"stride": 0}, r"stride=0 .* >= 1"),
        ({"cache_chunks": 0}, r"cache_chunks=0 .* >= 1"),
        ({"fields": ["u", "v"]}, r"fields: unknown \['v'\]; valid: \['u'\]"),
        ({"fields": []}, r"fields: \[\] \(empty or repeated\); valid: \['u'\]"),
        ({"split": "training"}, r"split: unknown 'training'; valid: \['train', 'val', 'test'"),
        ({"dtype": np.int32}, r"dtype=int32 is not a floating dtype"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field_and_range(stores, kwargs, message):
    assert stores["1d"].layout().n_frames == 11
    with pytest.raises(ValueError, match=message):
        TrajectoryDataset(stores["1d"], **kwargs)


def test_a_sequential_pass_decodes_each_chunk_once(stores, monkeypatch):
    from pdeflow.storage import dataset as data

    calls = []
    real = data.read_chunk
    monkeypatch.setattr(data, "read_chunk", lambda *a: calls.append(a[2]) or real(*a))
    store = stores["2d"]
    ds = TrajectoryDataset(store, history=2, horizon=2, fields=["h", "hv"], cache_chunks=1)
    for i in range(len(ds)):
        ds[i]
    chunks = np.unique(store.sample_indices("train") // store.layout().chunk_size)
    # Only the selected fields' chunk files are read, each once.
    assert sorted(calls) == sorted(f"{f}/c/{c}/0/0/0" for f in ("h", "hv") for c in chunks)
    info = ds.cache_info()
    assert info["misses"] == len(chunks) and info["hits"] == len(ds) - len(chunks)
    assert info["chunks"] == 1 and 0 < info["nbytes"] <= ds.layout.chunk_nbytes * 2


def test_chunk_order_sampler_shuffles_chunks_then_windows_and_keeps_the_cache(stores):
    store = stores["1d"]
    ds = TrajectoryDataset(store, history=2, horizon=1)
    order = list(chunk_order_sampler(ds, 5))
    assert sorted(order) == list(range(len(ds))) and order != sorted(order)
    assert order == list(chunk_order_sampler(ds, torch.Generator().manual_seed(5)))
    sampler = chunk_order_sampler(ds, 6)
    assert list(sampler) != list(sampler)  # each pass advances the generator
    # Items of one chunk come together: the chunk of each item changes once per chunk.
    chunk_of = {i: int(ds[i]["sample"]) // store.layout().chunk_size for i in range(len(ds))}
    visited = [chunk_of[i] for i in order]
    runs = [c for k, c in enumerate(visited) if k == 0 or c != visited[k - 1]]
    assert sorted(runs) == sorted(set(chunk_of.values()))
    fresh = TrajectoryDataset(store, history=2, horizon=1, cache_chunks=1)
    for i in order:
        fresh[i]
    assert fresh.cache_info()["misses"] == len(runs)


def _batches(ds, **kwargs) -> list[dict]:
    loader = DataLoader(ds, batch_size=7, sampler=chunk_order_sampler(ds, 11), **kwargs)
    return list(loader)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_loader_workers_give_the_same_batches_as_the_main_process(stores, context):
    ds = TrajectoryDataset(stores["2d"], history=2, horizon=2, fields=["hu"])
    ds[0]  # a filled cache in the parent: workers must start their own
    serial = _batches(ds, num_workers=0)
    parallel = _batches(ds, num_workers=2, multiprocessing_context=context)
    assert len(serial) == len(parallel) == -(-len(ds) // 7)
    for a, b in zip(serial, parallel, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._state is None and copy.cache_info()["misses"] == 0
    np.testing.assert_array_equal(copy[3]["input"].numpy(), ds[3]["input"].numpy())


def test_a_damaged_chunk_raises_the_store_damage_error(stores, runs_dir):
    shutil.copytree(stores["1d"].path, runs_dir / "trajectory-damaged")
    store = RunStore.named("trajectory-damaged")
    ds = TrajectoryDataset(store)
    chunk = int(ds[len(ds) - 1]["sample"]) // store.layout().chunk_size
    ds = TrajectoryDataset(store)  # nothing cached
    path = store.path / store.layout().chunk_file("u", chunk)
    raw = bytearray(path.read_bytes())
    raw[100:104] = bytes(b ^ 0xFF for b in raw[100:104])
    path.write_bytes(bytes(raw))
    ds[0]  # another chunk still reads
    with pytest.raises(StoreDamaged, match=f"u/c/{chunk}/0/0: wrong CRC32"):
        ds[len(ds) - 1]
    loader = DataLoader(ds, batch_size=len(ds), num_workers=1)
    with pytest.raises(StoreDamaged, match="wrong CRC32"):
        next(iter(loader))


def test_importing_the_storage_package_does_not_import_torch():
    code = textwrap.dedent(
        """
        import sys
        import pdeflow.storage
        assert "torch" not in sys.modules, "pdeflow.storage imported torch"
        assert "TrajectoryDataset" in dir(pdeflow.storage)
        pdeflow.storage.TrajectoryDataset
        assert "torch" in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_open_run_returns_the_trajectories_and_a_partition_into_splits(stores):
    store = stores["2d"]
    ds, splits = open_run("trajectory-2d")
    assert set(splits) == {"train", "val", "test", "calibration"}
    everything = np.concatenate(list(splits.values()))
    np.testing.assert_array_equal(np.sort(everything), np.arange(store.layout().n_samples))
    for name, idx in splits.items():
        np.testing.assert_array_equal(idx, store.sample_indices(name))
        code = ds["split"].attrs["flag_meanings"].split().index(name)
        np.testing.assert_array_equal(np.flatnonzero(ds["split"].values == code), idx)
    stacked = np.stack([ds[f].values for f in ds.attrs["fields"]], axis=2)
    np.testing.assert_array_equal(stacked, store.read_samples(np.arange(store.layout().n_samples)))
    with pytest.raises(Exception, match="no pdeflow store"):
        open_run("no-such-store")


README_BLOCK = re.compile(r"## Your own training loop\n.*?```python\n(.*?)```", re.S)


def test_the_readme_training_loop_runs_as_written(stores, tmp_path):
    code = README_BLOCK.search((ROOT / "README.md").read_text())[1]
    runs = tmp_path / "runs"
    shutil.copytree(stores["1d"].path, runs / "demo")  # the name `make demo` gives its store
    (tmp_path / "loop.py").write_text(code)
    env = {**os.environ, "PDEFLOW_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "loop.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    losses = [float(line.split()[-1]) for line in out.stdout.splitlines() if "loss" in line]
    assert len(losses) >= 2 and all(np.isfinite(losses))
