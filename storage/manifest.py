"""Durable per-block manifest: which generation blocks are completely written.

Each block owns one chunk of each manifest array, so parallel writers never share a chunk. A
block's ``complete`` flag is written last, after its data and its timing, so a block killed
half-way stays incomplete and is recomputed on the next run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr


class BlockManifest:
    """Completion flags, wall times and checksums of the blocks of a run store."""

    def __init__(self, store_path: str | Path):
        self.path = Path(store_path)

    def create(self, n_blocks: int) -> None:
        group = zarr.open_group(str(self.path), mode="r+").require_group("manifest")
        for name, dtype, fill in (
            ("complete", "bool", False),
            ("seconds", "float64", np.nan),
            ("checksum", "int64", -1),
        ):
            group.create_array(
                name, shape=(n_blocks,), chunks=(1,), dtype=dtype, fill_value=fill, overwrite=True
            )

    def _array(self, name: str, mode: str = "r") -> zarr.Array | None:
        try:
            return zarr.open_array(str(self.path), path=f"manifest/{name}", mode=mode)
        except (FileNotFoundError, zarr.errors.NodeNotFoundError):
            return None

    @property
    def n_blocks(self) -> int:
        arr = self._array("complete")
        return 0 if arr is None else int(arr.shape[0])

    def complete_mask(self) -> np.ndarray:
        arr = self._array("complete")
        return np.zeros(0, bool) if arr is None else np.asarray(arr[:], dtype=bool)

    def n_complete(self) -> int:
        return int(self.complete_mask().sum())

    def missing(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.complete_mask())]

    def completed(self, block: int) -> tuple[float, int] | None:
        """``(seconds, checksum)`` of ``block`` if it is marked complete, else None."""
        arr = self._array("complete")
        if arr is None or block >= arr.shape[0] or not bool(arr[block]):
            return None
        return float(self._array("seconds")[block]), int(self._array("checksum")[block])

    def mark_complete(self, block: int, seconds: float, checksum: int) -> None:
        self._array("seconds", "r+")[block] = seconds
        self._array("checksum", "r+")[block] = checksum
        self._array("complete", "r+")[block] = True

    def resize(self, n_blocks: int) -> None:
        """Grow the manifest to ``n_blocks`` blocks; the new ones start incomplete."""
        for name in ("complete", "seconds", "checksum"):
            self._array(name, "r+").resize((n_blocks,))

    def mark_incomplete(self, block: int) -> None:
        """Reopen a block (its sample range grew): it is solved again on the next run."""
        self._array("complete", "r+")[block] = False

    def checksums(self) -> np.ndarray:
        return np.asarray(self._array("checksum")[:])

    def seconds(self) -> np.ndarray:
        """Wall time of each block's solve in s; NaN for a block not yet written."""
        return np.asarray(self._array("seconds")[:])
