"""Measurement 4: the run store's durable block writes against h5py, and checked reads.

The same float32 array (samples, 101 frames, 1024 points) is written block by block, blocks of
64 samples (the demo's block size), chunks of 16: once through the store exactly as generation
does (template, then ``RunStore.write_block`` per block: every chunk through a temporary file,
fsynced, renamed, the directory fsynced, then the block's manifest entry written the same way),
once with h5py into a chunked, uncompressed dataset (closed, as h5py users do: not fsynced),
and once with h5py followed by one fsync of the file (as durable as the store, but only at
the end). Creating the file is part of every timing. Beside them, in the same run: the store
with one fsync after another (``WRITE_THREADS = 1``) instead of a block's fsyncs together,
the store with fsync switched off (what durability costs), chunk sizes of 32 and 64 samples, and
whole-store verification (every chunk's CRC32) as a read throughput.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np

from benchmarks.common import Goal, Result, fresh_name, summarise
from pdeflow.storage import RunStore
from pdeflow.storage import dataset as data
from pdeflow.storage.dataset import Layout, Template

CHUNK = 16
BLOCK = 64
N_FRAMES, N_X = 101, 1024
REPEATS = 3


def _template(n: int, chunk: int) -> Template:
    layout = Layout(
        fields=("u",), space_dims=("x",), space=(N_X,), n_frames=N_FRAMES, n_samples=n,
        chunk_size=chunk, block_size=BLOCK, dtype="float32", key="bench",
    )  # fmt: skip
    return Template(layout, {"sample": ("sample", np.arange(n))}, {}, {"u": {}})


def write_store(
    path: Path,
    values: np.ndarray,
    chunk: int = CHUNK,
    threads: int | None = None,
    fsync: bool = True,
) -> float:
    """Write ``values`` (n, T, 1, X) through the store; returns seconds.

    Args:
        fsync: False only to measure what durability costs (the store always fsyncs).
    """
    saved, saved_sync = data.WRITE_THREADS, (data.fsync_file, data.fsync_dir)
    data.WRITE_THREADS = threads or saved
    if not fsync:
        data.fsync_file = data.fsync_dir = lambda path: None
    try:
        t0 = time.perf_counter()
        store = RunStore(path)
        with store.lock():
            store.write_template(_template(len(values), chunk))
            for block, start in enumerate(range(0, len(values), BLOCK)):
                store.write_block(block, values[start : start + BLOCK], 0.0)
        return time.perf_counter() - t0
    finally:
        data.WRITE_THREADS = saved
        data.fsync_file, data.fsync_dir = saved_sync


def write_h5(path: Path, values: np.ndarray, fsync: bool = False) -> float:
    """Write ``values`` (n, T, 1, X) into a chunked h5py dataset; returns seconds."""
    t0 = time.perf_counter()
    with h5py.File(path, "w") as fh:
        dset = fh.create_dataset(
            "u", shape=(len(values), N_FRAMES, N_X), dtype="float32", chunks=(CHUNK, N_FRAMES, N_X)
        )
        for start in range(0, len(values), BLOCK):
            dset[start : start + BLOCK] = values[start : start + BLOCK, :, 0]
    if fsync:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return time.perf_counter() - t0


def _writers(values: np.ndarray, quick: bool) -> dict:
    writers = {
        "store": lambda p: write_store(p, values),
        "h5py": lambda p: write_h5(p.with_suffix(".h5"), values),
        "h5py+fsync": lambda p: write_h5(p.with_suffix(".h5"), values, fsync=True),
        "store, fsyncs one by one": lambda p: write_store(p, values, threads=1),
        "store without fsync (measurement only)": lambda p: write_store(p, values, fsync=False),
    }
    if not quick:
        writers["store, chunks of 32"] = lambda p: write_store(p, values, chunk=32)
        writers["store, chunks of 64"] = lambda p: write_store(p, values, chunk=64)
    return writers


def _rounds(values: np.ndarray, workdir: Path, quick: bool) -> tuple[dict, Path]:
    """Alternate the writers into fresh paths so noise hits all alike; keep one store."""
    runs: dict[str, list[float]] = {}
    kept = None
    for _ in range(REPEATS):
        for name, writer in _writers(values, quick).items():
            path = workdir / fresh_name("w")
            runs.setdefault(name, []).append(writer(path))
            if name == "store" and kept is None:
                kept = path
            elif path != kept:
                shutil.rmtree(path, ignore_errors=True)
                path.with_suffix(".h5").unlink(missing_ok=True)
    return runs, kept


def measure(quick: bool, workdir: Path) -> list[Result]:
    """Durable store writes against h5py (goal: at least as fast), and verification speed.

    Args:
        quick: 64 samples (26 MB) instead of 256 (106 MB).
        workdir: Scratch directory; everything written is removed afterwards.
    """
    n = 64 if quick else 256
    values = np.random.default_rng(0).standard_normal((n, N_FRAMES, 1, N_X), dtype=np.float32)
    mb = values.nbytes / 1e6
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        runs, kept = _rounds(values, workdir, quick)
        store = RunStore(kept)
        verify = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            assert store.verify() == {}
            verify.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    best = {k: summarise(v, "best") for k, v in runs.items()}
    shape = f"{n}x{N_FRAMES}x{N_X} f32"
    speed = {k: mb / b[0] for k, b in best.items()}
    details = {"shape": values.shape, "mb": mb, "chunk": CHUNK, "block": BLOCK, "seconds": runs}
    rows = [
        Result(
            name=f"store write, durable (atomic + fsync), {shape}",
            value=speed["store"],
            unit="MB/s",
            stat=best["store"][1],
            reference=speed["h5py"],
            reference_label="h5py, chunks (16, 101, 1024), no compression, closed, no fsync",
            goal=Goal(">=", 1.0),
            note="; ".join(f"{k} {v:.0f} MB/s" for k, v in speed.items() if k != "store"),
            details=details,
        ),
    ]
    # The store's durable writes beside three more references, one informational row each.
    for name, ref, label in (
        ("store write vs h5py + one fsync at the end", "h5py+fsync",
         "h5py as above, then fsync of the file"),
        ("store write with fsync vs the same without (what durability costs)",
         "store without fsync (measurement only)",
         "the store's writes with fsync switched off in the benchmark"),
        ("a block's fsyncs together vs one after another", "store, fsyncs one by one",
         f"store with WRITE_THREADS=1 (default {data.WRITE_THREADS})"),
    ):  # fmt: skip
        rows.append(
            Result(
                name=name,
                value=speed["store"],
                unit="MB/s",
                stat=best["store"][1],
                reference=speed[ref],
                reference_label=label,
            )
        )
    v = summarise(verify, "best")
    rows.append(
        Result(
            name=f"verification (CRC32 of every chunk), {shape}",
            value=mb / v[0],
            unit="MB/s",
            stat=v[1],
            reference=speed["store"],
            reference_label="the store's own write throughput (page cache warm)",
            details={"seconds": verify},
        )
    )
    return rows
