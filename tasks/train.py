"""Prefect task of stage 2: the work is ``pdeflow.tasks.stages.train``.

No Prefect result cache: the store's records decide what is done (see ``tasks.generate``).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.orchestration import run_in_task
from pdeflow.tasks.report import publish_train


@task(name="train-surrogate", cache_policy=NO_CACHE, persist_result=False)
def train_task(config: PipelineConfig, scheduler: str = "", overwrite: bool = False) -> dict:
    """Train the surrogate's units as Dask tasks on ``scheduler``'s workers (on
    ``train.device``), each resuming from its own checkpoint."""
    summary = run_in_task("train", config, scheduler, overwrite)
    publish_train(config)
    return summary
