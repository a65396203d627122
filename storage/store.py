"""The run store: one directory per run, a Zarr hierarchy plus small JSON records.

Layout of ``<runs dir>/<store>/``::

    zarr.json, u/, sample/, ...   the generated dataset (root group; ``xarray.open_zarr(path)``)
    manifest/complete, seconds    one chunk per block: which blocks are durably written
    reduce/, quantify/            later stages' datasets (``xarray.open_zarr(path, group=...)``)
    _pdeflow/stages/<stage>.json  per-stage record: config, content hash, status, metrics
    _pdeflow/checkpoints/         training checkpoints (torch, loaded with weights_only=True)

A stage record is written ``running`` before the stage computes and ``complete`` after its outputs
are durable, so a half-finished stage can never be mistaken for a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import zarr
from pdeflow.storage.manifest import BlockManifest

STAGE_ORDER = ("generate", "train", "reduce", "quantify")
RUNS_DIR_ENV = "PDEFLOW_RUNS_DIR"


class StoreError(RuntimeError):
    """The store cannot be used as asked; the message says why and what to do."""


class ConfigMismatch(StoreError):
    """The store holds results of a different configuration."""


def runs_dir() -> Path:
    """The directory every store lives under: ``$PDEFLOW_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get(RUNS_DIR_ENV, "runs")).resolve()


def resolve_store(name: str) -> Path:
    """Absolute path of store ``name``; refuses any path that escapes the runs directory."""
    root = runs_dir()
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        raise StoreError(f"store {name!r} resolves outside the runs directory {root}")
    return path


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


class RunStore:
    """Handle on one run directory. Cheap to construct; touches the disk only when asked."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def named(cls, name: str) -> RunStore:
        return cls(resolve_store(name))

    @property
    def meta_dir(self) -> Path:
        return self.path / "_pdeflow"

    @property
    def checkpoint_dir(self) -> Path:
        return self.meta_dir / "checkpoints"

    def exists(self) -> bool:
        return (self.path / "zarr.json").is_file() or self.meta_dir.is_dir()

    def identity(self) -> str:
        """A random id made when the store is first used; a wiped store gets a new one."""
        path = self.meta_dir / "identity.json"
        if not path.is_file():
            write_json_atomic(path, {"id": uuid.uuid4().hex})
        return json.loads(path.read_text())["id"]

    # -- stage records -------------------------------------------------------------------------
    def record(self, stage: str) -> dict | None:
        path = self.meta_dir / "stages" / f"{stage}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_record(self, stage: str, record: dict) -> None:
        write_json_atomic(self.meta_dir / "stages" / f"{stage}.json", record)

    def is_complete(self, stage: str, config_hash: str) -> bool:
        rec = self.record(stage)
        return bool(rec and rec["status"] == "complete" and rec["hash"] == config_hash)

    def check_config(self, stage: str, config: dict, config_hash: str, overwrite: bool) -> None:
        """Refuse a store that holds ``stage`` results of another config, unless overwriting.

        With ``overwrite`` the stage's outputs and every later stage's are removed (for
        ``generate``, the whole store).
        """
        rec = self.record(stage)
        if rec is None or rec["hash"] == config_hash:
            return
        if not overwrite:
            changes = _diff(rec.get("config", {}), config) or ["(upstream stage changed)"]
            raise ConfigMismatch(
                f"store {self.path} holds {stage} results of a different config:\n  "
                + "\n  ".join(changes[:12])
                + "\nUse another store name, or --overwrite to replace them."
            )
        self.clear_from(stage)

    def clear_from(self, stage: str) -> None:
        """Remove ``stage`` and every later stage's outputs and records."""
        if stage == "generate":
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for later in STAGE_ORDER[STAGE_ORDER.index(stage) :]:
            (self.meta_dir / "stages" / f"{later}.json").unlink(missing_ok=True)
            shutil.rmtree(self.path / later, ignore_errors=True)
            if later == "train":
                shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        self.consolidate()

    def start_stage(self, stage: str, config: dict, config_hash: str) -> None:
        rec = self.record(stage) or {}
        self.write_record(
            stage, {**rec, "status": "running", "hash": config_hash, "config": config}
        )

    def finish_stage(self, stage: str, config_hash: str, metrics: dict, **extra: Any) -> dict:
        rec = self.record(stage) or {}
        rec.update(status="complete", hash=config_hash, metrics=metrics, **extra)
        self.consolidate()
        self.write_record(stage, rec)
        return rec

    # -- zarr ----------------------------------------------------------------------------------
    def consolidate(self) -> None:
        """Consolidate Zarr metadata so ``xarray.open_zarr`` opens the store in one read."""
        if not (self.path / "zarr.json").is_file():
            return
        with warnings.catch_warnings():
            # Consolidated metadata is zarr-python's v3 extension, read by xarray; it warns so.
            warnings.filterwarnings("ignore", message=r"Consolidated metadata is currently not")
            zarr.consolidate_metadata(str(self.path))

    def summary(self) -> dict:
        """What the store holds: stages with status and metrics, and generation blocks."""
        stages, metrics = {}, {}
        for stage in STAGE_ORDER:
            rec = self.record(stage)
            stages[stage] = {"status": rec["status"] if rec else "missing"}
            if rec:
                stages[stage]["hash"] = rec.get("hash")
                for key, value in (rec.get("metrics") or {}).items():
                    metrics[f"{stage}.{key}"] = value
        manifest = BlockManifest(self.path)
        blocks = {"total": manifest.n_blocks, "complete": manifest.n_complete()}
        return {"store": str(self.path), "stages": stages, "blocks": blocks, "metrics": metrics}
