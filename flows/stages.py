"""One flow per stage, each runnable alone on a store whose upstream stages are complete."""

from __future__ import annotations

from prefect import flow

from pdeflow.flows.automations import crash_earlier_attempts
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.generate import generate_task
from pdeflow.tasks.infer import infer_task
from pdeflow.tasks.orchestration import ExtendBy, begin_growth, hold_store
from pdeflow.tasks.quantify import quantify_task
from pdeflow.tasks.reduce import reduce_task
from pdeflow.tasks.runtime import dask_client
from pdeflow.tasks.train import train_task


@flow(name="data-generation")
def data_generation(
    config: PipelineConfig = PipelineConfig(), overwrite: bool = False, extend_by: ExtendBy = 0
) -> dict:
    """Stage 1: solve the PDE for every block the store lacks.

    Args:
        config: The run's settings. With extend_by, generate.n_samples sizes a new store only.
        overwrite: Replace a store of a different config.
        extend_by: Samples added to the store by each run, 0 to 10,000,000 (0: none). The
            design continues and only new blocks are solved. Needs design random (or sobol
            reaching a power of 2).

    Returns:
        The stage summary; with extend_by, also ``changes`` (samples before and after, blocks).
    """
    crash_earlier_attempts()  # the task runs a dead attempt left Running
    with hold_store(config, "data-generation flow"):
        config, growth = begin_growth(config, extend_by, overwrite, ("generate",))
        with dask_client(config.cluster) as client:
            summary = generate_task(config, client.scheduler.address, overwrite)
        if growth:
            summary = {**summary, "changes": growth.finish({"generate": summary})}
    return summary


@flow(name="surrogate-training")
def surrogate_training(config: PipelineConfig = PipelineConfig(), overwrite: bool = False) -> dict:
    """Stage 2: train the surrogate's units on the Dask workers, each resuming from its own
    latest checkpoint."""
    crash_earlier_attempts()  # the task runs a dead attempt left Running
    with hold_store(config, "surrogate-training flow"), dask_client(config.cluster) as client:
        return train_task(config, client.scheduler.address, overwrite)


@flow(name="reduced-order-model")
def reduced_order_model(config: PipelineConfig = PipelineConfig(), overwrite: bool = False) -> dict:
    """Stage 3: out-of-core POD and the parametric ROM."""
    crash_earlier_attempts()  # the task runs a dead attempt left Running
    with hold_store(config, "reduced-order-model flow"), dask_client(config.cluster) as client:
        return reduce_task(config, client.scheduler.address, overwrite)


@flow(name="uncertainty-quantification")
def uncertainty_quantification(
    config: PipelineConfig = PipelineConfig(), overwrite: bool = False
) -> dict:
    """Stage 4: Monte Carlo, conformal bands and Sobol indices."""
    crash_earlier_attempts()  # the task runs a dead attempt left Running
    with hold_store(config, "uncertainty-quantification flow"):
        with dask_client(config.cluster) as client:
            return quantify_task(config, client.scheduler.address, overwrite)


@flow(name="bayesian-inference")
def bayesian_inference(config: PipelineConfig = PipelineConfig(), overwrite: bool = False) -> dict:
    """Sample the posterior of the parameters given observations (config.infer), by delayed
    acceptance (the ROM screens, the solver decides) and plain Metropolis, chains on the Dask
    workers, each resuming after its last saved segment. Needs generate and reduce complete."""
    crash_earlier_attempts()  # the task runs a dead attempt left Running
    with hold_store(config, "bayesian-inference flow"), dask_client(config.cluster) as client:
        return infer_task(config, client.scheduler.address, overwrite)
