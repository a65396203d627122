"""What a store holds, stage by stage: for the report and flow summaries."""

from __future__ import annotations

from pdeflow.storage import RunStore
from pdeflow.storage.records import summarize
from pdeflow.tasks.stages.registry import STAGES


def summary(store: RunStore) -> dict:
    """``storage.records.summarize`` over the pipeline's stages (see there for the keys)."""
    return summarize(store, STAGES, optional=("infer",))
