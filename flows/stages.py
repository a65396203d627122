"""One flow per stage, each runnable alone on a store whose upstream stages are complete."""

from __future__ import annotations

from prefect import flow

from flows.runtime import dask_client
from tasks.config import PipelineConfig
from tasks.generate import generate_task
from tasks.quantify import quantify_task
from tasks.reduce import reduce_task
from tasks.train import train_task


@flow(name="data-generation")
def data_generation(config: PipelineConfig = PipelineConfig(), overwrite: bool = False) -> dict:
    """Stage 1: solve the PDE for every block the store lacks."""
    with dask_client(config.cluster) as client:
        return generate_task(config, client.scheduler.address, overwrite)


@flow(name="surrogate-training")
def surrogate_training(config: PipelineConfig = PipelineConfig(), overwrite: bool = False) -> dict:
    """Stage 2: train the neural operator, resuming from the latest checkpoint."""
    return train_task(config, "", overwrite)


@flow(name="reduced-order-model")
def reduced_order_model(config: PipelineConfig = PipelineConfig(), overwrite: bool = False) -> dict:
    """Stage 3: out-of-core POD and the parametric ROM."""
    with dask_client(config.cluster) as client:
        return reduce_task(config, client.scheduler.address, overwrite)


@flow(name="uncertainty-quantification")
def uncertainty_quantification(
    config: PipelineConfig = PipelineConfig(), overwrite: bool = False
) -> dict:
    """Stage 4: Monte Carlo, conformal bands and Sobol indices."""
    with dask_client(config.cluster) as client:
        return quantify_task(config, client.scheduler.address, overwrite)
