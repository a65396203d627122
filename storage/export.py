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
  The file holds nothing but these groups: PDEBench's loaders take every top-level key for a
  sample. (``FNODatasetSingle`` reads the grid of group ``"0023"``, so it needs 24 samples.)
- Darcy (stationary 2D with fields ``a`` and ``u``): ``nu`` (N, X, Y) the coefficient field
  ``a``, ``tensor`` (N, 1, X, Y) the solution ``u``, ``x-coordinate``, ``y-coordinate``.

File names follow PDEBench's loaders, which pick the layout by the name's end
(``pdebench/models/fno/utils.py``): a name ending in ``h5`` is read as the per-sample group
layout (``FNODatasetMult`` appends ``.h5`` itself), any other as a tensor file. So the 1D and
Darcy layouts must be written to ``*.hdf5`` (the published files' extension) and the 2D group
layout to ``*.h5``; other names are refused.

Coefficients are file attributes under PDEBench's names and scaling where PDEBench has the
equation (``PDEBENCH_NAMES``; the names its ``data_gen/data_gen_NLE/Data_Merge.py`` writes:
advection ``beta``, Burgers ``Nu``, 1D reaction-diffusion ``Nu`` and ``rho``, Darcy ``beta``;
PDEBench's 2D diffusion-reaction files keep ``Du``, ``Dv``, ``k`` only in each group's
``config``, and here they are plain attributes), else under pdeflow's names: a scalar where the
value is the same for every exported sample (PDEBench's files hold one value per file), an
(N,) array otherwise; in the 2D layout each group also holds its sample's values as scalars.
Burgers differs in scaling: PDEBench's equation is u_t + (u^2/2)_x = (Nu/pi) u_xx, so
``Nu = pi * nu`` for pdeflow's ``nu``. pdeflow's own names and values, sampled and constant,
stay in ``attrs["pdeflow_parameters"]``, a JSON object. ``sample`` (global sample ids) and
``seed`` are (N,) attributes; ``split`` names the exported selection (``"all"`` or one split)
and each sample's own split (train, val, test, calibration) is the dataset ``split`` (N,) int8
with ``flag_values`` and ``flag_meanings`` in the tensor layouts and, in the 2D layout, the
attribute ``split`` of each group plus the file attributes ``sample_split`` and
``split_flag_meanings``. ``source`` is the store's name, never a local path.

Coordinates are float32, as PDEBench's are, and follow PDEBench's convention of cell centres
(its generators save ``x = x_left + (i + 1/2) dx``). Grids pdeflow already stores as cell
centres (Darcy, FitzHugh-Nagumo) are written as stored. pdeflow's periodic PDEs store the
field at nodes ``i dx`` (``0 .. L - dx``); their coordinates are written shifted by ``dx / 2``
(``dx/2 .. L - dx/2``) while the field values stay the node values. Every periodic pdeflow PDE
that gets the shift is translation invariant, so the relabelled trajectory is an exact solution
of the same equation, started from the initial state moved by ``dx / 2``; Kolmogorov flow,
whose forcing is tied to the nodes, keeps its node coordinates. Each coordinate dataset's
attribute ``pdeflow_shift`` holds the shift added (0 where none), so pdeflow's coordinates are
the written ones minus it. PDEs outside pdeflow's registry (user simulators) keep their
coordinates as stored.

The export streams one stored chunk of samples at a time and writes a hidden temporary file
that is renamed to ``out`` only when complete, so a failed or interrupted export leaves no file
that looks finished; the finished file gets the permissions the process umask gives a new file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pdeflow.storage.groups import decode_dataset

REQUIRED_ATTRS = ("fields", "pde", "stationary", "parameters")
DIMS_1D = ("sample", "time", "x")
DIMS_2D = ("sample", "time", "x", "y")
DARCY_FIELDS = ("a", "u")  # (coefficient, solution)
# The extension PDEBench's loaders need per layout (module docstring).
EXTENSIONS = {"1d": ".hdf5", "darcy": ".hdf5", "2d": ".h5"}
# pdeflow PDE -> {pdeflow coefficient: (PDEBench's attribute name, factor to PDEBench's value)}.
PDEBENCH_NAMES: dict[str, dict[str, tuple[str, float]]] = {
    "advection": {"c": ("beta", 1.0)},
    "burgers": {"nu": ("Nu", math.pi)},  # PDEBench's viscosity term is (Nu / pi) u_xx
    "fisher_kpp": {"nu": ("Nu", 1.0), "rho": ("rho", 1.0)},
    "darcy_2d": {"beta": ("beta", 1.0)},
    "fitzhugh_nagumo_2d": {"Du": ("Du", 1.0), "Dv": ("Dv", 1.0), "k": ("k", 1.0)},
}
# Periodic PDEs whose equations depend on position: moving their coordinates would misplace it.
NODE_BOUND = frozenset({"kolmogorov_2d"})


def export_pdebench(
    store: str | Path, out: str | Path, *, split: str | None = None, overwrite: bool = False
) -> Path:
    """Write a run store's samples to one HDF5 file in PDEBench's layout (module docstring).

    Args:
        store: The run store directory (a Zarr v3 group readable by ``xarray.open_zarr``).
        out: Path of the HDF5 file to write; parent directories are created. It must end in
            ``.hdf5`` for 1D and Darcy stores and in ``.h5`` for 2D time-dependent stores, the
            names PDEBench's loaders read those layouts from.
        split: Export only the samples of this split (a name in the store's ``split``
            ``flag_meanings``, e.g. ``"train"``); ``None`` (default) exports every sample.
        overwrite: Replace an existing ``out``. Defaults to False.

    Returns:
        The path of the written file.

    Raises:
        ImportError: h5py is not installed.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        ValueError: The store lacks the attributes or layout this needs, ``out``'s extension
            is not the one PDEBench reads this layout from, the split name is unknown or
            empty, or a sample holds non-finite values (an unfinished store).
    """
    h5py = _require_h5py()
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"out {out} is a directory; give the path of an HDF5 file")
    ds = decode_dataset(xr.open_zarr(str(store), consolidated=None))  # either attrs form
    layout, fields = _inspect(ds)
    _check_extension(out, layout)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    rows = _select(ds, split)

    def write(tmp: Path) -> None:
        # libver v108 (HDF5 >= 1.8) stores large attributes densely: per-sample parameter
        # arrays exceed the 64 KiB limit of the oldest format beyond ~8000 samples.
        with h5py.File(tmp, "w", libver=("v108", "latest")) as h5:
            h5.attrs.update(_file_attrs(ds, store, split, fields, rows, layout))
            WRITERS[layout](h5, ds, fields, rows)

    _write_atomically(out, write)
    return out


def _check_extension(out: Path, layout: str) -> None:
    want = EXTENSIONS[layout]
    if out.suffix != want:
        kind = "per-sample group" if layout == "2d" else "tensor"
        raise ValueError(
            f"out {out.name!r}: PDEBench's loaders read this store's {kind} layout only from a "
            f"file ending in {want!r} (they read names ending in 'h5' as the 2D group layout "
            f"and any other as a tensor file); name it {out.stem}{want}"
        )


def _write_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """Run ``write`` on a hidden temporary file beside ``out``; rename it to ``out`` when done."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp creates 0600; a finished export gets what open() would give a new file.
        tmp.chmod(0o666 & ~_umask())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask; read from /proc where it can be, as setting it races other threads."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _require_h5py():
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            "exporting to HDF5 needs h5py: pip install h5py (or pip install 'pdeflow[dev]')"
        ) from err
    return h5py


def store_fields(ds: xr.Dataset) -> list[str]:
    """The store's fields, after checking it has the generate stage's attributes and that
    ``fields`` lists its data variables."""
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
    return list(fields)


def _inspect(ds: xr.Dataset) -> tuple[str, list[str]]:
    """Check the store's attributes and field dims; return the layout name and the fields."""
    fields = store_fields(ds)
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


def _space_coord(ds: xr.Dataset, name: str) -> tuple[np.ndarray, float]:
    """Axis ``name``'s coordinates as PDEBench's cell centres (module docstring), float32.

    Returns:
        (coordinates, the shift added to the stored ones: half a cell or 0).
    """
    values = np.asarray(ds[name].values, dtype=np.float64)
    shift = 0.0
    if values.size > 1 and _periodic_nodes(ds, name):
        shift = 0.5 * float(values[1] - values[0])
    return (values + shift).astype(np.float32), shift


def _periodic_nodes(ds: xr.Dataset, name: str) -> bool:
    """Whether axis ``name`` holds a periodic PDE's nodes ``i dx``, as the store says.

    The generate stage records on each space coordinate where its values sit
    (``grid_points``); stores without it (user simulators' older stores) stay as they are.
    """
    if str(ds.attrs["pde"]) in NODE_BOUND:
        return False
    return ds[name].attrs.get("grid_points") == "periodic nodes"


def _write_space_coord(h5, path: str, coord: tuple[np.ndarray, float]) -> None:
    values, shift = coord
    h5.create_dataset(path, data=values).attrs["pdeflow_shift"] = shift


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


def _split_codes(ds: xr.Dataset, rows: np.ndarray) -> tuple[np.ndarray, list[int], str] | None:
    """Each exported sample's split code, the codes and their names; None without splits."""
    if "split" not in ds.coords or "flag_meanings" not in ds["split"].attrs:
        return None
    meanings = str(ds["split"].attrs["flag_meanings"])
    codes = [int(c) for c in ds["split"].attrs.get("flag_values", range(len(meanings.split())))]
    return np.asarray(ds["split"].values)[rows].astype(np.int8), codes, meanings


def _split_names(ds: xr.Dataset, rows: np.ndarray) -> list[str] | None:
    found = _split_codes(ds, rows)
    if found is None:
        return None
    labels, codes, meanings = found
    name = dict(zip(codes, meanings.split(), strict=True))
    return [name[int(c)] for c in labels]


def _compact(values: np.ndarray) -> Any:
    """One value where every sample has the same (as PDEBench's files hold), else the array."""
    return values[0] if np.all(values == values[0]) else values


def _coefficients(ds: xr.Dataset, rows: np.ndarray) -> dict[str, Any]:
    """pdeflow's sampled parameters ((N,) arrays) and constants, under pdeflow's names."""
    values: dict[str, Any] = dict(ds.attrs.get("constants") or {})
    values.update(_param_values(ds, rows))  # a sampled value wins over a constant's
    return values


def _as_pdebench(pde: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` renamed and rescaled to PDEBench's attributes where PDEBench has the PDE."""
    names = PDEBENCH_NAMES.get(pde, {})
    out = {}
    for name, value in values.items():
        target, factor = names.get(name, (name, None))
        out[target] = value if factor is None else np.asarray(value, dtype=np.float64) * factor
    return out


def _pdeflow_json(ds: xr.Dataset, rows: np.ndarray) -> str:
    def plain(value: Any) -> Any:
        return np.asarray(_compact(np.atleast_1d(value))).tolist()

    conversions = {
        name: f"{target} = {factor:.17g} * {name}" if factor != 1.0 else f"{target} = {name}"
        for name, (target, factor) in PDEBENCH_NAMES.get(str(ds.attrs["pde"]), {}).items()
    }
    return json.dumps(
        {
            "parameters": {k: plain(v) for k, v in _param_values(ds, rows).items()},
            "constants": dict(ds.attrs.get("constants") or {}),
            "pdebench_attributes": conversions,
        }
    )


def _file_attrs(
    ds: xr.Dataset,
    store: str | Path,
    split: str | None,
    fields: list[str],
    rows: np.ndarray,
    layout: str,
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "pde": str(ds.attrs["pde"]),
        "fields": list(fields),
        "stationary": bool(ds.attrs["stationary"]),
        "split": split or "all",
        # The name only: an absolute path would leak the local file system into shared files.
        "source": Path(store).resolve().name,
        "sample": _sample_ids(ds, rows),
        "pdeflow_parameters": _pdeflow_json(ds, rows),
    }
    if "seed" in ds.coords:
        attrs["seed"] = np.asarray(ds["seed"].values)[rows]
    coefficients = _as_pdebench(attrs["pde"], _coefficients(ds, rows))
    for name, values in coefficients.items():
        attrs.setdefault(name, _compact(np.atleast_1d(values)))
    found = _split_codes(ds, rows)
    if layout == "2d" and found is not None:  # no top-level datasets there (module docstring)
        attrs["sample_split"], attrs["split_flag_values"], attrs["split_flag_meanings"] = found
    return attrs


def _write_split(h5, ds: xr.Dataset, rows: np.ndarray) -> None:
    found = _split_codes(ds, rows)
    if found is not None:
        labels, codes, meanings = found
        dset = h5.create_dataset("split", data=labels)
        dset.attrs["flag_values"] = np.asarray(codes, dtype=np.int8)
        dset.attrs["flag_meanings"] = meanings


def _write_1d(h5, ds: xr.Dataset, fields: list[str], rows: np.ndarray) -> None:
    n, t, x = len(rows), ds.sizes["time"], ds.sizes["x"]
    names = ["tensor"] if len(fields) == 1 else fields
    out = [h5.create_dataset(name, shape=(n, t, x), dtype="float32") for name in names]
    for pos, values in iter_blocks(ds, fields, rows):
        for c, dset in enumerate(out):
            dset[pos[0] : pos[-1] + 1] = values[:, :, c]
    _write_space_coord(h5, "x-coordinate", _space_coord(ds, "x"))
    h5.create_dataset("t-coordinate", data=_t_coordinate(np.asarray(ds["time"].values, float)))
    _write_split(h5, ds, rows)


def _write_2d(h5, ds: xr.Dataset, fields: list[str], rows: np.ndarray) -> None:
    width = max(4, len(str(len(rows) - 1)))
    x, y, t = _space_coord(ds, "x"), _space_coord(ds, "y"), _coord(ds, "time")
    ids, splits = _sample_ids(ds, rows), _split_names(ds, rows)
    params = _as_pdebench(str(ds.attrs["pde"]), _param_values(ds, rows))
    seeds = np.asarray(ds["seed"].values)[rows] if "seed" in ds.coords else None
    for pos, values in iter_blocks(ds, fields, rows):
        for i, sample in zip(pos, values, strict=True):
            group = h5.create_group(f"{i:0{width}d}")
            group.create_dataset("data", data=np.moveaxis(sample, 1, -1))  # (T, X, Y, C)
            _write_space_coord(group, "grid/x", x)
            _write_space_coord(group, "grid/y", y)
            group.create_dataset("grid/t", data=t)
            group.attrs["sample"] = ids[i]
            if seeds is not None:
                group.attrs["seed"] = seeds[i]
            if splits is not None:
                group.attrs["split"] = splits[i]
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
    _write_space_coord(h5, "x-coordinate", _space_coord(ds, "x"))
    _write_space_coord(h5, "y-coordinate", _space_coord(ds, "y"))
    _write_split(h5, ds, rows)


WRITERS = {"1d": _write_1d, "2d": _write_2d, "darcy": _write_darcy}
