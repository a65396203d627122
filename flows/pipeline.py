"""The pipeline flow: generate -> train -> reduce -> quantify on one Dask cluster."""

from __future__ import annotations

from pdeflow.flows.incremental import ExtendBy, begin_extension
from pdeflow.flows.runtime import dask_client
from pdeflow.tasks.config import STAGES, PipelineConfig
from pdeflow.tasks.generate import generate_task
from pdeflow.tasks.quantify import quantify_task
from pdeflow.tasks.reduce import reduce_task
from pdeflow.tasks.report import publish_run
from pdeflow.tasks.train import train_task
from prefect import flow


@flow(name="pipeline")
def pipeline(
    config: PipelineConfig = PipelineConfig(), overwrite: bool = False, extend_by: ExtendBy = 0
) -> dict:
    """Run the four stages; finished stages are skipped (cached on their configs' hashes).

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
    config, finish = begin_extension(config, extend_by, overwrite, STAGES)
    with dask_client(config.cluster) as client:
        address = client.scheduler.address
        summaries = {"generate": generate_task(config, address, overwrite)}
        summaries["train"] = train_task(config, address, overwrite)
        summaries["reduce"] = reduce_task(config, address, overwrite)
        summaries["quantify"] = quantify_task(config, address, overwrite)
    publish_run(config)
    if finish:
        summaries["changes"] = finish(summaries)
    return summaries
