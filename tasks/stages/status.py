"""What a store holds, stage by stage: for ``pdeflow show``, the report and flow summaries."""

from __future__ import annotations

from pdeflow.storage import RunStore
from pdeflow.tasks.stages.registry import STAGES


def summary(store: RunStore) -> dict:
    """Stages (status, config hash, start, end, seconds), generation blocks, metrics.

    Returns:
        ``{"store": path, "stages": {name: {...}}, "blocks": {"complete", "total"}, "metrics":
        {"<stage>.<metric>": value}}``. Blocks count manifest entries of the current dataset;
        ``pdeflow verify`` checks their bytes.
    """
    stages, metrics = {}, {}
    for name in STAGES:
        rec = store.record(name)
        if rec is None:
            stages[name] = {"status": "missing"}
            continue
        stages[name] = {
            "status": rec.status,
            "hash": rec.config_hash,
            "started": rec.started.isoformat() if rec.started else None,
            "finished": rec.finished.isoformat() if rec.finished else None,
            "seconds": rec.seconds,
        }
        if rec.error:
            stages[name]["error"] = rec.error
        for key, value in rec.metrics.items():
            metrics[f"{name}.{key}"] = value
    layout = store.layout()
    total = layout.n_blocks if layout else 0
    blocks = {"total": total, "complete": len(store.complete_blocks(layout)) if layout else 0}
    return {"store": str(store.path), "stages": stages, "blocks": blocks, "metrics": metrics}
