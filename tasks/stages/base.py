"""The stage contract: what a stage declares, and what the runner gives it while it runs.

A stage (``Stage``) names itself and its upstream stages, checks a config before anything
starts, says which of its work units are still to do, computes them, and finishes with its
metrics and outputs. It never writes its own record and never decides whether it is complete:
the runner (``pdeflow.tasks.stages.runner``) does both, from the store, for every stage alike.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from pdeflow.storage import FileEntry, RunStore, StageRecord
from pdeflow.tasks.config import PipelineConfig, config_hash

Progress = Callable[[int, int], None]
log = logging.getLogger("pdeflow.stages")
# One line per stage every PROGRESS_INTERVAL_S, in the run's log (the UI's Logs tab) and on a
# CLI whose stderr is not a terminal. INFO, whatever the root level: progress is the point.
progress_log = logging.getLogger("pdeflow.progress")
progress_log.setLevel(logging.INFO)
# Each finished unit's summary (a block solved on a worker), for the run's log only.
blocks_log = logging.getLogger("pdeflow.blocks")
blocks_log.setLevel(logging.INFO)
PROGRESS_INTERVAL_S = 10.0
PROGRESS_INTERVAL_ENV = "PDEFLOW_PROGRESS_INTERVAL"


def progress_interval() -> float:
    """Seconds between two progress lines: ``$PDEFLOW_PROGRESS_INTERVAL``, default 10.

    Raises:
        ValueError: the variable is not a positive number (names it).
    """
    text = os.environ.get(PROGRESS_INTERVAL_ENV, "")
    try:
        value = float(text) if text else PROGRESS_INTERVAL_S
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{PROGRESS_INTERVAL_ENV} must be a positive number of seconds: {text!r}")
    return value


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class ProgressLine:
    """One stage run's progress as a line of text, logged every ``interval`` seconds.

    A background thread logs the line on ``pdeflow.progress`` whether or not a unit finished
    meanwhile, so a slow block or epoch still shows a line per interval. The thread runs in a
    copy of the caller's context, so Prefect routes its lines to the caller's flow or task run.

    Args:
        stage: stage name; ``unit``: what it counts (blocks, epochs, steps).
        done, total: units done before this run, and of the stage.
        sink: ``progress(done, total)`` to forward every update to (CLI bars, artifacts).
        interval: seconds between two lines (``progress_interval()``).
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(self, stage: str, unit: str, done: int, total: int, sink: Progress | None = None,
                 interval: float | None = None, clock=time.monotonic):  # fmt: skip
        self.stage, self.unit, self.sink, self.clock = stage, unit, sink, clock
        self.interval = progress_interval() if interval is None else interval
        self.done, self.total, self.first = done, total, done
        self.facts: dict[str, Any] = {}
        self.t0 = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def update(self, done: int, total: int, **facts: Any) -> None:
        """Units done of total; ``facts`` (loss, samples, step) are shown in the next line."""
        self.done, self.total = done, total
        self.facts.update(facts)
        if self.sink is not None:
            self.sink(done, total)

    def note(self, **facts: Any) -> None:
        """Facts between two units (the current batch and its loss)."""
        self.facts.update(facts)

    def text(self) -> str:
        """``generate: 5/16 blocks (31%), 40.2 samples/s, about 1 min 20 s left`` and the like."""
        elapsed = self.clock() - self.t0
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.stage}: {self.done}/{self.total} {self.unit}{share}"]
        for key, value in self.facts.items():
            if key == "samples":
                parts.append(f"{value / max(elapsed, 1e-9):.3g} samples/s")
            else:
                parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
        ran = self.done - self.first
        if 0 < ran and self.done < self.total:
            parts.append(f"about {_duration(elapsed / ran * (self.total - self.done))} left")
        parts.append(f"{_duration(elapsed)} elapsed")
        return ", ".join(parts)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            progress_log.info(self.text())

    def __enter__(self) -> ProgressLine:
        progress_log.info(f"{self.stage}: starting, {self.done}/{self.total} {self.unit} done")
        if self.sink is not None:
            self.sink(self.done, self.total)
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._beat,), name=f"{self.stage}-progress", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, kind, err, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        outcome = "failed" if kind is not None else "done"
        progress_log.info(f"{self.text()} ({outcome})")


@dataclass
class StageRun:
    """One run of one stage: its config, store, cluster client, progress and findings.

    Attributes:
        cfg: the run's whole config.
        store: the run store (its lock is held while the stage runs).
        client: a ``distributed.Client`` for stages that fan out, else None.
        progress: ``progress(done, total)`` for the CLI bars and the UI, or None.
        overwrite: the run may replace results of another config.
        previous: the stage's record before this run, or None.
        extended: the previous record holds the same settings on fewer samples (an
            extension): the stage updates its results (warm start, refit) instead of refusing.
        notes: what the stage found (repaired blocks, a damaged checkpoint), for the summary.
        details: facts for the record from the start of the run (an extension's origin), so
            that a run that fails or is killed still says what it was doing.
        state: scratch space between a stage's methods during this run.
        line: the progress line while the stage computes (the runner sets it), else None.
    """

    cfg: PipelineConfig
    store: RunStore
    client: Any = None
    progress: Progress | None = None
    overwrite: bool = False
    previous: StageRecord | None = None
    extended: bool = False
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    line: ProgressLine | None = None

    def report(self, done: int, total: int, **facts: Any) -> None:
        """Units done of total, with facts for the progress line (``loss=``, ``samples=``)."""
        if self.line is not None:
            self.line.update(done, total, **facts)
        elif self.progress is not None:
            self.progress(done, total)

    def note(self, **facts: Any) -> None:
        """Facts between two units (the current batch and its loss), shown in the next line."""
        if self.line is not None:
            self.line.note(**facts)

    def warn(self, message: str) -> None:
        """Say something the user must know (shown by the CLI and in the UI's logs)."""
        self.notes.append(message)
        log.warning(message)


@dataclass
class Outcome:
    """What a finished stage hands the runner for its record.

    Attributes:
        metrics: scalar results; every float must be finite.
        artifacts: files the stage wrote, relative to the store, with their entries.
        outputs: a digest of the outputs, for downstream lineage; default: of ``artifacts``.
        details: stage-specific facts kept in the record (history, counts).
    """

    metrics: dict[str, Any]
    artifacts: dict[str, FileEntry] = field(default_factory=dict)
    outputs: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class StageSummary(BaseModel):
    """What a stage run returns (to a flow, the CLI, a test): small, JSON-serialisable."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    store: str = Field(description="Absolute path of the run store.")
    config_hash: str
    unit: str = Field(description="What the stage counts: blocks, epochs or steps.")
    computed: int = Field(description="Units computed by this run (0: everything was done).")
    total: int = Field(description="Units of the stage.")
    metrics: dict[str, Any]
    notes: list[str] = Field(default_factory=list)
    seconds: float | None = Field(None, description="Wall time of this run's compute, s.")


class Stage(ABC):
    """One stage of the pipeline (see the module docstring)."""

    name: ClassVar[str]
    upstream: ClassVar[tuple[str, ...]] = ()
    unit: ClassVar[str] = "steps"
    uses_cluster: ClassVar[bool] = True

    def check(self, cfg: PipelineConfig) -> None:  # noqa: B027 (optional hook)
        """Refuse a config this stage cannot run, before anything starts (raises ValueError)."""

    def prepare(self, run: StageRun) -> None:  # noqa: B027 (optional hook)
        """Bring the store to where the stage can decide what is done (under the lock)."""

    @abstractmethod
    def problems(self, run: StageRun, record: StageRecord, deep: bool = True) -> list[str]:
        """Why a complete record cannot be trusted (damaged or missing outputs); [] if none.

        Args:
            deep: read every recorded file and compare CRC32s; False compares sizes only.
        """

    def total(self, run: StageRun) -> int:
        """The stage's number of work units."""
        return 1

    @abstractmethod
    def pending(self, run: StageRun) -> list[int]:
        """The work units still to compute (``compute`` gets exactly these)."""

    @abstractmethod
    def compute(self, run: StageRun, units: list[int]) -> None:
        """Compute ``units``, each durably; raise on the first unit that cannot be done."""

    @abstractmethod
    def finish(self, run: StageRun) -> Outcome:
        """Metrics and outputs once every unit is done."""


def sections(stage: str, registry: dict[str, Stage]) -> tuple[str, ...]:
    """Config sections a stage's results depend on: its own and its upstream stages'."""
    out: list[str] = []
    for up in registry[stage].upstream:
        out += [s for s in sections(up, registry) if s not in out]
    return (*out, stage)


def stage_config(cfg: PipelineConfig, stage: str, registry: dict[str, Stage]) -> dict:
    return {part: getattr(cfg, part).identity() for part in sections(stage, registry)}


def stage_hash(cfg: PipelineConfig, stage: str, registry: dict[str, Stage]) -> str:
    """Content hash naming a stage's outputs: the same configs find the same results."""
    return config_hash(*(getattr(cfg, part) for part in sections(stage, registry)))


def is_extension(old: dict, new: dict) -> bool:
    """Whether stage config ``new`` only grows ``generate.n_samples`` of ``old`` (a campaign
    extended with more samples of the same design, or with more chosen ``generate.points``),
    so its results can be updated in place.
    """
    if "generate" not in old or "generate" not in new:
        return False
    old_n, new_n = old["generate"].get("n_samples"), new["generate"].get("n_samples")
    if old_n is None or new_n is None or new_n <= old_n:
        return False

    old_points, new_points = old["generate"].get("points", []), new["generate"].get("points", [])
    if list(new_points[: len(old_points)]) != list(old_points):
        return False  # chosen points are only ever appended
    if old_points and new_n - len(new_points) != old_n - len(old_points):
        return False  # the design's samples come before the chosen points: fixed once chosen

    def strip(cfg: dict) -> dict:
        return {
            k: ({**v, "n_samples": None, "points": None} if k == "generate" else v)
            for k, v in cfg.items()
        }

    return strip(old) == strip(new)


def diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted settings that differ between two config dicts: ``a.b: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += diff(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if old == new else [f"{prefix}: {_short(old)} -> {_short(new)}"]


def _short(value: Any, limit: int = 120) -> str:
    """``repr(value)``, or for a long list its length and ends (a campaign's chosen points)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, list):
        return f"[{len(value)} items: {_short(value[0], 40)}, ..., {_short(value[-1], 40)}]"
    return text[: limit - 3] + "..."
