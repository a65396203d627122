"""The pipeline flow: generate -> train -> reduce -> quantify on one Dask cluster."""

from __future__ import annotations

from prefect import flow

from pdeflow.flows.automations import crash_earlier_attempts
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.generate import generate_task
from pdeflow.tasks.orchestration import ExtendBy, begin_growth, hold_store
from pdeflow.tasks.quantify import quantify_task
from pdeflow.tasks.reduce import reduce_task
from pdeflow.tasks.report import publish_run
from pdeflow.tasks.runtime import dask_client
from pdeflow.tasks.stages import pipeline_stages
from pdeflow.tasks.train import train_task

STAGE_TASKS = {
    "generate": generate_task,
    "train": train_task,
    "reduce": reduce_task,
    "quantify": quantify_task,
}


@flow(name="pipeline")
def pipeline(
    config: PipelineConfig = PipelineConfig(), overwrite: bool = False, extend_by: ExtendBy = 0
) -> dict:
    """Run the four stages (generate and reduce for a stationary problem); a stage the store
    holds complete and intact is not recomputed.

    Args:
        config: The run's settings. With extend_by, generate.n_samples sizes a new store only.
        overwrite: Replace results of a different config (for generate, the whole store).
        extend_by: Samples added to the store by each run, 0 to 10,000,000 (0: none). The
            design continues, only new blocks are solved, training warm-starts from the last
            model, the ROM and UQ are refitted. Needs design random (or sobol reaching a power
            of 2).

    Returns:
        Per-stage summaries: store path, config hash and metrics; never arrays. With extend_by,
        also ``changes``: samples before and after, blocks solved, warm start, metrics changed.
    """
    crash_earlier_attempts()  # the task runs a dead attempt left Running
    with hold_store(config, "pipeline flow"):
        stages = pipeline_stages(config)
        config, growth = begin_growth(config, extend_by, overwrite, stages)
        with dask_client(config.cluster) as client:
            address = client.scheduler.address
            summaries = {name: STAGE_TASKS[name](config, address, overwrite) for name in stages}
        publish_run(config)
        if growth:
            summaries["changes"] = growth.finish(summaries)
    return summaries
