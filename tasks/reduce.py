"""Prefect task of stage 3: the work is ``pdeflow.tasks.stages.reduce``.

No Prefect result cache: the store's records decide what is done (see ``tasks.generate``).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.orchestration import run_in_task
from pdeflow.tasks.report import publish_reduce


@task(name="reduce-order", cache_policy=NO_CACHE, persist_result=False)
def reduce_task(config: PipelineConfig, scheduler: str, overwrite: bool = False) -> dict:
    """The reduce methods on the flow's Dask scheduler; publishes their side-by-side table."""
    summary = run_in_task("reduce", config, scheduler, overwrite)
    publish_reduce(config)
    return summary
