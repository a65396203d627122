"""Everything that knows Zarr: the run store, its manifest, datasets and checkpoints."""

from storage.store import (
    STAGE_ORDER,
    ConfigMismatch,
    RunStore,
    StoreError,
    resolve_store,
    runs_dir,
)

__all__ = ["STAGE_ORDER", "ConfigMismatch", "RunStore", "StoreError", "resolve_store", "runs_dir"]
