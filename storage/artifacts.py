"""A stage's own files in the store: groups, models, checkpoints, logs, plots, scratch.

``StageFiles`` is the part of ``RunStore`` that serves them; every path stays inside the store,
and every file a record vouches for is checked (size and CRC32) before it is used.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pdeflow.storage import groups
from pdeflow.storage.checkpoints import (
    list_checkpoints,
    load_latest,
    load_torch,
    save_checkpoint,
    save_torch,
)
from pdeflow.storage.errors import StoreDamaged
from pdeflow.storage.fsio import FileEntry, check_file, read_json, write_durable, write_json
from pdeflow.storage.records import StageRecord

META = "_pdeflow"


def remove(path: Path) -> None:
    """Remove a file or a directory tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class StageFiles:
    """The methods of ``RunStore`` for a stage's own files (see the module docstring)."""

    path: Path

    def artifact_problems(self, record: StageRecord, deep: bool = True) -> list[str]:
        out = []
        for rel, entry in record.artifact_entries().items():
            problem = check_file(self.path / rel, entry, deep=deep)
            if problem:
                out.append(f"{rel}: {problem}")
        return out

    def write_group(
        self, name: str, variables: dict, coords: dict | None = None, attrs: dict | None = None
    ) -> dict[str, FileEntry]:
        """Write a stage's arrays as Zarr group ``name`` (``xarray.open_zarr(path, group=)``).

        Args:
            variables: name -> ``(dims, array)`` or ``(dims, array, attrs)``.
            coords: name -> values or ``(dims, values)``.
            attrs: the group's attributes.
        """
        self._require_lock()
        entries = groups.write_group(self.path, name, variables, coords, attrs)
        self.consolidate()
        return entries

    def read_group(self, name: str, expected: dict[str, FileEntry] | None = None):
        """Group ``name`` in memory, after checking its files against ``expected``."""
        for rel, entry in (expected or {}).items():
            problem = check_file(self.path / rel, entry)
            if problem:
                raise StoreDamaged(f"{rel}: {problem}")
        return groups.read_group(self.path, name)

    def save_model(self, stage: str, name: str, state) -> tuple[str, FileEntry]:
        """Save a torch object as ``name`` among the stage's files; (relative path, entry)."""
        self._require_lock()
        path = self.work_dir(stage) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path.relative_to(self.path)), save_torch(path, state)

    def load_model(self, rel: str, entry: FileEntry):
        """A torch object saved by ``save_model``, checked first (``weights_only=True``)."""
        try:
            return load_torch(self.path / rel, entry)
        except ValueError as err:
            raise StoreDamaged(str(err)) from None

    def save_checkpoint(self, stage: str, step: int, state: dict) -> None:
        self._require_lock()
        save_checkpoint(self.work_dir(stage) / "checkpoints", step, state, keep=2)

    def load_checkpoint(self, stage: str) -> tuple[dict | None, list[str]]:
        """The newest intact checkpoint of ``stage`` and warnings about damaged newer ones."""
        return load_latest(self.work_dir(stage) / "checkpoints")

    def clear_checkpoints(self, stage: str) -> None:
        self._require_lock()
        remove(self.work_dir(stage) / "checkpoints")

    # -- training units: one directory each, written by the Dask worker that trains it -------
    # Workers write these under the lock of the run that sent them (as they write blocks), so
    # none of these methods asks for the lock in the worker's own process.
    def unit_dir(self, stage: str, unit: str) -> Path:
        if not unit or "/" in unit or unit.startswith("."):
            raise ValueError(f"unit name {unit!r} must be a plain file name")
        return self.work_dir(stage) / "units" / unit

    def save_unit_checkpoint(self, stage: str, unit: str, epoch: int, state: dict) -> None:
        save_checkpoint(self.unit_dir(stage, unit) / "checkpoints", epoch, state, keep=2)

    def load_unit_checkpoint(self, stage: str, unit: str) -> tuple[dict | None, list[str]]:
        """The unit's newest intact checkpoint and warnings about damaged newer ones."""
        return load_latest(self.unit_dir(stage, unit) / "checkpoints")

    def unit_epochs_done(self, stage: str, unit: str) -> int:
        """The newest checkpoint's epoch by its name, without loading it (for progress)."""
        found = list_checkpoints(self.unit_dir(stage, unit) / "checkpoints")
        return int(found[-1].stem.split("-")[1]) if found else 0

    def save_unit_result(
        self, stage: str, unit: str, model_state, result: dict, predictions=None
    ) -> dict:
        """Write the unit's final model (and ``predictions``, a dict of tensors, when given),
        then its result, which names their sizes and CRC32s, last: a unit is finished exactly
        when its result exists and every file it names matches."""
        directory = self.unit_dir(stage, unit)
        directory.mkdir(parents=True, exist_ok=True)
        files = {"model": model_state}
        if predictions is not None:
            files["predictions"] = predictions
        for key, obj in files.items():
            entry = save_torch(directory / f"{key}.pt", obj)
            result = {
                **result,
                key: str((directory / f"{key}.pt").relative_to(self.path)),
                f"{key}_entry": [entry.size, entry.crc32],
            }
        write_json(directory / "result.json", result)
        return result

    def unit_result(self, stage: str, unit: str, config_hash: str) -> dict | None:
        """The finished unit's result for ``config_hash``; None when absent, of another
        config, or when a file it names is missing or differs from what it names."""
        directory = self.unit_dir(stage, unit)
        try:
            result = read_json(directory / "result.json")
        except ValueError:
            return None
        if not result or result.get("config_hash") != config_hash:
            return None
        for key in ("model", "predictions"):
            if key in result and check_file(
                self.path / result[key], FileEntry(*result[f"{key}_entry"])
            ):
                return None
        return result

    def has_unit_result(self, stage: str, unit: str) -> bool:
        """Whether a result file exists, of any config, intact or not."""
        return (self.unit_dir(stage, unit) / "result.json").exists()

    def reset_unit(self, stage: str, unit: str) -> None:
        """Forget a unit's checkpoints, model and result (of another config); its log, which
        keeps every attempt, and its plan (a sweep trial's settings) stay."""
        self._require_lock()
        directory = self.unit_dir(stage, unit)
        for name in ("result.json", "model.pt", "predictions.pt", "checkpoints"):
            remove(directory / name)

    def clear_units(self, stage: str) -> None:
        self._require_lock()
        remove(self.work_dir(stage) / "units")

    def log(self, stage: str, name: str):
        """An append-only JSON-lines log among the stage's files (``storage.log.EventLog``)."""
        from pdeflow.storage.log import EventLog

        return EventLog(self.work_dir(stage) / name)

    def plot_file(self, name: str) -> str:
        """Where report plot ``name`` lives, relative to the store."""
        return f"{META}/plots/{name}.png"

    def write_plot(self, name: str, png: bytes) -> str:
        """Save a PNG report plot; returns its path relative to the store."""
        path = self.path / self.plot_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durable(path, png)
        return self.plot_file(name)

    def plots(self) -> dict[str, bytes]:
        """The report plots by name, in name order."""
        folder = self.meta / "plots"
        found = sorted(folder.glob("*.png")) if folder.is_dir() else []
        return {p.stem: p.read_bytes() for p in found}

    @contextmanager
    def scratch_dir(self, what: str) -> Iterator[Path]:
        """A scratch directory for ``what`` inside the store: removed afterwards when empty, and
        with whatever a killed run left in it when the next run starts (``RunStore.sweep``)."""
        path = self.scratch / what
        path.mkdir(parents=True, exist_ok=True)
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):  # not empty: a failed sample's files kept
                path.rmdir()
