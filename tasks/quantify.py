"""Prefect task of stage 4: the work is ``pdeflow.tasks.stages.quantify``.

No Prefect result cache: the store's records decide what is done (see ``tasks.generate``).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.orchestration import run_in_task
from pdeflow.tasks.report import publish_quantify


@task(name="quantify-uncertainty", cache_policy=NO_CACHE, persist_result=False)
def quantify_task(config: PipelineConfig, scheduler: str, overwrite: bool = False) -> dict:
    """Monte Carlo, conformal bands and Sobol' indices; publishes the metrics table."""
    summary = run_in_task("quantify", config, scheduler, overwrite)
    publish_quantify(config, summary)
    return summary
