"""Prefect task of stage 2: the work is ``pdeflow.tasks.stages.train``.

No Prefect result cache: the store's records decide what is done (see ``tasks.generate``).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.orchestration import run_in_task


@task(name="train-surrogate", cache_policy=NO_CACHE, persist_result=False)
def train_task(config: PipelineConfig, scheduler: str = "", overwrite: bool = False) -> dict:
    """Train the surrogate in this process (on ``train.device``), resuming from a checkpoint."""
    return run_in_task("train", config, scheduler, overwrite)
