"""Shared pieces of the Prefect task wrappers: stage hashes, cache keys, progress reporting."""

from __future__ import annotations

from collections.abc import Callable

from storage import RunStore
from tasks.config import PipelineConfig, config_hash

# What each stage's outputs depend on: its own config and the configs upstream of it.
DEPENDS = {
    "generate": ("generate",),
    "train": ("generate", "train"),
    "reduce": ("generate", "reduce"),
    "quantify": ("generate", "train", "reduce", "quantify"),
}

_reporter: Callable[[str, int, int], None] | None = None


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


def reporter(stage: str) -> Callable[[int, int], None] | None:
    if _reporter is None:
        return None
    fn = _reporter
    return lambda done, total: fn(stage, done, total)
