"""Shared pieces of the Prefect task wrappers: stage hashes, cache keys, progress reporting."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from uuid import UUID

from pdeflow.storage import RunStore
from pdeflow.tasks.config import PipelineConfig, config_hash
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

# What each stage's outputs depend on: its own config and the configs upstream of it.
DEPENDS = {
    "generate": ("generate",),
    "train": ("generate", "train"),
    "reduce": ("generate", "reduce"),
    "quantify": ("generate", "train", "reduce", "quantify"),
}

_reporter: Callable[[str, int, int], None] | None = None
# Seconds between two updates of a progress artifact: each update is one API call, and the UI
# polls about once a second anyway. The first report and the final one are always sent.
PROGRESS_INTERVAL_S = 1.0
UNITS = {"generate": "blocks", "train": "epochs"}
_log = logging.getLogger(__name__)


def stage_hash(cfg: PipelineConfig, stage: str) -> str:
    """Content hash naming a stage's outputs: the same configs find the same results."""
    return config_hash(*(getattr(cfg, part) for part in DEPENDS[stage]))


def stage_config(cfg: PipelineConfig, stage: str) -> dict:
    return {part: getattr(cfg, part).model_dump(mode="json") for part in DEPENDS[stage]}


def stage_cache_key(stage: str) -> Callable:
    """A Prefect cache key: the stage, the store's identity and the stage's config hash.

    The store identity changes when a store is wiped, so a cached result never outlives the
    data it describes; ``overwrite=True`` disables the cache for that call.
    """

    def key(context, parameters: dict) -> str | None:
        if parameters.get("overwrite"):
            return None
        cfg: PipelineConfig = parameters["config"]
        # identity() creates the store's id on first use, so even the first run of a new store
        # is cached under the key a later run will compute.
        store = RunStore.named(cfg.store)
        return f"pdeflow-{stage}-{store.identity()}-{stage_hash(cfg, stage)}"

    return key


def set_reporter(fn: Callable[[str, int, int], None] | None) -> None:
    """Install a progress callback ``fn(stage, done, total)`` (the CLI's progress bars)."""
    global _reporter
    _reporter = fn


class ProgressArtifact:
    """A Prefect progress artifact for one stage run: created on the first report, then updated.

    Updates are throttled to one per ``interval`` seconds, except the final one (``done ==
    total``), which is always sent. An API failure is logged once as a warning and turns the
    artifact off: progress display must never fail a run.

    Args:
        stage: stage name, shown in the artifact's description.
        interval: minimum seconds between two updates, >= 0.
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self, stage: str, interval: float = PROGRESS_INTERVAL_S, clock=time.monotonic
    ) -> None:
        if interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        self.stage, self.interval, self.clock = stage, interval, clock
        self.artifact_id: UUID | None = None
        self.failed = False
        self._last = -math.inf

    def __call__(self, done: int, total: int) -> None:
        if self.failed:
            return
        now = self.clock()
        final = done >= total
        if self.artifact_id is not None and not final and now - self._last < self.interval:
            return
        percent = 100.0 if total <= 0 else min(100.0, 100.0 * done / total)
        description = f"{self.stage}: {done} of {total} {UNITS.get(self.stage, 'steps')}"
        try:
            # _sync: these are sync callbacks, also when an async flow runs the stage.
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(
                    percent, description=description, _sync=True
                )
            else:
                update_progress_artifact(
                    self.artifact_id, percent, description=description, _sync=True
                )
        except Exception as err:  # any API failure: report it, keep computing
            self.failed = True
            log_warning(f"{self.stage}: progress artifact disabled after an API error: {err!r}")
        self._last = now


def log_warning(message: str) -> None:
    """Warn in the current Prefect run's log (shown in the UI), or in this module's logger."""
    try:
        get_run_logger().warning(message)
    except MissingContextError:
        _log.warning(message)


def in_run_context() -> bool:
    """Whether this thread runs inside a Prefect flow run or task run."""
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def reporter(stage: str) -> Callable[[int, int], None] | None:
    """A progress callback ``progress(done, total)`` for one run of ``stage``.

    It drives the installed CLI bars (see ``set_reporter``) and, inside a Prefect flow or task
    run, a progress artifact of that run. Call it where the stage starts, in the run's thread.

    Returns:
        The callback, or None when there is nothing to report to.
    """
    sinks: list[Callable[[int, int], None]] = []
    if _reporter is not None:
        cli = _reporter
        sinks.append(lambda done, total: cli(stage, done, total))
    if in_run_context():
        sinks.append(ProgressArtifact(stage, PROGRESS_INTERVAL_S))
    if not sinks:
        return None

    def progress(done: int, total: int) -> None:
        for sink in sinks:
            sink(done, total)

    return progress


def is_extension(old: dict, new: dict) -> bool:
    """Whether stage config ``new`` only grows ``generate.n_samples`` of ``old`` (a campaign
    extended with more samples of the same design), so its results can be updated in place.
    """
    if "generate" not in old or "generate" not in new:
        return False
    old_n, new_n = old["generate"].get("n_samples"), new["generate"].get("n_samples")
    if old_n is None or new_n is None or new_n <= old_n:
        return False
    strip = {k: ({**v, "n_samples": None} if k == "generate" else v) for k, v in old.items()}
    return strip == {
        k: ({**v, "n_samples": None} if k == "generate" else v) for k, v in new.items()
    }


def prepare_stage(store: RunStore, cfg: PipelineConfig, stage: str, overwrite: bool) -> bool:
    """Refuse results of another config (unless overwriting); report an extended campaign.

    Returns:
        True if the stage holds results of the same settings on fewer samples (the caller
        updates them: training warm-starts, the ROM and UQ are refitted), else False.
    """
    rec = store.record(stage)
    new = stage_config(cfg, stage)
    h = stage_hash(cfg, stage)
    if not overwrite and rec and rec["hash"] != h and is_extension(rec.get("config", {}), new):
        return True
    store.check_config(stage, new, h, overwrite)
    return False


def check_records(store: RunStore, cfg: PipelineConfig, stages: Sequence[str]) -> None:
    """Refuse, before anything computes, a store whose ``stages`` hold another config's results
    (other than the same settings on fewer samples, which a run updates in place).

    Raises:
        ConfigMismatch: naming every setting that differs.
    """
    for stage in stages:
        rec, new = store.record(stage), stage_config(cfg, stage)
        if rec and not is_extension(rec.get("config", {}), new):
            store.check_config(stage, new, stage_hash(cfg, stage), overwrite=False)
