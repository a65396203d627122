"""Zarr writes other than block chunks: stage groups, root attributes, consolidated metadata.

All of them go through ``DurableLocalStore``, a zarr ``LocalStore`` whose every file write is a
temporary file, fsync and rename (zarr's own ``LocalStore`` renames, but never fsyncs), so a
killed or crashed writer leaves each file old or new, never torn.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pdeflow.storage.fsio import FileEntry, file_entry, iter_files

# Notices zarr and xarray give about pdeflow's own layout, which say nothing a user can act on:
# parameter-name coordinates are short strings, which zarr stores as fixed-length UTF-32 and
# warns about (the v3 spec has no string type yet; both libraries read them back exactly);
# _pdeflow/ sits inside the run directory on purpose; consolidated metadata is zarr-python's v3
# extension, which xarray reads.
NOTICES = (
    r".*does not have a Zarr V3 specification",
    r"Object at _pdeflow is not recognized",
    r"Consolidated metadata is currently not",
)


@contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in NOTICES:
            warnings.filterwarnings("ignore", message=message)
        yield


def consolidate(root: Path) -> FileEntry:
    """Consolidate the hierarchy's metadata into the root ``zarr.json`` (one read for xarray).

    Returns:
        The entry of the rewritten root ``zarr.json``.
    """
    import zarr

    from pdeflow.storage.durable import DurableLocalStore

    with quiet():
        zarr.consolidate_metadata(DurableLocalStore(root))
    return file_entry(root / "zarr.json")


def update_attrs(root: Path, attrs: dict) -> None:
    """Set attributes of the root group (then ``consolidate``: they are in its metadata)."""
    import zarr

    from pdeflow.storage.durable import DurableLocalStore

    with quiet():
        zarr.open_group(DurableLocalStore(root), mode="r+").attrs.update(attrs)


def write_group(
    root: Path, name: str, variables: dict, coords: dict | None = None, attrs: dict | None = None
) -> dict[str, FileEntry]:
    """Write arrays as group ``name`` (one ``xarray.Dataset``), replacing an older one.

    Args:
        variables: name -> ``(dims, array)`` or ``(dims, array, attrs)``.
        coords: name -> values or ``(dims, values)``.
        attrs: the group's attributes.

    Returns:
        Entry of every file of the group, by path relative to ``root``.
    """
    import xarray as xr

    from pdeflow.storage.durable import DurableLocalStore

    ds = xr.Dataset(variables, coords=coords or {}, attrs=attrs or {})
    shutil.rmtree(root / name, ignore_errors=True)
    with quiet():
        ds.to_zarr(DurableLocalStore(root), group=name, mode="w", zarr_format=3, consolidated=False)
    return {str(p.relative_to(root)): file_entry(p) for p in iter_files(root / name)}


def read_group(root: Path, name: str):
    """Group ``name`` loaded into memory as an ``xarray.Dataset``."""
    import xarray as xr

    with quiet():
        return xr.open_zarr(str(root), group=name, consolidated=False).load()


def read_attrs(root: Path) -> dict:
    import zarr

    with quiet():
        return dict(zarr.open_group(str(root), mode="r").attrs)


def read_array(root: Path, name: str, start: int = 0, stop: int | None = None):
    """Rows ``start:stop`` of a one-dimensional array (a sample-wise coordinate)."""
    import numpy as np
    import zarr

    with quiet():
        return np.asarray(zarr.open_array(str(root), path=name, mode="r")[start:stop])


def array_attrs(root: Path, name: str) -> dict:
    import zarr

    with quiet():
        return dict(zarr.open_array(str(root), path=name, mode="r").attrs)
