"""Training checkpoints and models inside the run store: atomic, checksummed, loaded safely.

A checkpoint is ``epoch-NNNNNN.pt`` (``torch.save`` bytes, written durably through a temporary
file) plus ``epoch-NNNNNN.json`` with its size and CRC32, written after it: a checkpoint without
its JSON, or whose bytes differ from it, is damaged, and loading falls back to the previous one
with a warning. The newest ``keep`` (2) are kept. Everything loads with ``weights_only=True``
(no arbitrary unpickling).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from pdeflow.storage.fsio import FileEntry, check_file, read_json, write_durable, write_json

_NAME = re.compile(r"^epoch-(\d{6})\.(pt|json)$")


def torch_bytes(obj) -> bytes:
    import torch  # here, not at import: `pdeflow show` reads records through this module

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_torch(path: Path, obj) -> FileEntry:
    """Write ``obj`` with ``torch.save`` atomically and durably; returns the file's entry."""
    return write_durable(path, torch_bytes(obj))


def load_torch(path: Path, expected: FileEntry | None = None):
    """Load ``path`` with ``weights_only=True`` after checking it against ``expected``.

    Raises:
        ValueError: the file is missing or differs from ``expected`` (message says how).
    """
    if expected is not None:
        problem = check_file(path, expected)
        if problem is not None:
            raise ValueError(f"{path.name}: {problem}")
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def save_checkpoint(directory: Path, epoch: int, state: dict, keep: int = 2) -> Path:
    """Write the checkpoint of ``epoch`` and its checksum; keep the newest ``keep``."""
    target = directory / f"epoch-{epoch:06d}.pt"
    entry = save_torch(target, state)
    meta = {"epoch": epoch, "size": entry.size, "crc32": entry.crc32}
    write_json(target.with_suffix(".json"), meta)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return target


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files (``.pt``) whose checksum file exists, oldest first."""
    if not directory.is_dir():
        return []
    found = sorted(p for p in directory.iterdir() if (m := _NAME.match(p.name)) and m[2] == "pt")
    return [p for p in found if p.with_suffix(".json").is_file()]


def load_latest(directory: Path) -> tuple[dict | None, list[str]]:
    """The newest intact checkpoint, and a warning for each damaged newer one skipped.

    Returns:
        (state or None when no intact checkpoint exists, warnings).
    """
    warnings = []
    for path in reversed(list_checkpoints(directory)):
        try:
            meta = read_json(path.with_suffix(".json")) or {}
            state = load_torch(path, FileEntry(int(meta["size"]), int(meta["crc32"])))
        except Exception as err:  # damaged in any way: try the previous one
            warnings.append(f"checkpoint {path.name} is damaged ({err}); it is skipped")
            continue
        return state, warnings
    return None, warnings
