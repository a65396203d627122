"""Export a run store's dataset to The Well's directory layout (PolymathicAI's ``the_well``).

The tree written to ``DIR``, whose name ``NAME`` is the Well's ``dataset_name`` (the Well names
a dataset's directory after it; ``WellDataset(path=DIR, well_split_name="train")`` reads it)::

    DIR/NAME.yaml                the train split's metadata, the fields of ``WellMetadata``
    DIR/stats.yaml               per field: mean, std (population), rms, and mean_delta,
                                 std_delta, rms_delta of one-frame changes, over the train
                                 split: what the Well's ZScore and RMS normalizations read
    DIR/data/train/NAME.hdf5     pdeflow's split ``train``; ``val`` goes to data/valid/,
                                 ``test`` to data/test/
    DIR/data/calibration/NAME.hdf5  pdeflow's ``calibration`` split (conformal prediction's
                                 held-out samples): a directory of its own, which the Well's
                                 data module (train, valid, test) never reads

Every split the store names gets its file, with ``n_trajectories`` 0 where it holds no sample;
``stats.yaml`` is left out when the train split is empty. Each file follows the Well's
``docs/data_format.md`` (trajectories in store order, ``n`` of them, ``T`` frames)::

    attrs        dataset_name, grid_type "cartesian", n_spatial_dims, n_trajectories,
                 simulation_parameters (every coefficient's name, sampled or constant), each
                 constant's value; pdeflow's: pde, split (pdeflow's name), source (the store's
                 name, never a local path), pdeflow_parameters (JSON: sampled, constants)
    dimensions/  attr spatial_dims ["x", ...]; time (T,), x (X,), ... float32 as stored (the
                 Well has no cell-centre convention to shift to), with their flags and the
                 store's ``grid_points`` note
    boundary_conditions/{axis}_{type}  per axis (e.g. ``x_periodic``): associated_dims [axis],
                 associated_fields [] (so no ``values``), bc_type PERIODIC, WALL or OPEN, not
                 sample or time varying; mask (X,) bool, True at the axis's two ends
    scalars/     one float32 dataset per coefficient, not time varying: a sampled one (n,)
                 with sample_varying True, a constant () with False
    t0_fields/   one float32 (n, T, X[, Y[, Z]]) dataset per field of the store, varying in
                 sample, time and every axis; t1_fields/ and t2_fields/ list none
    pdeflow/     sample (n,) and seed (n,): each trajectory's id and seed in the store;
                 parameters/NAME (n,) float64, the sampled coefficients exactly. The Well's
                 readers ignore this group.

Every field is a t0 (scalar) field: pdeflow stores each component of a vector (``hu``, ``hv``;
``u_x``, ``u_y``, ``u_z``) as a field of its own and marks none as a vector, so the Well's
tensor-aware augmentations (axis flips) leave their signs alone.

Boundary conditions are the PDE's (``WELL_BOUNDARIES``; tests check it against the PDE
catalog): periodic domains PERIODIC; Dirichlet, no-flux and reflecting walls WALL; compressible
Euler's ``outflow`` option (zero-gradient ghost cells) OPEN. A PDE outside pdeflow's registry
(a user simulator) gets no boundary group: the store does not say, and the Well's loader then
reads every side as open, its default. Stationary stores (Darcy, thermal blocks) are refused:
the Well holds trajectories and its loader needs two frames; ``--format pdebench`` takes them.

The export streams one stored chunk of samples at a time into all split files at once and
writes the tree into a hidden temporary directory beside ``DIR``, renamed to ``DIR`` only when
complete (an earlier export being replaced is moved aside first, removed after), so a failed
or interrupted export leaves nothing that looks finished. Files and directories get the
permissions the process umask gives new ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import yaml

from pdeflow.storage.export import (
    _param_values,
    _require_h5py,
    _sample_ids,
    _split_codes,
    _umask,
    iter_blocks,
    store_fields,
)
from pdeflow.storage.fsio import fsync_dir, fsync_file, temp_path
from pdeflow.storage.groups import decode_dataset

SPACE_DIMS = ("x", "y", "z")
# pdeflow's split names -> the Well's split directories; other names keep their own.
WELL_SPLITS = {"train": "train", "val": "valid", "test": "test", "calibration": "calibration"}
# Each registry PDE's boundary, in the Well's geometric terms (BoundaryCondition: WALL, OPEN,
# PERIODIC). Dirichlet u = 0, no-flux and reflecting walls close the domain: WALL.
PERIODIC_PDES = (
    "advection allen_cahn burgers fisher_kpp gray_scott_2d heat kdv kolmogorov_2d ks "
    "navier_stokes_2d navier_stokes_3d compressible_euler_1d"  # Euler: its default (below)
).split()
WALLED_PDES = "darcy_2d fitzhugh_nagumo_2d shallow_water_2d thermal_block_2x2 thermal_block_3x2"
WELL_BOUNDARIES = dict.fromkeys(PERIODIC_PDES, "PERIODIC") | dict.fromkeys(
    WALLED_PDES.split(), "WALL"
)
# The PDEs whose boundary generate.solver_options.boundary chooses, and its values.
BOUNDARY_OPTION = frozenset({"compressible_euler_1d"})
OPTION_BOUNDARIES = {"periodic": "PERIODIC", "outflow": "OPEN"}


def export_the_well(store: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write a run store's samples to a directory in The Well's layout (module docstring).

    Args:
        store: The run store directory (a Zarr v3 group readable by ``xarray.open_zarr``).
        out: The directory to write; its name becomes the Well's ``dataset_name`` and the
            name of every HDF5 file. Parent directories are created.
        overwrite: Replace an existing ``out`` that is empty or holds an earlier export of this
            layout (any other directory is refused). Defaults to False.

    Returns:
        The path of the written directory.

    Raises:
        ImportError: h5py is not installed.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        ValueError: The store lacks the attributes, splits or time-dependent layout this needs,
            ``out`` is a file or a directory this export did not write, or a sample holds
            non-finite values (an unfinished store).
    """
    h5py = _require_h5py()
    out = Path(os.path.abspath(out))
    ds = decode_dataset(xr.open_zarr(str(store), consolidated=None))  # either attrs form
    fields = _check_store(ds)
    labels, splits = _splits(ds)
    _check_replaceable(out, overwrite)
    name = out.name
    source = Path(store).resolve().name

    def write(tmp: Path) -> None:
        stats = _write_files(h5py, tmp, ds, fields, labels, splits, name, source)
        if stats is not None:
            _write_yaml(tmp / "stats.yaml", stats, sort_keys=True)
        n_train = int(np.sum(labels == splits.get("train", -1)))
        _write_yaml(tmp / f"{name}.yaml", _metadata(ds, fields, name, n_train), sort_keys=False)

    _write_tree_atomically(out, write)
    return out


def _check_store(ds: xr.Dataset) -> list[str]:
    """The store's fields, after checking its attributes and that it is time-dependent."""
    fields = store_fields(ds)
    dims = {ds[f].dims for f in fields}
    allowed = [("sample", "time", *SPACE_DIMS[:k]) for k in (1, 2, 3)]
    if len(dims) != 1 or next(iter(dims)) not in allowed:
        raise ValueError(
            f"every field must have dims {' or '.join(map(str, allowed))}, got "
            f"{ {f: ds[f].dims for f in fields} }"
        )
    if bool(ds.attrs["stationary"]):
        raise ValueError(
            "a stationary store has no trajectories: The Well's layout holds time-dependent "
            "data and its loader needs at least two frames; use --format pdebench"
        )
    return list(fields)


def _splits(ds: xr.Dataset) -> tuple[np.ndarray, dict[str, int]]:
    """Each sample's split code (N,) and the store's split names with their codes."""
    found = _split_codes(ds, np.arange(ds.sizes["sample"]))
    if found is None:
        raise ValueError(
            "store has no 'split' coordinate with flag_meanings: The Well's layout needs "
            "each sample's split (train, valid, test)"
        )
    labels, codes, meanings = found
    return labels, dict(zip(meanings.split(), codes, strict=True))


def _check_replaceable(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"out {out} is a file; The Well's layout is a directory")
    if not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    allowed, splits = {"data", "stats.yaml", f"{out.name}.yaml"}, set(WELL_SPLITS.values())
    data = out / "data"
    ours = {p.name for p in out.iterdir()} <= allowed and (
        not data.exists() or (data.is_dir() and {p.name for p in data.iterdir()} <= splits)
    )
    if not ours:
        raise ValueError(
            f"{out} holds files that an export in The Well's layout does not write; "
            "refusing to replace it: choose a new directory or remove it yourself"
        )


def _write_tree_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """Run ``write`` on a hidden temporary directory beside ``out``; rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    old = temp_path(out) if out.exists() else None
    try:
        write(tmp)
        # mkdtemp creates 0700; a finished export gets what mkdir would give a new directory.
        tmp.chmod(0o777 & ~_umask())
        for path in sorted(tmp.rglob("*"), reverse=True):
            (fsync_dir if path.is_dir() else fsync_file)(path)
        fsync_dir(tmp)
        if old is not None:
            os.replace(out, old)  # a non-empty directory cannot be renamed over
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out.exists():
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_files(
    h5py,
    root: Path,
    ds: xr.Dataset,
    fields: list[str],
    labels: np.ndarray,
    splits: dict[str, int],
    name: str,
    source: str,
) -> dict[str, dict[str, float]] | None:
    """Write one HDF5 file per split, streaming the store once; return the train statistics."""
    members = {split: np.flatnonzero(labels == code) for split, code in splits.items()}
    slot = np.zeros(labels.size, dtype=np.int64)  # each sample's row in its split's file
    for rows in members.values():
        slot[rows] = np.arange(rows.size)
    moments = _Moments(len(fields)), _Moments(len(fields))  # values, one-frame changes
    with ExitStack() as stack:
        files = {}
        for split, rows in members.items():
            folder = root / "data" / WELL_SPLITS.get(split, split)
            folder.mkdir(parents=True)
            files[split] = stack.enter_context(h5py.File(folder / f"{name}.hdf5", "w"))
            _write_skeleton(h5py, files[split], ds, fields, rows, split, name, source)
        for pos, values in iter_blocks(ds, fields, np.arange(labels.size)):
            for split, code in splits.items():
                take = labels[pos] == code
                if not take.any():
                    continue
                at = slot[pos[take]]  # consecutive: a split's rows ascend through the chunks
                block = values[take]
                for c, field in enumerate(fields):
                    files[split][f"t0_fields/{field}"][at[0] : at[-1] + 1] = block[:, :, c]
                if split == "train":
                    moments[0].add(block)
                    moments[1].add(np.diff(block.astype(np.float64), axis=1))
    if not members.get("train", np.empty(0)).size:
        return None
    return _stats(fields, *moments)


def _write_skeleton(
    h5py,
    h5,
    ds: xr.Dataset,
    fields: list[str],
    rows: np.ndarray,
    split: str,
    name: str,
    source: str,
) -> None:
    """Everything of one split's file but the field values, which stream in afterwards."""
    space = _space_dims(ds, fields)
    sampled, constants = _param_values(ds, rows), _constants(ds)
    constants = {k: v for k, v in constants.items() if k not in sampled}
    h5.attrs.update(
        {
            "dataset_name": name,
            "grid_type": "cartesian",
            "n_spatial_dims": len(space),
            "n_trajectories": rows.size,
            "simulation_parameters": _strings(h5py, [*sampled, *constants]),
            "pde": str(ds.attrs["pde"]),
            "split": split,
            "source": source,
            "pdeflow_parameters": json.dumps({"sampled": list(sampled), "constants": constants}),
        }
    )
    for key, value in constants.items():
        h5.attrs.setdefault(key, value)
    _write_dimensions(h5py, h5, ds, space)
    _write_boundaries(h5py, h5, ds, space)
    _write_scalars(h5py, h5, sampled, constants)
    shape = (rows.size, ds.sizes["time"], *(ds.sizes[d] for d in space))
    for order in range(3):
        group = h5.create_group(f"t{order}_fields")
        group.attrs["field_names"] = _strings(h5py, fields if order == 0 else [])
    for field in fields:
        dset = h5.create_dataset(f"t0_fields/{field}", shape=shape, dtype="float32")
        _flags(dset, sample=True, time=True)
        dset.attrs["dim_varying"] = np.ones(len(space), dtype=bool)
    own = h5.create_group("pdeflow")
    own.create_dataset("sample", data=_sample_ids(ds, rows))
    if "seed" in ds.coords:
        own.create_dataset("seed", data=np.asarray(ds["seed"].values)[rows])
    for key, values in sampled.items():
        own.create_dataset(f"parameters/{key}", data=np.asarray(values, dtype=np.float64))


def _write_dimensions(h5py, h5, ds: xr.Dataset, space: tuple[str, ...]) -> None:
    group = h5.create_group("dimensions")
    group.attrs["spatial_dims"] = _strings(h5py, space)
    time = group.create_dataset("time", data=np.asarray(ds["time"].values, dtype=np.float32))
    _flags(time, sample=False)
    for axis in space:
        dset = group.create_dataset(axis, data=np.asarray(ds[axis].values, dtype=np.float32))
        _flags(dset, sample=False, time=False)
        if "grid_points" in ds[axis].attrs:
            dset.attrs["grid_points"] = str(ds[axis].attrs["grid_points"])


def _write_boundaries(h5py, h5, ds: xr.Dataset, space: tuple[str, ...]) -> None:
    group = h5.create_group("boundary_conditions")
    kind = boundary_type(ds)
    if kind is None:
        return
    for axis in space:
        bc = group.create_group(f"{axis}_{kind.lower()}")
        bc.attrs["associated_dims"] = _strings(h5py, [axis])
        bc.attrs["associated_fields"] = _strings(h5py, [])
        bc.attrs["bc_type"] = kind
        _flags(bc, sample=False, time=False)
        mask = np.zeros(ds.sizes[axis], dtype=bool)
        mask[[0, -1]] = True  # the boundary lies at both ends of the axis
        bc.create_dataset("mask", data=mask)


def _write_scalars(h5py, h5, sampled: dict[str, np.ndarray], constants: dict[str, float]) -> None:
    group = h5.create_group("scalars")
    group.attrs["field_names"] = _strings(h5py, [*sampled, *constants])
    for key, values in sampled.items():
        dset = group.create_dataset(key, data=np.asarray(values, dtype=np.float32))
        _flags(dset, sample=True, time=False)
    for key, value in constants.items():
        dset = group.create_dataset(key, data=np.float32(value))
        _flags(dset, sample=False, time=False)


def boundary_type(ds: xr.Dataset) -> str | None:
    """The Well's ``bc_type`` of the store's PDE on every side; None for a PDE not in
    pdeflow's registry (a user simulator), whose boundaries the store does not state."""
    pde = str(ds.attrs["pde"])
    kind = WELL_BOUNDARIES.get(pde)
    options = dict(ds.attrs.get("config") or {}).get("solver_options") or {}
    if pde in BOUNDARY_OPTION and "boundary" in options:
        choice = str(options["boundary"])
        if choice not in OPTION_BOUNDARIES:
            raise ValueError(f"{pde}: solver_options.boundary {choice!r} has no Well encoding")
        kind = OPTION_BOUNDARIES[choice]
    return kind


def _constants(ds: xr.Dataset) -> dict[str, float]:
    return {k: float(v) for k, v in dict(ds.attrs.get("constants") or {}).items()}


def _space_dims(ds: xr.Dataset, fields: list[str]) -> tuple[str, ...]:
    return tuple(ds[fields[0]].dims[2:])


def _strings(h5py, values) -> np.ndarray:
    """A list of names as an HDF5 variable-length string array (also when empty)."""
    return np.array(list(values), dtype=h5py.string_dtype())


def _flags(obj, *, sample: bool, time: bool | None = None) -> None:
    obj.attrs["sample_varying"] = sample
    if time is not None:
        obj.attrs["time_varying"] = time


class _Moments:
    """Per-channel count, mean and summed squared deviations of streamed blocks, merged with
    Chan, Golub & LeVeque's (1979) pairwise update, so that no block is held twice."""

    def __init__(self, n_channels: int) -> None:
        self.n = 0
        self.mean = np.zeros(n_channels)
        self.m2 = np.zeros(n_channels)

    def add(self, values: np.ndarray) -> None:
        """Add a block of shape (m, T, C, *space); channel C is axis 2."""
        v = np.moveaxis(values, 2, 0).reshape(values.shape[2], -1).astype(np.float64)
        if v.shape[1] == 0:
            return
        n_b, mean_b = v.shape[1], v.mean(axis=1)
        m2_b = ((v - mean_b[:, None]) ** 2).sum(axis=1)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta**2 * self.n * n_b / n
        self.n = n

    def summary(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, population standard deviation, root mean square), each (C,)."""
        var = self.m2 / max(self.n, 1)
        return self.mean, np.sqrt(var), np.sqrt(var + self.mean**2)


def _stats(fields: list[str], values: _Moments, deltas: _Moments) -> dict[str, dict]:
    """The Well's ``stats.yaml``: {statistic: {field: value}}."""
    out: dict[str, dict] = {}
    for suffix, moments in (("", values), ("_delta", deltas)):
        for stat, per_field in zip(("mean", "std", "rms"), moments.summary(), strict=True):
            out[stat + suffix] = {f: float(v) for f, v in zip(fields, per_field, strict=True)}
    return out


def _metadata(ds: xr.Dataset, fields: list[str], name: str, n_train: int) -> dict[str, Any]:
    """The train split as the Well's ``WellMetadata`` describes it (its field names)."""
    space = _space_dims(ds, fields)
    sampled = [p for p in ds.attrs["parameters"] if p in ds.coords]
    kind = boundary_type(ds)
    return {
        "dataset_name": name,
        "n_spatial_dims": len(space),
        "spatial_resolution": [int(ds.sizes[d]) for d in space],
        "scalar_names": [],
        "constant_scalar_names": [*sampled, *(c for c in _constants(ds) if c not in sampled)],
        "field_names": {0: list(fields), 1: [], 2: []},
        "constant_field_names": {0: [], 1: [], 2: []},
        "boundary_condition_types": [] if kind is None else [kind],
        "n_files": 1,
        "n_trajectories_per_file": [n_train],
        "n_steps_per_trajectory": [int(ds.sizes["time"])],
        "grid_type": "cartesian",
    }


def _write_yaml(path: Path, payload: dict, *, sort_keys: bool) -> None:
    with open(path, "w") as fh:
        yaml.safe_dump(payload, fh, sort_keys=sort_keys)
