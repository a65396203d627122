"""The block manifest: one small JSON file per completely written generation block.

``_pdeflow/manifest/block-NNNNNN.json`` records a block's sample range, wall time, the dataset
key it was computed under, and the size and CRC32 of every chunk file it owns. It is written
(atomically, durably) only after all those files are durable, so a block killed half-way has no
entry and is recomputed. Each block owns its own entry file: parallel writers never share one.
An entry is trusted only when its key and range match the store's current layout, and its
files are checked against it before use (``verify`` and every read).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pdeflow.storage.fsio import FileEntry, iter_files, read_json, write_json

_NAME = re.compile(r"^block-(\d{6,})\.json$")


class BlockEntry(BaseModel):
    """Manifest entry of one complete block."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    block: int
    start: int
    stop: int
    seconds: float
    key: str
    files: dict[str, tuple[int, int]]

    def entry(self, rel: str) -> FileEntry:
        try:
            return FileEntry(*self.files[rel])
        except KeyError:
            raise KeyError(f"block {self.block} records no file {rel}") from None


class BlockManifest:
    """The manifest directory of one store."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    def path(self, block: int) -> Path:
        return self.dir / f"block-{block:06d}.json"

    def write(self, entry: BlockEntry) -> None:
        write_json(self.path(entry.block), entry.model_dump(mode="json"))

    def read(self, block: int) -> BlockEntry | None:
        """Block ``block``'s entry; None when absent or unreadable (then it is incomplete)."""
        try:
            data = read_json(self.path(block))
            return None if data is None else BlockEntry.model_validate(data)
        except ValueError:
            return None

    def entries(self) -> dict[int, BlockEntry]:
        """Every readable entry, by block; a damaged entry file counts as no entry."""
        out = {}
        for path in iter_files(self.dir):
            m = _NAME.match(path.name)
            if m and (entry := self.read(int(m[1]))) is not None and entry.block == int(m[1]):
                out[entry.block] = entry
        return out

    def remove(self, block: int) -> None:
        self.path(block).unlink(missing_ok=True)

    def blocks_on_disk(self) -> list[int]:
        return sorted(int(m[1]) for p in iter_files(self.dir) if (m := _NAME.match(p.name)))
