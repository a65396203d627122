"""The generated dataset in the run store: its layout, template, block writes and checked reads.

Each field is a Zarr v3 array ``(sample, time, *space)`` of raw little-endian chunks that hold
whole trajectories (``chunk_size`` samples). Blocks own whole chunks, so parallel writers never
share a chunk file (zarr #3514, xarray #10831: writers that share one lose data silently). A
v3 chunk under the ``bytes`` codec is, by the spec, its C-order bytes, padded to the full chunk
shape at the edge: block writes produce those files directly, each through a temporary file,
fsync and rename, and reads check every chunk's size and CRC32 against the block manifest before
its bytes are used. The template (metadata and coordinates) goes through xarray and Zarr.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
import warnings
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from pdeflow.storage.errors import NonFiniteData, StoreDamaged
from pdeflow.storage.fsio import (
    FileEntry,
    file_entry,
    fsync_dir,
    fsync_file,
    iter_files,
    write_temp,
)
from pdeflow.storage.groups import encode_dataset
from pdeflow.storage.manifest import BlockEntry

FIELD = "u"
# Threads per block write: file writes and fsyncs wait on the disk, not the GIL.
WRITE_THREADS = 4


class Layout(BaseModel):
    """Shape of the stored dataset and how it is cut into chunks and blocks.

    ``key`` identifies everything that decides a block's values except the number of samples
    (the generate config without ``n_samples``): a block written under another key is not part
    of this dataset, whatever its file says.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fields: tuple[str, ...]
    space_dims: tuple[str, ...]
    space: tuple[int, ...]
    n_frames: int
    n_samples: int
    chunk_size: int
    block_size: int
    dtype: Literal["float32", "float64"]
    key: str

    @property
    def n_blocks(self) -> int:
        return -(-self.n_samples // self.block_size)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_samples // self.chunk_size)

    def block_range(self, block: int) -> tuple[int, int]:
        """Samples ``[start, stop)`` of ``block``; blocks beyond ``n_samples`` do not exist."""
        if not 0 <= block < self.n_blocks:
            raise ValueError(f"block {block} does not exist (0 .. {self.n_blocks - 1})")
        start = block * self.block_size
        return start, min(start + self.block_size, self.n_samples)

    def chunk_ids(self, block: int) -> range:
        start, stop = self.block_range(block)
        return range(start // self.chunk_size, -(-stop // self.chunk_size))

    def block_of_chunk(self, chunk: int) -> int:
        return chunk * self.chunk_size // self.block_size

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        return (self.chunk_size, self.n_frames, *self.space)

    @property
    def chunk_nbytes(self) -> int:
        return math.prod(self.chunk_shape) * np.dtype(self.dtype).itemsize

    def chunk_file(self, field: str, chunk: int) -> str:
        """Path of a field's chunk relative to the store: Zarr v3's default key encoding."""
        return "/".join((field, "c", str(chunk), *("0" * (1 + len(self.space)))))

    def block_files(self, block: int) -> list[str]:
        return [self.chunk_file(f, c) for f in self.fields for c in self.chunk_ids(block)]


@dataclass(frozen=True)
class Template:
    """What the store's template holds besides the (unwritten) fields.

    Attributes:
        layout: shapes, chunks and blocks.
        coords: xarray coordinates (sample-wise parameters, seeds, split, time, x, y).
        attrs: dataset attributes (config, dataset card, solver, version); any value, stored
            as ``storage.groups.encode_attrs`` says.
        field_attrs: attributes of each field (units, long_name), in channel order.
    """

    layout: Layout
    coords: dict[str, Any]
    attrs: dict[str, Any]
    field_attrs: dict[str, dict]


def dataset_key(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_template(root: Path, template: Template, scratch: Path) -> dict[str, FileEntry]:
    """Write the template's files (metadata, coordinates) into ``root``, each atomically.

    The template is built in ``scratch`` and each file renamed into place; fields' chunk files
    are never touched, so an extension or a repair keeps every written block. Coordinate chunk
    files of the old template that the new one does not have are removed.

    Returns:
        Relative path -> entry of every template file.
    """
    import dask.array as da
    import xarray as xr

    lay = template.layout
    build = scratch / f"template-{secrets.token_hex(4)}"
    shape = (lay.n_samples, lay.n_frames, *lay.space)
    dims = ("sample", "time", *lay.space_dims)
    lazy = {
        name: (dims, da.full(shape, np.nan, dtype=lay.dtype, chunks=lay.chunk_shape), attrs)
        for name, attrs in template.field_attrs.items()
    }
    attrs = {**template.attrs, "fields": list(lay.fields)}
    # netCDF-ready attributes (the module docstring of storage.groups).
    ds = encode_dataset(xr.Dataset(lazy, coords=template.coords, attrs=attrs))
    # Raw little-endian bytes: float fields gain little from compression, and a chunk file is
    # then exactly its C-order bytes, which block writes produce directly.
    encoding = {name: {"chunks": lay.chunk_shape, "compressors": None} for name in lay.fields}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have a Zarr V3 specification")
        ds.to_zarr(
            str(build),
            mode="w-",
            compute=False,
            zarr_format=3,
            consolidated=False,
            encoding=encoding,
        )
    files = {str(p.relative_to(build)): p for p in iter_files(build)}
    entries = {rel: file_entry(p) for rel, p in files.items()}
    _remove_stale(root, files, lay.fields)
    dirs = set()
    for rel, src in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(src, target)
        dirs.add(target.parent)
    for d in dirs:
        fsync_dir(d)
    shutil.rmtree(build, ignore_errors=True)
    return entries


def _remove_stale(root: Path, new: dict[str, Path], fields: tuple[str, ...]) -> None:
    """Delete coordinate files of an older template that the new one does not write."""
    tops = {rel.split("/")[0] for rel in new if "/" in rel}
    for top in tops - set(fields):
        for path in iter_files(root / top):
            if str(path.relative_to(root)) not in new:
                path.unlink()


def write_block(
    root: Path, layout: Layout, block: int, values: np.ndarray, seconds: float, manifest: Path
) -> BlockEntry:
    """Write ``values`` as block ``block``'s chunk files, then its manifest entry ``manifest``.

    The entry is renamed into place only once every chunk file and its directory entry are
    durable, so a block killed at any point has no entry and is recomputed.

    Args:
        values: trajectories ``(n, time, channel, *space)``, channels in ``layout.fields``
            order, ``n`` the block's sample count.
        manifest: the block's manifest entry file.

    Raises:
        ValueError: wrong shape for the block.
        NonFiniteData: NaN or inf in the block (naming the samples).
    """
    start, stop = layout.block_range(block)
    expect = (stop - start, layout.n_frames, len(layout.fields), *layout.space)
    if tuple(values.shape) != expect:
        raise ValueError(f"block {block}: values of shape {values.shape}, expected {expect}")
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if not finite.all():
        bad = [start + int(i) for i in np.flatnonzero(~finite)]
        raise NonFiniteData(f"block {block}: non-finite values in samples {bad}; not stored")
    items = []
    for c, name in enumerate(layout.fields):
        part = np.ascontiguousarray(values[:, :, c], dtype=layout.dtype)
        for chunk in layout.chunk_ids(block):
            rows = part[chunk * layout.chunk_size - start : (chunk + 1) * layout.chunk_size - start]
            if rows.shape[0] < layout.chunk_size:  # the edge chunk is stored at full shape
                padded = np.full(layout.chunk_shape, np.nan, dtype=layout.dtype)
                padded[: rows.shape[0]] = rows
                rows = padded
            items.append((layout.chunk_file(name, chunk), rows))
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        written = _write_chunks(pool, root, items)
        files = {rel: tuple(entry) for (rel, _), (_, entry) in zip(items, written, strict=True)}
        entry = BlockEntry(
            block=block, start=start, stop=stop, seconds=seconds, key=layout.key, files=files
        )
        text = json.dumps(entry.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        _commit(pool, root, items, [tmp for tmp, _ in written], manifest, text.encode())
    return entry


def _write_chunks(pool, root: Path, items: list) -> list[tuple[Path, FileEntry]]:
    """Each chunk to a temporary file whose writeback starts at once; its CRC32 is computed
    while the disk works. Returns (temporary path, entry) per item."""

    def one(item):
        rel, rows = item
        return write_temp(root / rel, rows, fsync=False), FileEntry.of_bytes(rows)

    futures = [pool.submit(one, item) for item in items]
    failed = [f.exception() for f in futures if f.exception() is not None]
    if failed:  # a full disk: remove the block's other temporary files, mark nothing
        for f in futures:
            if f.exception() is None:
                f.result()[0].unlink(missing_ok=True)
        raise failed[0]
    return [f.result() for f in futures]


def _commit(pool, root: Path, items: list, temps: list[Path], manifest: Path, data: bytes):
    """fsync the chunks and write the manifest entry's temporary file, all together; rename the
    chunks into place and fsync their directories, together; then rename the entry.

    A block's fsyncs run concurrently, so the file system commits them together (measured in
    benchmarks/storage_io.py against one fsync after another), and the entry is visible only
    once every chunk file and its name are durable.
    """
    entry_tmp = pool.submit(write_temp, manifest, data)
    try:
        list(pool.map(fsync_file, temps))
        entry_tmp = entry_tmp.result()
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    for (rel, _), tmp in zip(items, temps, strict=True):
        os.replace(tmp, root / rel)
    list(pool.map(fsync_dir, {(root / rel).parent for rel, _ in items}))
    os.replace(entry_tmp, manifest)
    fsync_dir(manifest.parent)


def read_chunk(root: Path, layout: Layout, rel: str, expected: FileEntry) -> np.ndarray:
    """One chunk file ``(chunk_size, time, *space)``, after checking its size and CRC32.

    Raises:
        StoreDamaged: the file is missing, or its size or CRC32 differ from the manifest.
    """
    buf = np.empty(layout.chunk_nbytes, dtype=np.uint8)
    try:
        with open(root / rel, "rb", buffering=0) as fh:
            n = fh.readinto(memoryview(buf))
            extra = fh.read(1)
    except FileNotFoundError:
        raise StoreDamaged(f"{rel}: missing") from None
    if n != expected.size or extra or n != layout.chunk_nbytes:
        raise StoreDamaged(f"{rel}: {n}{'+' if extra else ''} bytes, recorded {expected.size}")
    if zlib.crc32(buf) != expected.crc32:
        raise StoreDamaged(f"{rel}: wrong CRC32 (contents changed since it was written)")
    return buf.view(layout.dtype).reshape(layout.chunk_shape)


def iter_chunks(
    root: Path,
    layout: Layout,
    entries: dict[int, BlockEntry],
    indices: np.ndarray,
    field: str | None = None,
    order: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the rows ``indices`` one stored chunk at a time, each chunk checked on read.

    Args:
        entries: the complete blocks' manifest entries.
        indices: sample indices to read, shape (n,).
        field: one field to read; None reads every field stacked as channels.
        order: permutation of the visited chunks (for shuffled training); default ascending.

    Yields:
        (sorted sample indices in this chunk, values ``(n_in_chunk, time, channel, *space)``,
        or ``(n_in_chunk, time, *space)`` for one named field).

    Raises:
        StoreDamaged: a chunk's block is not complete, or its bytes differ from the manifest.
    """
    names = list(layout.fields) if field is None else [field]
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= layout.n_samples):
        raise IndexError(f"sample indices outside 0 .. {layout.n_samples - 1}")
    owners = indices // layout.chunk_size
    chunk_ids = np.unique(owners)
    if order is not None:
        chunk_ids = chunk_ids[order]
    for c in chunk_ids:
        block = layout.block_of_chunk(int(c))
        entry = entries.get(block)
        if entry is None:
            raise StoreDamaged(f"block {block} is not complete: its samples cannot be read")
        rows = np.sort(indices[owners == c])
        sel = rows - c * layout.chunk_size
        parts = []
        for name in names:
            rel = layout.chunk_file(name, int(c))
            parts.append(read_chunk(root, layout, rel, entry.entry(rel))[sel])
        yield rows, (parts[0] if field is not None else np.stack(parts, axis=2))


def read_rows(root: str, layout_json: dict, entry_json: dict, chunk: int, sel: list[int]):
    """Rows ``sel`` of chunk ``chunk``, all fields as channels: a Dask task (picklable args)."""
    layout = Layout.model_validate(layout_json)
    entry = BlockEntry.model_validate(entry_json)
    parts = []
    for name in layout.fields:
        rel = layout.chunk_file(name, chunk)
        parts.append(read_chunk(Path(root), layout, rel, entry.entry(rel))[sel])
    return np.stack(parts, axis=2)
