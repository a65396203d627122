"""Export a run store's dataset to HDF5 in the layouts PDEBench's loaders read.

Three layouts, chosen from the store (rows are the exported samples in store order, ``N`` of
them; ``T`` frames, ``X`` (and ``Y``) grid points, ``C`` fields):

- 1D (dims ``sample, time, x``): ``tensor`` (N, T, X) float32 for a single field (one dataset
  per field, named after it, for several, as PDEBench's 1D CFD files do), ``x-coordinate``
  (X,) and ``t-coordinate`` (T + 1,): PDEBench's published 1D files (advection, Burgers,
  1D reaction-diffusion) hold one time value more than frames (e.g. tensor (10000, 201, 1024)
  with a t-coordinate of 202 values, ``arange(n_saved + 1) * dt_save`` in its generators);
  PDEBench's loaders read only ``tensor`` and ``x-coordinate``. The first T values here are the
  frame times and the extra one continues the last frame spacing.
- 2D time-dependent (dims ``sample, time, x, y``), like PDEBench's diffusion-reaction and
  shallow-water files: one group per sample named by its zero-padded row, ``"0000"``, ... (the
  width grows past 4 digits only beyond 10^4 samples: PDEBench's loader sorts the group names,
  so they must sort in row order),
  each with ``data`` (T, X, Y, C) float32 and ``grid/x`` (X,), ``grid/y`` (Y,), ``grid/t`` (T,).
- Darcy (stationary 2D with fields ``a`` and ``u``): ``nu`` (N, X, Y) the coefficient field
  ``a``, ``tensor`` (N, 1, X, Y) the solution ``u``, ``x-coordinate``, ``y-coordinate``.

The sampled parameters go into attributes: on the file, a scalar where a parameter is constant
over the exported samples (PDEBench's files hold one value per file) and an (N,) array otherwise,
next to ``sample`` (global sample ids) and ``seed`` (N,), and the config's fixed ``constants``
as scalars; in the 2D layout the sampled values also go on each sample's group as scalars.
Coordinates are written as float32, as PDEBench's are.

The export streams one stored chunk of samples at a time and writes a hidden temporary file
that is renamed to ``out`` only when complete, so a failed or interrupted export leaves no file
that looks finished.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

REQUIRED_ATTRS = ("fields", "pde", "stationary", "parameters")
DIMS_1D = ("sample", "time", "x")
DIMS_2D = ("sample", "time", "x", "y")
DARCY_FIELDS = ("a", "u")  # (coefficient, solution)


def export_pdebench(
    store: str | Path, out: str | Path, *, split: str | None = None, overwrite: bool = False
) -> Path:
    """Write a run store's samples to one HDF5 file in PDEBench's layout (module docstring).

    Args:
        store: The run store directory (a Zarr v3 group readable by ``xarray.open_zarr``).
        out: Path of the HDF5 file to write; parent directories are created.
        split: Export only the samples of this split (a name in the store's ``split``
            ``flag_meanings``, e.g. ``"train"``); ``None`` (default) exports every sample.
        overwrite: Replace an existing ``out``. Defaults to False.

    Returns:
        The path of the written file.

    Raises:
        ImportError: h5py is not installed.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        ValueError: The store lacks the attributes or layout this needs, the split name is
            unknown or empty, or a sample holds non-finite values (an unfinished store).
    """
    h5py = _require_h5py()
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"out {out} is a directory; give the path of an HDF5 file")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    ds = xr.open_zarr(str(store), consolidated=None)
    layout, fields = _inspect(ds)
    rows = _select(ds, split)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # libver v108 (HDF5 >= 1.8) stores large attributes densely: per-sample parameter
        # arrays exceed the 64 KiB limit of the oldest format beyond ~8000 samples.
        with h5py.File(tmp, "w", libver=("v108", "latest")) as h5:
            h5.attrs.update(_file_attrs(ds, store, split, fields, rows))
            WRITERS[layout](h5, ds, fields, rows)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _require_h5py():
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            "exporting to HDF5 needs h5py: pip install h5py (or pip install 'pdeflow[dev]')"
        ) from err
    return h5py


def _inspect(ds: xr.Dataset) -> tuple[str, list[str]]:
    """Check the store's attributes and field dims; return the layout name and the fields."""
    missing = [a for a in REQUIRED_ATTRS if a not in ds.attrs]
    if missing:
        raise ValueError(
            f"store lacks attributes {missing} (needs {list(REQUIRED_ATTRS)}); "
            "is it a pdeflow run store written by the generate stage?"
        )
    fields = ds.attrs["fields"]
    if isinstance(fields, str) or not fields or any(f not in ds.data_vars for f in fields):
        raise ValueError(
            f"store attribute 'fields' must list its data variables, got {fields!r}; "
            f"variables: {sorted(ds.data_vars)}"
        )
    fields = list(fields)
    dims = {ds[f].dims for f in fields}
    if len(dims) != 1 or next(iter(dims)) not in (DIMS_1D, DIMS_2D):
        raise ValueError(
            f"every field must have dims {DIMS_1D} or {DIMS_2D}, got "
            f"{ {f: ds[f].dims for f in fields} }"
        )
    stationary = bool(ds.attrs["stationary"])
    if stationary and ds.sizes["time"] != 1:
        raise ValueError(f"a stationary store has one frame, this one {ds.sizes['time']}")
    if next(iter(dims)) == DIMS_1D:
        return "1d", fields
    if stationary and set(fields) == set(DARCY_FIELDS):
        return "darcy", list(DARCY_FIELDS)
    return "2d", fields


def _select(ds: xr.Dataset, split: str | None) -> np.ndarray:
    """Positions of the samples to export, ascending, shape (N,)."""
    if split is None:
        return np.arange(ds.sizes["sample"])
    if "split" not in ds.coords or "flag_meanings" not in ds["split"].attrs:
        raise ValueError("store has no 'split' coordinate with flag_meanings; use split=None")
    names = str(ds["split"].attrs["flag_meanings"]).split()
    codes = ds["split"].attrs.get("flag_values", list(range(len(names))))
    if split not in names:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(names)}")
    rows = np.flatnonzero(ds["split"].values == codes[names.index(split)])
    if rows.size == 0:
        raise ValueError(f"split {split!r} has no samples in this store")
    return rows


def iter_blocks(
    ds: xr.Dataset, fields: list[str], rows: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the selected samples one stored chunk at a time, never the whole store.

    Yields:
        (positions in ``rows`` of this block's samples, shape (m,); values float32 of shape
        (m, T, C, *space)), in ascending order.

    Raises:
        ValueError: A sample holds NaN or inf (its block was never written, or it blew up).
    """
    chunk = _sample_chunk(ds, fields[0])
    owners = rows // chunk
    for c in np.unique(owners):
        pos = np.flatnonzero(owners == c)
        lo = int(c) * chunk
        hi = min(lo + chunk, ds.sizes["sample"])
        take = rows[pos] - lo
        values = np.stack(
            [np.asarray(ds[f].isel(sample=slice(lo, hi)).values)[take] for f in fields], axis=2
        ).astype(np.float32)
        bad = ~np.isfinite(values.reshape(len(pos), -1)).all(axis=1)
        if bad.any():
            raise ValueError(
                f"samples {rows[pos][bad].tolist()} hold non-finite values: export only a "
                "store whose generate stage is complete"
            )
        yield pos, values


def _sample_chunk(ds: xr.Dataset, field: str) -> int:
    chunks = ds[field].encoding.get("chunks") or ds[field].encoding.get("preferred_chunks")
    if isinstance(chunks, dict):
        chunks = [chunks.get("sample")]
    if chunks and chunks[0]:
        return int(chunks[0])
    return ds.sizes["sample"]


def _coord(ds: xr.Dataset, name: str) -> np.ndarray:
    return np.asarray(ds[name].values, dtype=np.float32)


def _t_coordinate(time: np.ndarray) -> np.ndarray:
    """T + 1 values (see the module docstring): the frame times, then one spacing more."""
    step = time[-1] - time[-2] if time.size > 1 else 0.0
    return np.append(time, time[-1] + step).astype(np.float32)


def _sample_ids(ds: xr.Dataset, rows: np.ndarray) -> np.ndarray:
    if "sample" in ds.coords:
        return np.asarray(ds["sample"].values)[rows].astype(np.int64)
    return rows.astype(np.int64)


def _param_values(ds: xr.Dataset, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {p: np.asarray(ds[p].values)[rows] for p in ds.attrs["parameters"] if p in ds.coords}


def _file_attrs(
    ds: xr.Dataset, store: str | Path, split: str | None, fields: list[str], rows: np.ndarray
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "pde": str(ds.attrs["pde"]),
        "fields": list(fields),
        "parameters": list(ds.attrs["parameters"]),
        "stationary": bool(ds.attrs["stationary"]),
        "split": split or "all",
        "source": str(Path(store).resolve()),
        "sample": _sample_ids(ds, rows),
    }
    if "seed" in ds.coords:
        attrs["seed"] = np.asarray(ds["seed"].values)[rows]
    for name, values in _param_values(ds, rows).items():
        attrs[name] = values[0] if np.all(values == values[0]) else values
    for name, value in dict(ds.attrs.get("constants") or {}).items():
        attrs.setdefault(name, value)  # parameters held fixed in the config
    return attrs


def _write_1d(h5, ds: xr.Dataset, fields: list[str], rows: np.ndarray) -> None:
    n, t, x = len(rows), ds.sizes["time"], ds.sizes["x"]
    names = ["tensor"] if len(fields) == 1 else fields
    out = [h5.create_dataset(name, shape=(n, t, x), dtype="float32") for name in names]
    for pos, values in iter_blocks(ds, fields, rows):
        for c, dset in enumerate(out):
            dset[pos[0] : pos[-1] + 1] = values[:, :, c]
    h5.create_dataset("x-coordinate", data=_coord(ds, "x"))
    h5.create_dataset("t-coordinate", data=_t_coordinate(np.asarray(ds["time"].values, float)))


def _write_2d(h5, ds: xr.Dataset, fields: list[str], rows: np.ndarray) -> None:
    width = max(4, len(str(len(rows) - 1)))
    x, y, t = _coord(ds, "x"), _coord(ds, "y"), _coord(ds, "time")
    ids, params = _sample_ids(ds, rows), _param_values(ds, rows)
    seeds = np.asarray(ds["seed"].values)[rows] if "seed" in ds.coords else None
    for pos, values in iter_blocks(ds, fields, rows):
        for i, sample in zip(pos, values, strict=True):
            group = h5.create_group(f"{i:0{width}d}")
            group.create_dataset("data", data=np.moveaxis(sample, 1, -1))  # (T, X, Y, C)
            group.create_dataset("grid/x", data=x)
            group.create_dataset("grid/y", data=y)
            group.create_dataset("grid/t", data=t)
            group.attrs["sample"] = ids[i]
            if seeds is not None:
                group.attrs["seed"] = seeds[i]
            for name, vals in params.items():
                group.attrs[name] = vals[i]


def _write_darcy(h5, ds: xr.Dataset, fields: list[str], rows: np.ndarray) -> None:
    n, x, y = len(rows), ds.sizes["x"], ds.sizes["y"]
    nu = h5.create_dataset("nu", shape=(n, x, y), dtype="float32")
    tensor = h5.create_dataset("tensor", shape=(n, 1, x, y), dtype="float32")
    for pos, values in iter_blocks(ds, fields, rows):  # fields are (a, u): (m, 1, 2, X, Y)
        block = slice(pos[0], pos[-1] + 1)
        nu[block] = values[:, 0, 0]
        tensor[block] = values[:, :, 1]
    h5.create_dataset("x-coordinate", data=_coord(ds, "x"))
    h5.create_dataset("y-coordinate", data=_coord(ds, "y"))


WRITERS = {"1d": _write_1d, "2d": _write_2d, "darcy": _write_darcy}
