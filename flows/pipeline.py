"""The pipeline flow: generate -> train -> reduce -> quantify on one Dask cluster."""

from __future__ import annotations

from prefect import flow

from flows.runtime import dask_client
from tasks.config import PipelineConfig
from tasks.generate import generate_task
from tasks.quantify import quantify_task
from tasks.reduce import reduce_task
from tasks.report import publish_run
from tasks.train import train_task


@flow(name="pipeline")
def pipeline(config: PipelineConfig = PipelineConfig(), overwrite: bool = False) -> dict:
    """Run the four stages; finished stages are skipped (cached on their configs' hashes).

    Returns:
        Per-stage summaries: store path, config hash and metrics; never arrays.
    """
    with dask_client(config.cluster) as client:
        address = client.scheduler.address
        summaries = {"generate": generate_task(config, address, overwrite)}
        summaries["train"] = train_task(config, address, overwrite)
        summaries["reduce"] = reduce_task(config, address, overwrite)
        summaries["quantify"] = quantify_task(config, address, overwrite)
    publish_run(config)
    return summaries
