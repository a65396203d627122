"""The generated dataset in the run store: template, aligned region writes, streaming reads.

Parallel writers must own whole chunks: writers that share a chunk lose data silently (zarr
#3514, xarray #10831), and xarray checks alignment only for dask-backed writes. So every block
write is checked here against the chunk grid before it touches the disk.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BytesCodec
from zarr.codecs.bytes import Endian

from storage.manifest import BlockManifest

FIELD = "u"


def create_trajectories(
    path: Path,
    *,
    shape: tuple[int, int, int],
    chunk_size: int,
    n_blocks: int,
    dtype: str,
    coords: dict,
    attrs: dict,
    field_attrs: dict,
) -> None:
    """Write the dataset's metadata and coordinates once; the field stays unwritten (NaN).

    Args:
        path: the run store directory (the Zarr root group).
        shape: (n_samples, n_frames, n_x) of the field ``u``.
        chunk_size: samples per chunk; a chunk holds whole trajectories.
        n_blocks: number of generation blocks, for the manifest.
        dtype: stored precision of ``u``.
        coords: xarray coordinates (sample-wise parameters, seeds, split, time, x).
        attrs: dataset attributes (config, dataset card, solver, version).
        field_attrs: attributes of ``u`` (units, description).
    """
    lazy = da.full(shape, np.nan, dtype=dtype, chunks=(chunk_size, shape[1], shape[2]))
    ds = xr.Dataset({FIELD: (("sample", "time", "x"), lazy, field_attrs)}, coords=coords)
    ds.attrs.update(attrs)
    # Raw little-endian bytes: float fields gain little from compression and the codec costs
    # write throughput (see benchmarks/).
    # mode "a": the directory already holds pdeflow's own records (_pdeflow/), which "w-" refuses
    # and "w" would delete; the caller creates the template only where no zarr.json exists.
    encoding = {FIELD: {"chunks": (chunk_size, shape[1], shape[2]), "compressors": None}}
    ds.to_zarr(
        str(path), mode="a", compute=False, zarr_format=3, consolidated=False, encoding=encoding
    )
    BlockManifest(path).create(n_blocks)


def write_block(path: Path, block: int, start: int, values: np.ndarray, seconds: float) -> int:
    """Write samples ``start:start+len(values)`` of ``u``, then mark the block complete.

    Raises:
        ValueError: the region does not cover whole chunks (it would corrupt a neighbour).

    Returns:
        CRC32 checksum of the written bytes, also recorded in the manifest.
    """
    arr = zarr.open_array(str(path), path=FIELD, mode="r+")
    chunk = arr.chunks[0]
    stop = start + values.shape[0]
    if start % chunk or (stop % chunk and stop != arr.shape[0]) or stop > arr.shape[0]:
        raise ValueError(
            f"block {block} region [{start}, {stop}) is not aligned to chunks of {chunk} samples"
        )
    values = np.ascontiguousarray(values, dtype=arr.dtype)
    if _is_raw(arr):
        checksum = _write_raw_chunks(arr, start, values)
    else:
        arr[start:stop] = values
        checksum = zlib.crc32(values.data)
    BlockManifest(path).mark_complete(block, seconds, checksum)
    return checksum


def _is_raw(arr: zarr.Array) -> bool:
    """Uncompressed little-endian chunks on a local disk: a chunk file is the raw C-order bytes."""
    codecs = arr.metadata.codecs
    return (
        arr.metadata.zarr_format == 3
        and isinstance(arr.store, zarr.storage.LocalStore)
        and len(codecs) == 1
        and isinstance(codecs[0], BytesCodec)
        and codecs[0].endian in (Endian.little, None)
        and sys.byteorder == "little"
    )


def _write_raw_chunks(arr: zarr.Array, start: int, values: np.ndarray) -> int:
    """Write whole chunks straight from ``values``' memory, several files at once.

    Zarr v3's ``bytes`` codec stores a chunk as its C-order bytes, so no encoding pass is needed.
    ``arr[...] = values`` costs about 3x a plain file write here: it copies into freshly
    allocated buffers and page faults dominate (see benchmarks/). Edge chunks are stored at full
    chunk shape, padded with the fill value, as the spec requires.
    """
    chunk = arr.chunks[0]
    root = Path(arr.store.root) / arr.path
    encode = arr.metadata.chunk_key_encoding.encode_chunk_key
    tail = (0,) * (arr.ndim - 1)

    def put(c: int) -> None:
        rows = values[c * chunk - start : (c + 1) * chunk - start]
        if rows.shape[0] < chunk:
            padded = np.full((chunk, *rows.shape[1:]), arr.metadata.fill_value, dtype=arr.dtype)
            padded[: rows.shape[0]] = rows
            rows = padded
        target = root / encode((c, *tail))
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(rows.data)

    first = start // chunk
    with ThreadPoolExecutor(max_workers=4) as pool:
        writes = pool.map(put, range(first, first + -(-values.shape[0] // chunk)))
        checksum = zlib.crc32(values.data)  # zlib releases the GIL: overlaps the writes
        for _ in writes:  # re-raises the first failed write
            pass
    return checksum


def open_dataset(path: Path, group: str | None = None) -> xr.Dataset:
    """Lazily open the run's dataset (or a stage's group) with xarray."""
    return xr.open_zarr(str(path), group=group, consolidated=None)


def read_attrs(path: Path) -> dict:
    return dict(zarr.open_group(str(path), mode="r").attrs)


def read_coords(
    path: Path, names: list[str], start: int = 0, stop: int | None = None
) -> np.ndarray:
    """Sample-wise coordinates stacked as columns: shape (n, len(names))."""
    group = zarr.open_group(str(path), mode="r")
    return np.stack([np.asarray(group[name][start:stop]) for name in names], axis=1)


def read_samples(path: Path, indices: np.ndarray, name: str = FIELD) -> np.ndarray:
    """Values of ``name`` for the given sample indices (sorted), read chunk by chunk."""
    parts = [values for _, values in iter_chunks(path, np.sort(indices), name=name)]
    return np.concatenate(parts, axis=0)


def iter_chunks(
    path: Path, indices: np.ndarray, name: str = FIELD, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the rows of ``indices`` one stored chunk at a time, never the whole array.

    Args:
        path: run store.
        indices: sample indices to read, shape (n,).
        name: variable to read.
        order: permutation of the chunk numbers to visit (for shuffled training); default
            ascending.

    Yields:
        (sample indices in this chunk, values of shape (n_in_chunk, ...)).
    """
    arr = zarr.open_array(str(path), path=name, mode="r")
    chunk = arr.chunks[0]
    indices = np.asarray(indices)
    owners = indices // chunk
    chunk_ids = np.unique(owners)
    if order is not None:
        chunk_ids = chunk_ids[order]
    for c in chunk_ids:
        rows = np.sort(indices[owners == c])
        block = arr[c * chunk : min((c + 1) * chunk, arr.shape[0])]
        yield rows, np.asarray(block[rows - c * chunk])


def write_group(path: Path, group: str, ds: xr.Dataset) -> None:
    """Write a small stage result (POD basis, UQ statistics) as its own Zarr group."""
    ds.to_zarr(str(path), group=group, mode="w", zarr_format=3, consolidated=False)


def chunk_size(path: Path, name: str = FIELD) -> int:
    """Samples per stored chunk of ``name``."""
    return zarr.open_array(str(path), path=name, mode="r").chunks[0]
