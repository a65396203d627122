"""The campaign flow: rounds of choose -> simulate -> update, on one Dask cluster."""

from __future__ import annotations

from prefect import flow

from pdeflow.flows.automations import crash_earlier_attempts
from pdeflow.flows.pipeline import STAGE_TASKS
from pdeflow.tasks.campaign import Campaign
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.orchestration import hold_store
from pdeflow.tasks.report_campaign import publish_campaign
from pdeflow.tasks.runtime import dask_client


@flow(name="campaign")
def campaign(config: PipelineConfig = PipelineConfig(), overwrite: bool = False) -> dict:
    """Active learning (config.campaign): the GP ROM's variance picks each batch of
    simulations, which generate solves as new blocks of the same store; the ROM is updated
    incrementally (and the surrogate fine-tuned, with campaign.train) until the budget or the
    target error. A killed campaign resumes at its round, recomputing nothing finished.

    Args:
        config: The run's settings; generate.n_samples is the initial design.
        overwrite: Replace the store's results of a different config in the first round.

    Returns:
        Why it stopped, simulations added, and every round's held-out error.
    """
    crash_earlier_attempts()  # the task runs a dead attempt left Running
    with hold_store(config, "campaign flow"), dask_client(config.cluster) as client:
        address = client.scheduler.address

        def run_stage(name: str, round_cfg: PipelineConfig, first: bool) -> dict:
            return STAGE_TASKS[name](round_cfg, address, overwrite and first)

        return Campaign(config, run_stage, publish_campaign).run()
