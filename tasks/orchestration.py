"""The Prefect side of running stages: progress bars and artifacts, run logs, the store lock.

The stage wrappers (``pdeflow.tasks.generate`` and its siblings) call ``run_in_task``; the CLI
installs its progress bars with ``set_reporter`` and routes the run's logs with ``route_logs``
(progress lines, failures kept for ``write_failure_log``); flows hold the store for their
whole run with ``hold_store``. The stages themselves (``pdeflow.tasks.stages``) know nothing
of Prefect.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.settings import get_current_settings
from pydantic import Field

from pdeflow.storage import RunStore
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.stages import STAGES, get_stage, run_stage
from pdeflow.tasks.stages.extend import Growth, begin_extension

# The flows' ``extend_by`` parameter; its description in the UI comes from each flow's docstring.
ExtendBy = Annotated[int, Field(ge=0, le=10_000_000)]

_reporter: Callable[[str, int, int], None] | None = None
# Seconds between two updates of a progress artifact: each update is one API call, and the UI
# polls about once a second anyway. The first report and the final one are always sent.
PROGRESS_INTERVAL_S = 1.0

_log = logging.getLogger(__name__)


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
        unit = get_stage(self.stage).unit if self.stage in STAGES else "steps"
        description = f"{self.stage}: {done} of {total} {unit}"
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


def run_in_task(name: str, config: PipelineConfig, scheduler: str, overwrite: bool) -> dict:
    """Run stage ``name`` from its Prefect task: on the flow's Dask scheduler if it fans out.

    Returns:
        The stage summary as a dict (small: keys and metrics, never arrays).
    """
    progress = reporter(name)
    if not get_stage(name).uses_cluster or not scheduler:
        summary = run_stage(name, config, overwrite=overwrite, progress=progress)
        return summary.model_dump()
    from distributed import Client

    with Client(scheduler) as client:
        summary = run_stage(name, config, client=client, overwrite=overwrite, progress=progress)
    return summary.model_dump()


def hold_store(config: PipelineConfig, what: str):
    """The store's lock for a whole flow run (re-entrant: the stages take it again)."""
    return RunStore.named(config.store).lock(what)


def flow_run_id() -> str | None:
    """The current flow run's id, or None outside a flow run."""
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


class PublishedGrowth:
    """A store growth whose ``finish`` also publishes what changed as a markdown artifact."""

    def __init__(self, growth: Growth, store_name: str):
        self.growth, self.store_name = growth, store_name

    def finish(self, summaries: dict) -> dict:
        from pdeflow.tasks.report import publish_changes

        changes = self.growth.finish(summaries)
        publish_changes(self.store_name, changes)
        return changes


def begin_growth(
    config: PipelineConfig, extend_by: int, overwrite: bool, stages: Sequence[str]
) -> tuple[PipelineConfig, PublishedGrowth | None]:
    """``extend.begin_extension`` for the current flow run, with its plan in the run's log."""
    grown, growth = begin_extension(config, extend_by, overwrite, stages, flow_run_id())
    if growth is None:
        return grown, None
    get_run_logger().info(
        f"store {grown.store!r}: {growth.samples_before} complete samples; this run grows it to "
        f"{grown.generate.n_samples} (extend_by={extend_by})"
    )
    return grown, PublishedGrowth(growth, grown.store)


class QuietRunFailures(logging.Filter):
    """Drops Prefect's flow/task-run error records (a traceback each) and pdeflow's progress
    lines from a console handler: the CLI prints one message and its own progress instead.
    ``--debug`` keeps the tracebacks."""

    def __init__(self, debug: bool = False) -> None:
        super().__init__()
        self.debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(PROGRESS_LOGGERS):
            return False
        run_logger = record.name.startswith(("prefect.flow_runs", "prefect.task_runs"))
        return self.debug or not (run_logger and record.levelno >= logging.ERROR)


class KeptErrors(logging.Handler):
    """Keeps the run's error records (Prefect's tracebacks) for the failure log file."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


# Progress lines (every $PDEFLOW_PROGRESS_INTERVAL s) and finished blocks: the CLI's own.
PROGRESS_LOGGERS = ("pdeflow.progress", "pdeflow.blocks")


def route_logs(plain_progress: bool, debug: bool = False) -> KeptErrors:
    """For the CLI, after Prefect set up its logging: keep its run-failure
    tracebacks and pdeflow's progress off the console, and Dask's notices (cluster start,
    worker errors that the flow reports anyway) too. Without a terminal, progress lines go to
    stderr as plain lines. Returns the handler that keeps the error records."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(QuietRunFailures(debug))
    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "distributed"]:
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    if plain_progress:
        lines = logging.StreamHandler(sys.stderr)
        lines.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logging.getLogger(PROGRESS_LOGGERS[0]).addHandler(lines)
    kept = KeptErrors()
    logging.getLogger().addHandler(kept)
    for name in ("prefect.flow_runs", "prefect.task_runs"):  # they do not propagate to root
        logging.getLogger(name).addHandler(kept)
    return kept


def write_failure_log(store: str, stage: str, err: BaseException, kept: KeptErrors) -> Path | None:
    """Write the failure's traceback and Prefect's error records to a file; its path, or None
    if it cannot be written (the message then suggests --debug alone)."""
    import datetime
    import traceback

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = Path(get_current_settings().home) / "pdeflow-logs" / f"{store}-{stage}-{stamp}.log"
    text = "".join(traceback.format_exception(err)) + "\n".join(["", *kept.lines, ""])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError:
        return None
    return path
