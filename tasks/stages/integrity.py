"""What each stage's complete record vouches for, checkable from the store alone.

Kept apart from the stage classes, which import torch, scikit-learn and Dask through their
science: ``pdeflow verify`` needs only these checks and the stage order, and importing the
stages cost it about 2 s of its start-up on 2 cores. The stage classes use the same checks.
"""

from __future__ import annotations

from pdeflow.storage import RunStore, StageRecord

#: Every stage in pipeline order, with the stages whose results it reads. The pipeline runs the
#: first four (``registry.pipeline_stages``); infer runs on its own, on a store they filled.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "generate": (),
    "train": ("generate",),
    "reduce": ("generate",),
    "quantify": ("train", "reduce"),
    "infer": ("generate", "reduce"),
}
STAGES: tuple[str, ...] = tuple(UPSTREAM)
MODEL = "model.pt"
# What the files of each later stage are called in messages.
_WHAT = {"reduce": "ROM's", "quantify": "UQ results'", "infer": "posterior's"}


def record_problems(store: RunStore, stage: str, record: StageRecord, deep: bool = True):
    """Why a later stage's complete record cannot be trusted (missing or damaged files)."""
    if stage == "train" and not any(rel.endswith(MODEL) for rel in record.artifacts):
        return [f"the record lists no {MODEL}"]
    if stage != "train" and not record.artifacts:
        return [f"the record lists none of the {_WHAT[stage]} files"]
    return store.artifact_problems(record, deep=deep)


def changed_upstream(store: RunStore, stage: str, record: StageRecord) -> str | None:
    """The first upstream stage whose record changed (or went) since ``record`` was computed
    from it; None when ``record`` is current."""
    for up in UPSTREAM[stage]:
        current = store.record(up)
        if current is None or current.digest() != record.upstream.get(up):
            return up
    return None
