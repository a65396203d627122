"""Prefect task of stage 3: the work is ``pdeflow.tasks.stages.reduce``.

No Prefect result cache: the store's records decide what is done (see ``tasks.generate``).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.orchestration import run_in_task


@task(name="reduce-order", cache_policy=NO_CACHE, persist_result=False)
def reduce_task(config: PipelineConfig, scheduler: str, overwrite: bool = False) -> dict:
    """Out-of-core POD on the flow's Dask scheduler, then the parametric ROM."""
    return run_in_task("reduce", config, scheduler, overwrite)
