"""Measurement 4: write throughput of the run store's block writes against h5py, and reads.

The same float32 array (samples, 101 frames, 1024 points) is written block by block, chunks of 16
samples, blocks of 64 (the demo's block size): once through ``pdeflow.storage.dataset`` exactly as
generation does (template, then ``write_block`` per block, which also checks alignment,
checksums the block and marks it in the manifest), once with h5py into a chunked, uncompressed
dataset. Creating the file is part of both timings; the block writes alone are in the details.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import zarr
from pdeflow.storage import dataset as ds_io

from benchmarks.common import Goal, Result, fresh_name, summarise

CHUNK = 16
BLOCK = 64
N_FRAMES, N_X = 101, 1024


def write_zarr(path: Path, data: np.ndarray) -> tuple[float, float]:
    """Write ``data`` (n, T, X) through the storage write path; (create, blocks) seconds."""
    n = data.shape[0]
    t0 = time.perf_counter()
    ds_io.create_trajectories(
        path,
        fields={"u": {}},
        space_dims=("x",),
        shape=data.shape,
        chunk_size=CHUNK,
        n_blocks=-(-n // BLOCK),
        dtype="float32",
        coords={"sample": ("sample", np.arange(n))},
        attrs={},
    )
    t1 = time.perf_counter()
    for block, start in enumerate(range(0, n, BLOCK)):
        ds_io.write_block(path, block, start, data[start : start + BLOCK, :, None], 0.0, ["u"])
    return t1 - t0, time.perf_counter() - t1


def write_h5(path: Path, data: np.ndarray) -> tuple[float, float]:
    """Write ``data`` (n, T, X) into a chunked h5py dataset; (create, blocks) seconds."""
    t0 = time.perf_counter()
    with h5py.File(path, "w") as fh:
        dset = fh.create_dataset(
            "u", shape=data.shape, dtype="float32", chunks=(CHUNK, *data.shape[1:])
        )
        t1 = time.perf_counter()
        for start in range(0, data.shape[0], BLOCK):
            dset[start : start + BLOCK] = data[start : start + BLOCK]
    # Closing the file flushes its chunks: that belongs to the block writes.
    return t1 - t0, time.perf_counter() - t1


def read_seconds(path: Path, kind: str) -> float:
    """Seconds to read the whole array back into memory (the OS page cache is warm for both)."""
    t0 = time.perf_counter()
    if kind == "zarr":
        zarr.open_array(str(path), path="u", mode="r")[:]
    else:
        with h5py.File(path, "r") as fh:
            fh["u"][:]
    return time.perf_counter() - t0


def _write_rounds(data: np.ndarray, workdir: Path, repeats: int) -> dict:
    """Alternate zarr and h5py writes into fresh paths so noise hits both alike."""
    runs: dict[str, list] = {"zarr": [], "h5py": []}
    last: dict[str, Path] = {}
    for _ in range(repeats):
        for kind, writer, suffix in (("zarr", write_zarr, ""), ("h5py", write_h5, ".h5")):
            path = workdir / f"{fresh_name(kind)}{suffix}"
            runs[kind].append(writer(path, data))
            if kind in last:  # keep only the newest copy on disk, for the read test
                shutil.rmtree(last[kind], ignore_errors=True)
                last[kind].unlink(missing_ok=True)
            last[kind] = path
    return {"runs": runs, "last": last}


def measure(quick: bool, workdir: Path) -> list[Result]:
    """Zarr/h5py write throughput (goal: zarr at least as fast), and read throughput.

    Args:
        quick: 64 samples (26 MB) instead of 256 (106 MB).
        workdir: Scratch directory; everything written is removed afterwards.
    """
    n = 64 if quick else 256
    data = np.random.default_rng(0).standard_normal((n, N_FRAMES, N_X), dtype=np.float32)
    mb = data.nbytes / 1e6
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        out = _write_rounds(data, workdir, repeats=3)
        reads = {k: [read_seconds(p, k) for _ in range(3)] for k, p in out["last"].items()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    shape = f"{n}x{N_FRAMES}x{N_X}"
    details = {"shape": data.shape, "mb": mb, "chunk": CHUNK, "block": BLOCK}
    return [_write_row(shape, mb, out["runs"], details), _read_row(shape, mb, reads, details)]


def _write_row(shape: str, mb: float, runs: dict[str, list], details: dict) -> Result:
    """The write comparison from (create, blocks) seconds per repeat, by writer."""
    best = {k: summarise([c + b for c, b in v], "best") for k, v in runs.items()}
    blocks = {k: mb / min(b for _, b in v) for k, v in runs.items()}
    return Result(
        name=f"zarr write, storage path, {shape} f32",
        value=mb / best["zarr"][0],
        unit="MB/s",
        stat=best["zarr"][1],
        reference=mb / best["h5py"][0],
        reference_label="h5py write, chunks (16, 101, 1024), no compression, same blocks",
        goal=Goal(">=", 1.0),
        note=f"block writes alone: zarr {blocks['zarr']:.0f} MB/s, h5py {blocks['h5py']:.0f} "
        f"MB/s; zarr template {min(c for c, _ in runs['zarr']):.3f} s",
        details={**details, "create_and_blocks_s": runs, "blocks_only_mb_s": blocks},
    )


def _read_row(shape: str, mb: float, reads: dict[str, list], details: dict) -> Result:
    """The read comparison from whole-array read seconds per repeat, by reader."""
    read = {k: summarise(v, "best") for k, v in reads.items()}
    return Result(
        name=f"zarr read, whole array, {shape} f32",
        value=mb / read["zarr"][0],
        unit="MB/s",
        stat=read["zarr"][1],
        reference=mb / read["h5py"][0],
        reference_label="h5py read of the same array (page cache warm for both)",
        details={**details, "seconds": reads},
    )
