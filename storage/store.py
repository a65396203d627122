"""The run store: one directory per run, the only door to its bytes.

Layout of ``<runs dir>/<store>/``::

    zarr.json, u/, sample/, ...     the generated dataset (root group; ``xarray.open_zarr(path)``)
    reduce/, quantify/              later stages' groups (``xarray.open_zarr(path, group=...)``)
    _pdeflow/lock                   the store's lock (``storage.lock``), never deleted
    _pdeflow/store.json             the state marker: dataset layout and template checksums
    _pdeflow/manifest/              one entry per complete block (``storage.manifest``)
    _pdeflow/stages/<stage>.json    one record per stage (``storage.records``)
    _pdeflow/work/<stage>/          a stage's private files (checkpoints, model, logs)
    _pdeflow/plots/                 report plots
    _pdeflow/tmp/                   scratch (template builds, simulator sample directories)

The marker is written ``building`` before the template and ``ready`` only after it, with the
size and CRC32 of every template file: a kill at any instant leaves a store that the next run
recognises as unfinished. Stores may not nest: a store inside another store's directory would
share (and, overwritten, delete) its files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from pdeflow.storage import dataset as data
from pdeflow.storage import groups, lock
from pdeflow.storage.artifacts import META, StageFiles
from pdeflow.storage.artifacts import remove as _remove
from pdeflow.storage.errors import StoreDamaged, StoreError, StoreNested
from pdeflow.storage.fsio import (
    FileEntry,
    check_file,
    iter_files,
    read_json,
    sweep_temp,
    write_json,
)
from pdeflow.storage.manifest import BlockEntry, BlockManifest
from pdeflow.storage.records import StageRecord

RUNS_DIR_ENV = "PDEFLOW_RUNS_DIR"

MARKER_FORMAT = 1


def runs_dir() -> Path:
    """The directory every store lives under: ``$PDEFLOW_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get(RUNS_DIR_ENV, "runs")).resolve()


def resolve_store(name: str) -> Path:
    """Absolute path of store ``name``; refuses any path that escapes the runs directory."""
    root = runs_dir()
    path = (root / name).resolve()
    if path == root or root not in path.parents:
        raise StoreError(f"store {name!r} resolves outside the runs directory {root}")
    return path


def is_store_dir(path: Path) -> bool:
    return (path / META).is_dir()


def _is_array_dir(path: Path) -> bool:
    try:
        return b'"node_type": "array"' in (path / "zarr.json").read_bytes()
    except OSError:
        return False


def check_nesting(path: Path, root: Path, name: str) -> None:
    """Refuse a store that lies inside another store, or whose directory holds one.

    Raises:
        StoreNested: naming both stores.
    """
    inside = [p for p in path.parents if root in p.parents]
    for parent in reversed(inside):  # outermost first: name the store, not one of its arrays
        if is_store_dir(parent) or (parent / "zarr.json").is_file():
            raise StoreNested(
                f"store {name!r} would lie inside store {str(parent.relative_to(root))!r}, "
                "whose files it would share (and delete with --overwrite); use another name"
            )
    stack = [path] if path.is_dir() else []
    while stack:
        for entry in os.scandir(stack.pop()):
            sub = Path(entry.path)
            if not entry.is_dir(follow_symlinks=False) or sub == path / META:
                continue
            if is_store_dir(sub):
                raise StoreNested(
                    f"store {name!r} would contain store {str(sub.relative_to(root))!r}; "
                    "use another name"
                )
            if not _is_array_dir(sub):  # arrays hold chunks, never stores
                stack.append(sub)


class RunStore(StageFiles):
    """Handle on one run directory. Cheap to construct; touches the disk only when asked."""

    def __init__(self, path: str | Path, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.name

    @classmethod
    def named(cls, name: str) -> RunStore:
        """The store ``name`` under the runs directory, refusing nested store names."""
        path = resolve_store(name)
        check_nesting(path, runs_dir(), name)
        return cls(path, name)

    # -- places ----------------------------------------------------------------------------
    @property
    def meta(self) -> Path:
        return self.path / META

    @property
    def scratch(self) -> Path:
        """A directory for temporary work inside the store, emptied when a run starts."""
        return self.meta / "tmp"

    def work_dir(self, stage: str) -> Path:
        return self.meta / "work" / stage

    @property
    def manifest(self) -> BlockManifest:
        return BlockManifest(self.meta / "manifest")

    def exists(self) -> bool:
        return (self.meta / "store.json").is_file() or (self.meta / "stages").is_dir()

    # -- the lock and cleaning up after killed runs ------------------------------------------
    def lock(self, what: str = "a run"):
        """Hold the store's lock (re-entrant in one process). Raises ``StoreBusy``."""
        return lock.hold(self.meta / "lock", self.name, what)

    def holds_lock(self) -> bool:
        return lock.held(self.meta / "lock")

    def _require_lock(self) -> None:
        if not self.holds_lock():
            raise RuntimeError(f"store {self.name!r}: this change needs the store's lock")

    def sweep(self) -> int:
        """Remove what killed runs left: temporary files and the scratch directory."""
        self._require_lock()
        removed = len(sweep_temp(self.path)) if self.path.is_dir() else 0
        if self.scratch.is_dir():
            removed += sum(1 for _ in iter_files(self.scratch))
            shutil.rmtree(self.scratch, ignore_errors=True)
        return removed

    def wipe(self) -> None:
        """Remove everything that belongs to the store (the lock file stays)."""
        self._require_lock()
        if not self.path.is_dir():
            return
        for entry in os.scandir(self.path):
            if entry.name != META:
                _remove(Path(entry.path))
        for entry in os.scandir(self.meta):
            if entry.name != "lock":
                _remove(Path(entry.path))

    def clear_stage(self, stage: str) -> None:
        """Remove a stage's record, group, private files and the report plots."""
        self._require_lock()
        (self.meta / "stages" / f"{stage}.json").unlink(missing_ok=True)
        for path in (self.path / stage, self.work_dir(stage), self.meta / "plots"):
            _remove(path)
        if (self.path / "zarr.json").is_file():
            self.consolidate()

    # -- the state marker and the template ---------------------------------------------------
    def marker(self) -> dict | None:
        try:
            return read_json(self.meta / "store.json")
        except ValueError:
            return {"state": "damaged"}

    def layout(self) -> data.Layout | None:
        """The dataset's layout once its template is complete, else None."""
        marker = self.marker()
        if not marker or marker.get("state") != "ready":
            return None
        return data.Layout.model_validate(marker["layout"])

    def write_template(self, template: data.Template) -> None:
        """Create or rebuild the dataset template for ``template.layout``; keeps written blocks.

        The marker says ``building`` until every template file is durable, then ``ready``.
        """
        self._require_lock()
        layout = template.layout.model_dump(mode="json")
        self._write_marker({"state": "building", "layout": layout})
        self.scratch.mkdir(parents=True, exist_ok=True)
        entries = data.build_template(self.path, template, self.scratch)
        entries["zarr.json"] = groups.consolidate(self.path)
        self._write_marker({"state": "ready", "layout": layout, "template": _json(entries)})

    def _write_marker(self, marker: dict) -> None:
        write_json(self.meta / "store.json", {"format": MARKER_FORMAT, **marker})

    def consolidate(self) -> None:
        """Re-consolidate the metadata (after a group changed) and re-record its checksum."""
        self._require_lock()
        entry = groups.consolidate(self.path)
        marker = self.marker()
        if marker and marker.get("state") == "ready":
            marker["template"]["zarr.json"] = list(entry)
            self._write_marker({k: v for k, v in marker.items() if k != "format"})

    def template_problems(self, deep: bool = True) -> list[str]:
        """Template files that are missing or differ from the marker (empty: all intact)."""
        marker = self.marker()
        if not marker or marker.get("state") != "ready":
            state = (marker or {}).get("state", "missing")
            return [f"the dataset template is not complete (state: {state})"]
        out = []
        for rel, value in marker["template"].items():
            problem = check_file(self.path / rel, FileEntry.from_json(value), deep=deep)
            if problem:
                out.append(f"template file {rel}: {problem}")
        return out

    def update_attrs(self, attrs: dict) -> None:
        """Set dataset attributes (statistics, a new dataset card)."""
        self._require_lock()
        groups.update_attrs(self.path, attrs)
        self.consolidate()

    def attrs(self) -> dict:
        """The dataset's attributes, decoded (``storage.groups.decode_attrs``)."""
        return groups.read_attrs(self.path)

    # -- blocks --------------------------------------------------------------------------------
    def complete_blocks(self, layout: data.Layout | None = None) -> dict[int, BlockEntry]:
        """Manifest entries that belong to the current dataset (key and sample range match).

        An entry of another config (a killed old run's worker), of a block beyond
        ``n_samples`` or of a block whose range has since grown is not complete.
        """
        layout = layout or self.layout()
        if layout is None:
            return {}
        out = {}
        for block, entry in self.manifest.entries().items():
            if block < layout.n_blocks and entry.key == layout.key:
                if (entry.start, entry.stop) == layout.block_range(block):
                    out[block] = entry
        return out

    def complete_block(self, block: int, layout: data.Layout | None) -> BlockEntry | None:
        """Block ``block``'s entry when it belongs to the current dataset (one file read)."""
        entry = self.manifest.read(block)
        if layout is None or entry is None or entry.key != layout.key:
            return None
        if block >= layout.n_blocks or (entry.start, entry.stop) != layout.block_range(block):
            return None
        return entry

    def write_block(self, block: int, values: np.ndarray, seconds: float) -> BlockEntry:
        """Write block ``block`` durably, then mark it complete in the manifest.

        Called by the workers that solve blocks, under the lock of the run that sent them.
        """
        layout = self.layout()
        if layout is None:
            raise StoreError(f"store {self.name!r} has no complete dataset template")
        self.manifest.dir.mkdir(parents=True, exist_ok=True)
        return data.write_block(
            self.path, layout, block, values, seconds, self.manifest.path(block)
        )

    def reopen_blocks(self, blocks) -> None:
        """Mark blocks incomplete: the next generate run recomputes them."""
        for block in blocks:
            self.manifest.remove(int(block))

    def verify(self, deep: bool = True, threads: int = 4) -> dict[int, str]:
        """The complete blocks whose chunk files are missing, of the wrong size or (``deep``)
        of the wrong CRC32, streamed in ``threads`` threads: block -> the first problem."""
        return self.block_problems(self.complete_blocks(), deep=deep, threads=threads)

    def block_problems(self, entries: dict[int, BlockEntry], deep: bool = True, threads: int = 4):
        """Blocks whose files are missing or differ from their entry: block -> reason."""
        from pdeflow.storage.verify import check_blocks

        return check_blocks(self.path, entries, deep=deep, threads=threads)

    # -- reads -----------------------------------------------------------------------------------
    def _readable(self) -> tuple[data.Layout, dict[int, BlockEntry]]:
        layout = self.layout()
        if layout is None:
            raise StoreDamaged(f"store {self.name!r} has no complete dataset")
        return layout, self.complete_blocks(layout)

    def iter_chunks(self, indices, field: str | None = None, order=None):
        """Checked rows of ``indices``, chunk by chunk (``storage.dataset.iter_chunks``)."""
        layout, entries = self._readable()
        return data.iter_chunks(self.path, layout, entries, indices, field=field, order=order)

    def read_samples(self, indices, field: str | None = None) -> np.ndarray:
        """Trajectories ``(n, time, channel, *space)`` of the sorted ``indices``, checked."""
        parts = [v for _, v in self.iter_chunks(np.sort(np.asarray(indices)), field=field)]
        return np.concatenate(parts, axis=0)

    def n_chunks_of(self, indices) -> int:
        layout = self.layout()
        return len(np.unique(np.asarray(indices) // layout.chunk_size))

    def dask_trajectories(self, indices):
        """Lazy ``(n, time, channel, *space)`` Dask array of ``indices``; chunks checked on read."""
        from pdeflow.storage.verify import dask_rows

        layout, entries = self._readable()
        return dask_rows(self.path, layout, entries, np.sort(np.asarray(indices)))

    def read_coords(self, names: list[str], start: int = 0, stop: int | None = None):
        """Sample-wise coordinates stacked as columns: shape (n, len(names))."""
        if not names:
            n = len(range(*slice(start, stop).indices(self._n_samples())))
            return np.empty((n, 0))
        return np.stack([groups.read_array(self.path, n, start, stop) for n in names], axis=1)

    def _n_samples(self) -> int:
        layout = self.layout()
        return 0 if layout is None else layout.n_samples

    def sample_indices(self, split: str) -> np.ndarray:
        """Sample indices of split ``split`` (a name in the ``split`` coordinate's meanings)."""
        meanings = groups.array_attrs(self.path, "split")["flag_meanings"].split()
        codes = groups.read_array(self.path, "split")
        return np.flatnonzero(codes == meanings.index(split))

    def open_dataset(self, group: str | None = None):
        """The dataset (or a stage's group), lazily, through xarray, ready for ``to_netcdf()``.

        Attributes are in the stored, netCDF-ready form (``storage.groups`` explains the
        ``_json`` names; ``decode_attrs`` parses them); a store written before that form had
        its attributes encoded as they are opened.
        """
        import xarray as xr

        with groups.quiet():
            ds = xr.open_zarr(str(self.path), group=group, consolidated=None)
        return groups.encode_dataset(ds)

    # -- records -----------------------------------------------------------------------------
    def record(self, stage: str) -> StageRecord | None:
        """The stage's record; None when absent or damaged (then the stage is not complete)."""
        try:
            raw = read_json(self.meta / "stages" / f"{stage}.json")
            return None if raw is None else StageRecord.model_validate(raw)
        except ValueError:
            return None

    def write_record(self, record: StageRecord) -> None:
        self._require_lock()
        write_json(self.meta / "stages" / f"{record.stage}.json", record.model_dump(mode="json"))


def _json(entries: dict[str, FileEntry]) -> dict[str, list[int]]:
    return {rel: list(entry) for rel, entry in sorted(entries.items())}
