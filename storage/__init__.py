"""Everything that knows Zarr: the run store, its manifest, datasets and checkpoints."""

import warnings

# Parameter-name coordinates are short strings, which zarr-python stores as fixed-length UTF-32
# and warns about on every write and read: the v3 spec has no string type yet. xarray and
# zarr-python read them back exactly; the warning says nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*does not have a Zarr V3 specification")
# _pdeflow/ (stage records, checkpoints) sits inside the run directory on purpose; zarr warns
# when listing a group finds a directory that is not a Zarr node.
warnings.filterwarnings("ignore", message=r"Object at _pdeflow is not recognized")

from pdeflow.storage.store import (  # noqa: E402  (after the warning filter)
    STAGE_ORDER,
    ConfigMismatch,
    RunStore,
    StoreError,
    resolve_store,
    runs_dir,
)

__all__ = ["STAGE_ORDER", "ConfigMismatch", "RunStore", "StoreError", "resolve_store", "runs_dir"]
