"""Calling the stages directly in tests, and reading what a store holds."""

from __future__ import annotations

from pathlib import Path

from pdeflow.storage import RunStore
from pdeflow.tasks.stages import StageSummary, run_stage


def generate(cfg, client, overwrite: bool = False) -> StageSummary:
    return run_stage("generate", cfg, client=client, overwrite=overwrite)


def train(cfg, overwrite: bool = False) -> StageSummary:
    return run_stage("train", cfg, overwrite=overwrite)


def reduce(cfg, client, overwrite: bool = False) -> StageSummary:
    return run_stage("reduce", cfg, client=client, overwrite=overwrite)


def quantify(cfg, client, overwrite: bool = False) -> StageSummary:
    return run_stage("quantify", cfg, client=client, overwrite=overwrite)


def complete_blocks(path: Path) -> list[int]:
    """Blocks of the store's current dataset that its manifest holds complete."""
    return sorted(RunStore(path).complete_blocks())


def block_files(path: Path) -> dict[int, dict]:
    """Every complete block's chunk files with their (size, CRC32): equal stores match."""
    return {b: dict(e.files) for b, e in RunStore(path).complete_blocks().items()}
