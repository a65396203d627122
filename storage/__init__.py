"""The run store: the only code that opens paths under a run directory (see ``store``)."""

from pdeflow.storage.errors import (
    ConfigMismatch,
    NonFiniteData,
    StageNotReady,
    StoreBusy,
    StoreDamaged,
    StoreError,
    StoreNested,
)
from pdeflow.storage.fsio import FileEntry
from pdeflow.storage.records import StageRecord
from pdeflow.storage.store import RunStore, resolve_store, runs_dir

# Names of storage/trajectory.py, loaded on first access: that module imports torch (seconds),
# and the CLI imports this package, so `pdeflow show` and `pdeflow verify` would pay for torch
# at every start if these were imported here.
_TRAJECTORY = ("ChunkOrderSampler", "TrajectoryDataset", "chunk_order_sampler", "open_run")


def __getattr__(name: str):
    if name in _TRAJECTORY:
        from pdeflow.storage import trajectory

        return getattr(trajectory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_TRAJECTORY})


__all__ = [
    "ChunkOrderSampler",
    "ConfigMismatch",
    "FileEntry",
    "NonFiniteData",
    "RunStore",
    "StageNotReady",
    "StageRecord",
    "StoreBusy",
    "StoreDamaged",
    "StoreError",
    "StoreNested",
    "TrajectoryDataset",
    "chunk_order_sampler",
    "open_run",
    "resolve_store",
    "runs_dir",
]
