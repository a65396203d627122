"""Zarr writes other than block chunks: stage groups, root attributes, consolidated metadata;
and the attribute convention every write and read of the store's attributes goes through.

All writes go through ``DurableLocalStore``, a zarr ``LocalStore`` whose every file write is a
temporary file, fsync and rename (zarr's own ``LocalStore`` renames, but never fsyncs), so a
killed or crashed writer leaves each file old or new, never torn.

JSON attributes: every attribute pdeflow writes (of the dataset, of a stage group, of any
variable) is one that netCDF can hold, so ``to_netcdf()`` works on every group as opened from
the store. ``encode_attrs`` keeps a string, an int or a float (not a bool), and a non-empty
list of ints or of floats as they are; any other value (a dict, a bool, None, a list of strings,
an empty or mixed list) is stored as its JSON text under the name with ``_json`` appended::

    config: {"pde": "burgers", ...}   ->   config_json: '{"pde": "burgers", ...}'
    stationary: False                 ->   stationary_json: 'false'
    fields: ["u"]                     ->   fields_json: '["u"]'

Lists of strings go to JSON because netCDF gives a one-element string array back as a bare
string. Names ending in ``_json`` are reserved for this. ``decode_attrs`` undoes it
(``config_json`` -> ``config``, the parsed value) and passes every other value through, so
stores written before the convention (dicts, bools and lists in the Zarr attributes) read the
same; where both forms of a name are present the ``_json`` one wins. ``RunStore.attrs``,
``read_group``, ``array_attrs`` and the exports decode; ``RunStore.open_dataset`` returns the
encoded (netCDF-ready) form, encoding an older store's attributes as it opens them.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pdeflow.storage.fsio import FileEntry, file_entry, iter_files

JSON_SUFFIX = "_json"

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


def _number_kind(value) -> str | None:
    """ "int" or "float" for a number netCDF holds as such; None for anything else (a bool)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, np.integer) or (isinstance(value, int) and -(2**63) <= value < 2**63):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    return None


def _netcdf_ready(value) -> bool:
    """Whether netCDF holds ``value`` and gives it back (see the module docstring)."""
    if isinstance(value, str) or _number_kind(value):
        return True
    if isinstance(value, np.ndarray) and value.ndim != 1:
        return False
    if isinstance(value, list | tuple | np.ndarray) and len(value):
        kinds = {_number_kind(v) for v in value}
        return kinds in ({"int"}, {"float"})
    return False


def _plain(value):
    """JSON's fallback for the numpy scalars and arrays an attribute may hold."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"attribute value {value!r} of type {type(value).__name__} is not JSON")


def _counterpart(name: str) -> str:
    return name[: -len(JSON_SUFFIX)] if name.endswith(JSON_SUFFIX) else name + JSON_SUFFIX


def encode_attrs(attrs: Mapping) -> dict:
    """``attrs`` as netCDF can hold them: other values as JSON text under ``<name>_json``.

    Idempotent: encoded attributes pass through unchanged. Where a value and an encoded
    ``<name>_json`` are both given, the encoded one is kept (it is the newer form).

    Raises:
        TypeError: a value that JSON cannot hold either.
    """
    out = {}
    for name, value in attrs.items():
        if name.endswith(JSON_SUFFIX) and isinstance(value, str):
            out[name] = value
        elif _netcdf_ready(value):
            out[name] = value
        elif _counterpart(name) not in attrs:
            out[name + JSON_SUFFIX] = json.dumps(value, default=_plain)
    return out


def decode_attrs(attrs: Mapping) -> dict:
    """``attrs`` with every ``<name>_json`` parsed back into ``<name>`` (module docstring).

    Values of older stores (dicts, bools and lists in the Zarr attributes) pass through. Works
    on the attributes of a netCDF file written from the store too.
    """
    out = {name: value for name, value in attrs.items() if not _is_encoded(name, value)}
    for name, value in attrs.items():
        if _is_encoded(name, value):
            try:
                out[_counterpart(name)] = json.loads(value)
            except ValueError:  # not ours: keep it as it is
                out[name] = value
    return out


def _is_encoded(name: str, value) -> bool:
    return name.endswith(JSON_SUFFIX) and len(name) > len(JSON_SUFFIX) and isinstance(value, str)


def encode_dataset(ds):
    """Encode the attributes of ``ds`` and of each of its variables, in place; ``ds``.

    A variable's CF ``flag_values`` take the variable's own type, as CF requires (Zarr's JSON
    attributes keep no integer width: ``split`` is int8, its flags come back as plain ints).
    """
    ds.attrs = encode_attrs(ds.attrs)
    for variable in ds.variables.values():
        variable.attrs = encode_attrs(variable.attrs)
        flags = variable.attrs.get("flag_values")
        if flags is not None and variable.dtype.kind in "iu" and _netcdf_ready(flags):
            variable.attrs["flag_values"] = np.asarray(flags, dtype=variable.dtype)
    return ds


def decode_dataset(ds):
    """Decode the attributes of ``ds`` and of each of its variables, in place; ``ds``."""
    ds.attrs = decode_attrs(ds.attrs)
    for variable in ds.variables.values():
        variable.attrs = decode_attrs(variable.attrs)
    return ds


def update_attrs(root: Path, attrs: dict) -> None:
    """Set attributes of the root group (then ``consolidate``: they are in its metadata).

    Values are encoded (``encode_attrs``); the other form of each name an older store may
    hold (``normalization`` beside a new ``normalization_json``) is removed.
    """
    import zarr

    from pdeflow.storage.durable import DurableLocalStore

    new = encode_attrs(attrs)
    with quiet():
        group = zarr.open_group(DurableLocalStore(root), mode="r+")
        kept = {k: v for k, v in group.attrs.asdict().items() if _counterpart(k) not in new}
        group.attrs.put(kept | new)


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

    ds = encode_dataset(xr.Dataset(variables, coords=coords or {}, attrs=attrs or {}))
    shutil.rmtree(root / name, ignore_errors=True)
    with quiet():
        ds.to_zarr(DurableLocalStore(root), group=name, mode="w", zarr_format=3, consolidated=False)
    return {str(p.relative_to(root)): file_entry(p) for p in iter_files(root / name)}


def read_group(root: Path, name: str):
    """Group ``name`` loaded into memory as an ``xarray.Dataset``, attributes decoded."""
    import xarray as xr

    with quiet():
        return decode_dataset(xr.open_zarr(str(root), group=name, consolidated=False).load())


def read_attrs(root: Path) -> dict:
    """The root group's attributes, decoded (``decode_attrs``)."""
    import zarr

    with quiet():
        return decode_attrs(zarr.open_group(str(root), mode="r").attrs)


def read_array(root: Path, name: str, start: int = 0, stop: int | None = None):
    """Rows ``start:stop`` of a one-dimensional array (a sample-wise coordinate)."""
    import numpy as np
    import zarr

    with quiet():
        return np.asarray(zarr.open_array(str(root), path=name, mode="r")[start:stop])


def array_attrs(root: Path, name: str) -> dict:
    """The attributes of array ``name``, decoded (``decode_attrs``)."""
    import zarr

    with quiet():
        return decode_attrs(zarr.open_array(str(root), path=name, mode="r").attrs)
