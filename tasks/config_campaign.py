"""The campaign's config: a simulation budget spent in batches chosen by the ROM's uncertainty.

``pdeflow run campaign`` (see ``pdeflow.tasks.campaign``) starts from the config's design of
``generate.n_samples`` samples and adds ``batch`` chosen simulations per round as new blocks of
the same store, until ``budget`` simulations were added or the held-out error is below
``target_error``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pdeflow.tasks.config_form import _Frozen

__all__ = ["CampaignConfig"]


class CampaignConfig(_Frozen):
    """Active learning: fit, score a candidate pool, simulate the best batch, update, repeat."""

    budget: int = Field(
        256, ge=1, le=10_000_000, description="Simulations the campaign adds to the design's."
    )
    batch: int = Field(
        64,
        ge=1,
        le=1_000_000,
        description="Simulations per round; a whole multiple of generate.block_size.",
    )
    acquisition: Literal["variance", "random", "sobol"] = Field(
        "variance",
        description="variance: the predictive variance over the trajectory of a GP on the POD "
        "coefficients, relative to its predicted squared norm (the held-out error is "
        "relative), batch by greedy conditioning; random: uniform draws from the prior; sobol: "
        "the design's Sobol' sequence continued. The last two are the baselines.",
    )
    pool: int = Field(
        1024, ge=2, le=10_000_000, description="Candidate points scored per round (Sobol')."
    )
    target_error: float = Field(
        0.0,
        ge=0,
        le=10,
        description="Stop once the ROM's held-out mean relative error is at most this (0: "
        "spend the whole budget).",
    )
    train: bool = Field(
        False,
        description="Also fine-tune the surrogate every round from its last checkpoint.",
    )
    seed: int = Field(0, ge=0, description="Seed of the candidate pools and the baselines.")
