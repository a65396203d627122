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
from pdeflow.storage.manifest import BlockManifest
from zarr.codecs import BytesCodec
from zarr.codecs.bytes import Endian

FIELD = "u"


def create_trajectories(
    path: Path,
    *,
    fields: dict[str, dict],
    space_dims: tuple[str, ...],
    shape: tuple[int, ...],
    chunk_size: int,
    n_blocks: int,
    dtype: str,
    coords: dict,
    attrs: dict,
) -> None:
    """Write the dataset's metadata and coordinates once; the fields stay unwritten (NaN).

    Every field is its own variable of shape ``shape`` with dimensions ``(sample, time,
    *space_dims)``; ``attrs["fields"]`` keeps their channel order, which is the order of the
    ``channel`` axis of in-memory trajectories ``(sample, time, channel, *space)``.

    Args:
        path: the run store directory (the Zarr root group).
        fields: field name -> its attributes (units, long_name), in channel order.
        space_dims: names of the spatial dimensions, e.g. ``("x",)`` or ``("x", "y")``.
        shape: (n_samples, n_frames, *space) of each field.
        chunk_size: samples per chunk; a chunk holds whole trajectories.
        n_blocks: number of generation blocks, for the manifest.
        dtype: stored precision of the fields.
        coords: xarray coordinates (sample-wise parameters, seeds, split, time, x, y).
        attrs: dataset attributes (config, dataset card, solver, version).
    """
    chunks = (chunk_size, *shape[1:])
    dims = ("sample", "time", *space_dims)
    lazy = {
        name: (dims, da.full(shape, np.nan, dtype=dtype, chunks=chunks), field_attrs)
        for name, field_attrs in fields.items()
    }
    ds = xr.Dataset(lazy, coords=coords)
    ds.attrs.update(attrs, fields=list(fields))
    # Raw little-endian bytes: float fields gain little from compression and the codec costs
    # write throughput (see benchmarks/).
    # mode "a": the directory already holds pdeflow's own records (_pdeflow/), which "w-" refuses
    # and "w" would delete; the caller creates the template only where no zarr.json exists.
    encoding = {name: {"chunks": chunks, "compressors": None} for name in fields}
    ds.to_zarr(
        str(path), mode="a", compute=False, zarr_format=3, consolidated=False, encoding=encoding
    )
    BlockManifest(path).create(n_blocks)


def field_names(path: Path) -> list[str]:
    """The stored fields of a run store, in channel order."""
    return list(read_attrs(path).get("fields", [FIELD]))


def extend_trajectories(path: Path, n_samples: int, coords: dict[str, np.ndarray]) -> int:
    """Grow every sample-indexed array to ``n_samples`` rows and fill the new coordinates.

    The fields' new rows stay unwritten (NaN) until their blocks are solved. Chunks are whole
    trajectories, so resizing along ``sample`` never rewrites existing chunk files.

    Args:
        path: the run store.
        n_samples: new number of samples, >= the current one.
        coords: every sample-wise coordinate (``sample``, ``seed``, ``split``, parameters) for
            all ``n_samples`` rows; only the new rows are written.

    Returns:
        The previous number of samples.
    """
    group = zarr.open_group(str(path), mode="r+")
    old = int(group["sample"].shape[0])
    if n_samples < old:
        raise ValueError(f"n_samples ({n_samples}) cannot shrink a store of {old} samples")
    for name in field_names(path):
        arr = group[name]
        arr.resize((n_samples, *arr.shape[1:]))
    for name, values in coords.items():
        arr = group[name]
        arr.resize((n_samples,))
        arr[old:] = np.asarray(values)[old:]
    return old


def write_block(
    path: Path, block: int, start: int, values: np.ndarray, seconds: float, fields: list[str]
) -> int:
    """Write samples ``start:start+len(values)`` of every field, then mark the block complete.

    Args:
        values: trajectories of shape (n, time, channel, *space), channels in ``fields`` order.

    Raises:
        ValueError: the region does not cover whole chunks (it would corrupt a neighbour).

    Returns:
        CRC32 of the written bytes, field after field, also recorded in the manifest.
    """
    if values.ndim < 4 or values.shape[2] != len(fields):
        raise ValueError(f"values must be (n, time, {len(fields)}, *space), got {values.shape}")
    checksum = 0
    for c, name in enumerate(fields):
        arr = zarr.open_array(str(path), path=name, mode="r+")
        chunk = arr.chunks[0]
        stop = start + values.shape[0]
        if start % chunk or (stop % chunk and stop != arr.shape[0]) or stop > arr.shape[0]:
            raise ValueError(
                f"block {block} region [{start}, {stop}) is not aligned to chunks of {chunk} "
                "samples"
            )
        part = np.ascontiguousarray(values[:, :, c], dtype=arr.dtype)
        if _is_raw(arr):
            checksum = _write_raw_chunks(arr, start, part, checksum)
        else:
            arr[start:stop] = part
            checksum = zlib.crc32(part.data, checksum)
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


def _write_raw_chunks(arr: zarr.Array, start: int, values: np.ndarray, crc: int = 0) -> int:
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
        checksum = zlib.crc32(values.data, crc)  # zlib releases the GIL: overlaps the writes
        for _ in writes:  # re-raises the first failed write
            pass
    return checksum


def open_dataset(path: Path, group: str | None = None) -> xr.Dataset:
    """Lazily open the run's dataset (or a stage's group) with xarray."""
    return xr.open_zarr(str(path), group=group, consolidated=None)


def read_attrs(path: Path) -> dict:
    return dict(zarr.open_group(str(path), mode="r").attrs)


def update_attrs(path: Path, attrs: dict) -> None:
    """Set dataset attributes (statistics, a new dataset card after an extension)."""
    zarr.open_group(str(path), mode="r+").attrs.update(attrs)


def read_coords(
    path: Path, names: list[str], start: int = 0, stop: int | None = None
) -> np.ndarray:
    """Sample-wise coordinates stacked as columns: shape (n, len(names))."""
    group = zarr.open_group(str(path), mode="r")
    if not names:  # every coefficient held constant: (n, 0), n from the sample axis
        n = len(range(*slice(start, stop).indices(group["sample"].shape[0])))
        return np.empty((n, 0))
    return np.stack([np.asarray(group[name][start:stop]) for name in names], axis=1)


def read_samples(path: Path, indices: np.ndarray, name: str | None = None) -> np.ndarray:
    """Trajectories of the given sample indices (sorted), read chunk by chunk.

    Returns:
        Shape (n, time, channel, *space) with every field as a channel, or (n, time, *space)
        for the one field ``name``.
    """
    parts = [values for _, values in iter_chunks(path, np.sort(indices), name=name)]
    return np.concatenate(parts, axis=0)


def iter_chunks(
    path: Path, indices: np.ndarray, name: str | None = None, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the rows of ``indices`` one stored chunk at a time, never the whole array.

    Args:
        path: run store.
        indices: sample indices to read, shape (n,).
        name: one field to read; None reads every field stacked as channels.
        order: permutation of the chunk numbers to visit (for shuffled training); default
            ascending.

    Yields:
        (sample indices in this chunk, values of shape (n_in_chunk, time, channel, *space), or
        (n_in_chunk, time, *space) for one named field).
    """
    names = field_names(path) if name is None else [name]
    arrays = [zarr.open_array(str(path), path=n, mode="r") for n in names]
    chunk = arrays[0].chunks[0]
    indices = np.asarray(indices)
    owners = indices // chunk
    chunk_ids = np.unique(owners)
    if order is not None:
        chunk_ids = chunk_ids[order]
    for c in chunk_ids:
        rows = np.sort(indices[owners == c])
        sel = rows - c * chunk
        stop = min((c + 1) * chunk, arrays[0].shape[0])
        parts = [np.asarray(arr[c * chunk : stop])[sel] for arr in arrays]
        yield rows, (parts[0] if name is not None else np.stack(parts, axis=2))


def write_group(path: Path, group: str, ds: xr.Dataset) -> None:
    """Write a small stage result (POD basis, UQ statistics) as its own Zarr group."""
    ds.to_zarr(str(path), group=group, mode="w", zarr_format=3, consolidated=False)


def chunk_size(path: Path) -> int:
    """Samples per stored chunk of the fields."""
    return zarr.open_array(str(path), path=field_names(path)[0], mode="r").chunks[0]
