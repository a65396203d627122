"""The stage contract: what a stage declares, and what the runner gives it while it runs.

A stage (``Stage``) names itself and its upstream stages, checks a config before anything
starts, says which of its work units are still to do, computes them, and finishes with its
metrics and outputs. It never writes its own record and never decides whether it is complete:
the runner (``pdeflow.tasks.stages.runner``) does both, from the store, for every stage alike.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from pdeflow.storage import FileEntry, RunStore, StageRecord
from pdeflow.tasks.config import PipelineConfig, config_hash

Progress = Callable[[int, int], None]
log = logging.getLogger("pdeflow.stages")


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

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

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


def artifact_problems(run: StageRun, record: StageRecord, what: str, deep: bool) -> list[str]:
    """Problems of a record's files (the stage's group, a model): none recorded is one."""
    if not record.artifacts:
        return [f"the record lists none of the {what} files"]
    return run.store.artifact_problems(record, deep=deep)


def sections(stage: str, registry: dict[str, Stage]) -> tuple[str, ...]:
    """Config sections a stage's results depend on: its own and its upstream stages'."""
    out: list[str] = []
    for up in registry[stage].upstream:
        out += [s for s in sections(up, registry) if s not in out]
    return (*out, stage)


def stage_config(cfg: PipelineConfig, stage: str, registry: dict[str, Stage]) -> dict:
    return {part: getattr(cfg, part).model_dump(mode="json") for part in sections(stage, registry)}


def stage_hash(cfg: PipelineConfig, stage: str, registry: dict[str, Stage]) -> str:
    """Content hash naming a stage's outputs: the same configs find the same results."""
    return config_hash(*(getattr(cfg, part) for part in sections(stage, registry)))


def is_extension(old: dict, new: dict) -> bool:
    """Whether stage config ``new`` only grows ``generate.n_samples`` of ``old`` (a campaign
    extended with more samples of the same design), so its results can be updated in place.
    """
    if "generate" not in old or "generate" not in new:
        return False
    old_n, new_n = old["generate"].get("n_samples"), new["generate"].get("n_samples")
    if old_n is None or new_n is None or new_n <= old_n:
        return False

    def strip(cfg: dict) -> dict:
        return {k: ({**v, "n_samples": None} if k == "generate" else v) for k, v in cfg.items()}

    return strip(old) == strip(new)


def diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted settings that differ between two config dicts: ``a.b: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += diff(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]
