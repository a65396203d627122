"""Prefect task of stage 1: the work is ``pdeflow.tasks.stages.generate``.

No Prefect result cache: the store's records decide what is done, so a retry or a new run asks
the store again (verified), and a deleted or damaged record means recompute.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.orchestration import run_in_task


@task(name="generate-data", cache_policy=NO_CACHE, persist_result=False)
def generate_task(config: PipelineConfig, scheduler: str, overwrite: bool = False) -> dict:
    """Solve the blocks the store lacks on the flow's Dask scheduler; returns the summary."""
    return run_in_task("generate", config, scheduler, overwrite)
