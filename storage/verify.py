"""Verification: stream every recorded file, compare sizes and CRC32s, name what is bad.

Files are checked in a thread pool: reads and ``zlib.crc32`` release the GIL, so a few threads
keep the disk (or the page cache) busy. The cost is measured against generation in
``benchmarks/storage_io.py``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pdeflow.storage.errors import StoreDamaged
from pdeflow.storage.fsio import check_file
from pdeflow.storage.manifest import BlockEntry


def check_blocks(
    root: Path, entries: dict[int, BlockEntry], deep: bool = True, threads: int = 4
) -> dict[int, str]:
    """Blocks whose chunk files are missing, of the wrong size, or (``deep``) wrong CRC32.

    Returns:
        Block -> the first problem found in it, e.g. ``"u/c/3/0/0: wrong size (...)"``.
    """
    jobs = [(b, rel, e.entry(rel)) for b, e in sorted(entries.items()) for rel in e.files]

    def check(job):
        block, rel, entry = job
        problem = check_file(root / rel, entry, deep=deep)
        return block, (None if problem is None else f"{rel}: {problem}")

    bad: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for block, problem in pool.map(check, jobs):
            if problem is not None and block not in bad:
                bad[block] = problem
    return bad


def dask_rows(root: Path, layout, entries: dict[int, BlockEntry], indices: np.ndarray):
    """A Dask array ``(n, time, channel, *space)`` of the sorted ``indices``, one task per
    stored chunk; each task checks its chunk files before using them."""
    import dask
    import dask.array as da

    from pdeflow.storage.dataset import read_rows

    owners = indices // layout.chunk_size
    lay = layout.model_dump(mode="json")
    parts = []
    for c in np.unique(owners):
        block = layout.block_of_chunk(int(c))
        if block not in entries:
            raise StoreDamaged(f"block {block} is not complete: its samples cannot be read")
        sel = (indices[owners == c] - c * layout.chunk_size).tolist()
        rows = dask.delayed(read_rows, pure=True)(
            str(root), lay, entries[block].model_dump(mode="json"), int(c), sel
        )
        shape = (len(sel), layout.n_frames, len(layout.fields), *layout.space)
        parts.append(da.from_delayed(rows, shape=shape, dtype=layout.dtype))
    return da.concatenate(parts, axis=0)
