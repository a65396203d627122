"""Prefect task of the infer stage: the work is ``pdeflow.tasks.stages.infer``.

No Prefect result cache: the store's records decide what is done (see ``tasks.generate``).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.orchestration import run_in_task
from pdeflow.tasks.report_infer import publish_infer


@task(name="infer-posterior", cache_policy=NO_CACHE, persist_result=False)
def infer_task(config: PipelineConfig, scheduler: str, overwrite: bool = False) -> dict:
    """The posterior's chains on the flow's Dask scheduler; publishes the samplers' table and
    the posterior plot."""
    summary = run_in_task("infer", config, scheduler, overwrite)
    publish_infer(config)
    return summary
