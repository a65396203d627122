"""The one stage lifecycle: upstream check, what is done, run what is missing, check, record.

``run_stage`` is plain Python (no Prefect): flows call it through thin ``@task`` wrappers, tests
and benchmarks call it directly. For every stage alike, under the store's lock, it

1. checks that each upstream stage is complete, of this config, current (its own lineage
   matches) and intact (its files verified), else refuses (``StageNotReady``);
2. compares the stage's record with this config: same settings, the same settings on fewer
   samples (an extension, updated in place), or another config (refused unless overwriting);
3. lets the stage bring the store up to date (``prepare``) and, when the record is complete,
   current and its outputs verify, returns without computing;
4. otherwise records the stage ``running``, computes the missing units, checks the metrics
   are finite, and records it ``complete`` with its lineage, or ``failed`` with the reason.

The store is the only source of truth: no other cache can declare a stage finished.
"""

from __future__ import annotations

import math
import time
from typing import Any

from pdeflow.storage import ConfigMismatch, RunStore, StageNotReady, StageRecord
from pdeflow.storage.records import now
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.stages.base import (
    Progress,
    ProgressLine,
    Stage,
    StageRun,
    StageSummary,
    diff,
    is_extension,
    log,
    sections,
    stage_config,
    stage_hash,
)
from pdeflow.tasks.stages.registry import REGISTRY, STAGES

MAX_ERROR_CHARS = 4000


def hash_of(cfg: PipelineConfig, stage: str) -> str:
    return stage_hash(cfg, stage, REGISTRY)


def config_of(cfg: PipelineConfig, stage: str) -> dict:
    return stage_config(cfg, stage, REGISTRY)


def run_stage(
    name: str,
    cfg: PipelineConfig,
    *,
    client: Any = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> StageSummary:
    """Run stage ``name`` for ``cfg`` (see the module docstring); returns its summary.

    Raises:
        ValueError: the config cannot run this stage (names the field).
        StoreError: the store is busy, nested, of another config, or an upstream stage is not
            ready; nothing was computed.
        Exception: the stage's own failure (a block, a non-finite loss); its record says
            ``failed`` and finished units stay finished.
    """
    stage = REGISTRY[name]
    stage.check(cfg)
    store = RunStore.named(cfg.store)
    with store.lock(f"pdeflow {name}"):
        store.sweep()
        upstream = upstream_digests(name, cfg, store)
        run = StageRun(cfg, store, client, progress, overwrite, previous=store.record(name))
        h = hash_of(cfg, name)
        _resolve_previous(stage, run, h)
        stage.prepare(run)
        rec = run.previous
        if rec and rec.status == "complete" and rec.config_hash == h and rec.upstream == upstream:
            problems = stage.problems(run, rec)
            if not problems:
                return _summary(stage, run, rec, computed=0, total=stage.total(run))
            if not run.notes:  # prepare may have said what it repairs already
                run.warn(f"{name}: recorded as complete, but {problems[0]}; recomputing")
        return _compute(stage, run, h, upstream)


def _compute(stage: Stage, run: StageRun, h: str, upstream: dict[str, str]) -> StageSummary:
    units, total = stage.pending(run), stage.total(run)
    keep = {**(run.previous.details if run.previous else {}), **run.details}
    keep = {k: v for k, v in keep.items() if v is not None}
    rec = StageRecord(
        stage=stage.name,
        config_hash=h,
        config=config_of(run.cfg, stage.name),
        upstream=upstream,
        status="running",
        started=now(),
        details=keep,
    )
    run.store.write_record(rec)
    t0 = time.perf_counter()
    try:
        with ProgressLine(stage.name, stage.unit, total - len(units), total, run.progress) as line:
            run.line = line
            stage.compute(run, units)
        run.line = None
        outcome = stage.finish(run)
        _check_finite(stage.name, outcome.metrics)
    except BaseException as err:
        _record_failure(run, rec, err)
        raise
    artifacts = {k: tuple(v) for k, v in outcome.artifacts.items()}
    done = rec.model_copy(
        update={
            "status": "complete",
            "finished": now(),
            "metrics": outcome.metrics,
            "artifacts": artifacts,
            "outputs": outcome.outputs or _digest_of(artifacts),
            "details": {**keep, **outcome.details, "notes": run.notes},
        }
    )
    run.store.write_record(done)
    summary = _summary(stage, run, done, computed=len(units), total=total)
    return summary.model_copy(update={"seconds": time.perf_counter() - t0})


def _record_failure(run: StageRun, rec: StageRecord, err: BaseException) -> None:
    """Record the stage ``failed`` with its reason; best effort (the disk may be full): the
    record says ``running`` otherwise, which is not complete either."""
    reason = f"{type(err).__name__}: {err}"[:MAX_ERROR_CHARS]
    failed = rec.model_copy(update={"status": "failed", "finished": now(), "error": reason})
    try:
        run.store.write_record(failed)
    except OSError as write_err:
        log.warning(f"{rec.stage}: could not record the failure ({write_err}); it stays running")


def _digest_of(artifacts: dict) -> str:
    import hashlib
    import json

    text = json.dumps(sorted(artifacts.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_finite(stage: str, metrics: dict) -> None:
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"{stage} produced non-finite metrics {bad}: not recorded")


def _summary(stage: Stage, run: StageRun, rec: StageRecord, computed: int, total: int):
    return StageSummary(
        stage=stage.name,
        store=str(run.store.path),
        config_hash=rec.config_hash,
        unit=stage.unit,
        computed=computed,
        total=total,
        metrics=rec.metrics,
        notes=run.notes,
    )


def _resolve_previous(stage: Stage, run: StageRun, h: str) -> None:
    """Accept the record (same config, or an extension), refuse it, or clear it (overwrite)."""
    rec = run.previous
    if rec is None or rec.config_hash == h:
        return
    new = config_of(run.cfg, stage.name)
    if not run.overwrite and is_extension(rec.config, new):
        run.extended = True
        return
    if not run.overwrite:
        raise mismatch(run.store, stage.name, rec, new)
    clear_from(run.store, stage.name)
    run.previous = None


def mismatch(store: RunStore, stage: str, rec: StageRecord, new: dict) -> ConfigMismatch:
    changes = diff(rec.config, new) or ["(an upstream stage changed)"]
    hint = ""
    if rec.status != "complete" and rec.details.get("extended_from") is not None:
        hint = (
            f"\nIts growth from {rec.details['extended_from']} samples was interrupted: run "
            "the larger config again to finish it."
        )
    return ConfigMismatch(
        f"store {store.name!r} holds {stage} results of a different config:\n  "
        + "\n  ".join(changes[:12])
        + hint
        + "\nUse another store name, or --overwrite to replace them."
    )


def clear_from(store: RunStore, stage: str) -> None:
    """Remove ``stage``'s results and those of every stage computed from them (for the first
    stage, which everything depends on: the whole store)."""
    if stage == STAGES[0]:
        store.wipe()
        return
    for name in STAGES:
        if stage in sections(name, REGISTRY):
            store.clear_stage(name)


def upstream_digests(
    name: str, cfg: PipelineConfig, store: RunStore, deep: bool = True, _seen=None
) -> dict[str, str]:
    """Digest of each upstream record, once each is checked ready (see the module docstring).

    Raises:
        StageNotReady: naming the upstream stage, what is wrong, and what to run.
    """
    seen = {} if _seen is None else _seen
    out = {}
    for up in REGISTRY[name].upstream:
        if up not in seen:
            seen[up] = _ready(name, up, cfg, store, deep, seen)
        out[up] = seen[up]
    return out


def _ready(name: str, up: str, cfg, store: RunStore, deep: bool, seen: dict) -> str:
    rec = store.record(up)
    where = f"store {store.name!r}"
    if rec is None or rec.status != "complete":
        state = "missing" if rec is None else rec.status
        raise StageNotReady(
            f"{name} needs a complete {up} stage in {where} ({up} is {state}); run "
            f"`pdeflow run {up}` (or the pipeline) first"
        )
    if rec.config_hash != hash_of(cfg, up):
        changes = diff(rec.config, config_of(cfg, up))[:6]
        raise StageNotReady(
            f"{name} needs {up} results of this config, but {where} holds {up} of another:\n  "
            + "\n  ".join(changes)
            + f"\nrun `pdeflow run {up}` with this config first"
        )
    if rec.upstream != upstream_digests(up, cfg, store, deep, seen):
        raise StageNotReady(
            f"{up} in {where} is out of date (a stage it was computed from changed since); run "
            f"`pdeflow run {up}` again"
        )
    problems = REGISTRY[up].problems(StageRun(cfg, store), rec, deep=deep)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StageNotReady(
            f"{up} in {where} is damaged: {problems[0]}{more}; run `pdeflow run {up}` to "
            f"recompute what is damaged, or `pdeflow verify {store.name} --repair`"
        )
    return rec.digest()


def annotate(store: RunStore, stage: str, **details: Any) -> None:
    """Add facts to a stage's record (an extension's lineage); needs the store's lock."""
    rec = store.record(stage)
    if rec is None:
        return
    merged = {**rec.details, **{k: v for k, v in details.items() if v is not None}}
    for key in [k for k, v in details.items() if v is None]:
        merged.pop(key, None)
    store.write_record(rec.model_copy(update={"details": merged}))


def require_ready(cfg: PipelineConfig, stages_to_run: tuple[str, ...], overwrite: bool) -> None:
    """Refuse, before anything starts, a run that cannot proceed (CLI precheck).

    Checks each stage's config, the store name, that no stage's record is of another config
    (other than an extension), and that the upstream stages of the first stage are ready.

    Raises:
        ValueError, StoreError: naming what to change.
    """
    for name in stages_to_run:
        REGISTRY[name].check(cfg)
    store = RunStore.named(cfg.store)
    if not overwrite:
        for name in stages_to_run:
            rec = store.record(name)
            new = config_of(cfg, name)
            if rec and rec.config_hash != hash_of(cfg, name) and not is_extension(rec.config, new):
                raise mismatch(store, name, rec, new)
    if stages_to_run and REGISTRY[stages_to_run[0]].upstream:
        upstream_digests(stages_to_run[0], cfg, store, deep=False)


def reopen(store: RunStore, stage: str, reason: str) -> None:
    """Mark a complete stage ``failed`` (damaged outputs): the next run recomputes it."""
    rec = store.record(stage)
    if rec is None:
        return
    error = f"reopened by pdeflow verify --repair: {reason}"
    store.write_record(rec.model_copy(update={"status": "failed", "error": error}))
