"""Stage records: what a stage computed, from what, and whether it finished. One schema.

A record is written by the stage lifecycle alone (``pdeflow.tasks.stages.runner``): ``running``
before a stage computes, ``complete`` once its outputs are durable and checked, ``failed`` with
the reason when it stops on an error. ``upstream`` holds the digests of the upstream records it
was computed from (its lineage); a downstream stage whose upstream digest changed is stale.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pdeflow.storage.fsio import FileEntry

SCHEMA_VERSION = 2
Status = Literal["running", "complete", "failed"]


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class StageRecord(BaseModel):
    """The record of one stage in one store (``_pdeflow/stages/<stage>.json``)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(SCHEMA_VERSION, description="Record format version.")
    stage: str = Field(description="Stage name (generate, train, reduce, quantify).")
    config_hash: str = Field(description="Content hash of the config sections the stage uses.")
    config: dict[str, Any] = Field(description="Those config sections, as JSON.")
    upstream: dict[str, str] = Field(
        default_factory=dict, description="Digest of each upstream record it was computed from."
    )
    status: Status = Field(description="running, complete or failed.")
    started: datetime.datetime | None = Field(None, description="UTC start of the last attempt.")
    finished: datetime.datetime | None = Field(None, description="UTC end of the last attempt.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Scalar results.")
    artifacts: dict[str, tuple[int, int]] = Field(
        default_factory=dict,
        description="Files the stage owns, relative to the store, with (size, CRC32).",
    )
    outputs: str | None = Field(
        None, description="Digest of the stage's outputs (generate: of every block's chunks)."
    )
    error: str | None = Field(None, description="Why the last attempt failed.")
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="Stage-specific facts: training history, extensions, blocks computed.",
    )

    def artifact_entries(self) -> dict[str, FileEntry]:
        return {name: FileEntry(*value) for name, value in self.artifacts.items()}

    @property
    def seconds(self) -> float | None:
        """Wall time of the last attempt, in s, once it ended."""
        if self.started is None or self.finished is None:
            return None
        return (self.finished - self.started).total_seconds()

    def digest(self) -> str:
        """What downstream lineage refers to: config, lineage and outputs, not times or metrics.

        A stage recomputed to bitwise the same outputs keeps its digest, so nothing downstream
        is recomputed because of it.
        """
        payload = [self.stage, self.config_hash, self.upstream, self.outputs]
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def summarize(store, stages: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """What ``store`` (a ``RunStore``) holds, for ``pdeflow show``: stage by stage, with times.

    Reads records and the manifest only, so it needs none of the stages' modules (torch,
    Dask): ``pdeflow show`` starts fast.

    Args:
        store: the run store.
        stages: stage names in pipeline order.
        optional: stages among them listed only once they have a record (infer, which runs
            on its own: a pipeline store would otherwise show it missing).

    Returns:
        ``{"store": path, "stages": {name: {"status", "hash", "started", "finished",
        "seconds"[, "error"]}}, "blocks": {"complete", "total"}, "metrics": {"<stage>.<metric>":
        value}}``; ``started``/``finished`` are ISO 8601 UTC, ``seconds`` the last attempt's
        wall time (None while it runs). Blocks count manifest entries of the current dataset;
        ``pdeflow verify`` checks their bytes.
    """
    out, metrics = {}, {}
    for name in stages:
        rec = store.record(name)
        if rec is None:
            if name not in optional:
                out[name] = {"status": "missing"}
            continue
        out[name] = {
            "status": rec.status,
            "hash": rec.config_hash,
            "started": rec.started.isoformat() if rec.started else None,
            "finished": rec.finished.isoformat() if rec.finished else None,
            "seconds": rec.seconds,
        }
        if rec.error:
            out[name]["error"] = rec.error
        if "units" in rec.details:  # the train stage's units: where each ran, how long
            out[name]["units"] = rec.details["units"]
        for key, value in rec.metrics.items():
            metrics[f"{name}.{key}"] = value
    layout = store.layout()
    total = layout.n_blocks if layout else 0
    blocks = {"total": total, "complete": len(store.complete_blocks(layout)) if layout else 0}
    return {"store": str(store.path), "stages": out, "blocks": blocks, "metrics": metrics}
