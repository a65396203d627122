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

__all__ = [
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
    "resolve_store",
    "runs_dir",
]
