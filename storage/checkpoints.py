"""Training checkpoints inside the run store, written atomically and loaded safely."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch

_NAME = re.compile(r"^epoch-(\d{6})\.pt$")


def save_checkpoint(directory: Path, epoch: int, state: dict, keep: int = 2) -> Path:
    """Write ``state`` as ``epoch-NNNNNN.pt`` via a temporary file and rename; keep the newest.

    A process killed mid-write leaves only a temporary file, never a truncated checkpoint.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"epoch-{epoch:06d}.pt"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def load_latest(directory: Path) -> dict | None:
    """The newest checkpoint, loaded with ``weights_only=True`` (no arbitrary unpickling)."""
    found = list_checkpoints(directory)
    if not found:
        return None
    return torch.load(found[-1], map_location="cpu", weights_only=True)
