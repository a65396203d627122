"""The infer stage's config: observations, likelihood, and the chains that sample the posterior.

``pdeflow run infer`` samples the posterior of the sampled parameters given observations of the
field at sensor points and saved times. The prior is the generate config's parameter
distribution; the likelihood is Gaussian. See ``pdeflow.tasks.stages.infer``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pdeflow.tasks.config_form import _Frozen

__all__ = ["InferConfig"]


class InferConfig(_Frozen):
    """Bayesian inversion: delayed-acceptance MCMC (the ROM screens, the solver decides)."""

    observations: Literal["synthetic", "file"] = Field(
        "synthetic",
        description="synthetic: a stored sample observed at sensors with Gaussian noise; "
        "file: a CSV or netCDF file of sensor positions, times and values (see `file`).",
    )
    file: str | None = Field(
        None,
        description="Observation file (observations: file): CSV with columns t, x (and y, z "
        "for 2D/3D), value, and channel (a field name, optional for one field); or netCDF "
        "with those variables along one dimension. Times must be saved frame times.",
    )
    sample: int | None = Field(
        None,
        ge=0,
        description="Stored sample whose trajectory is observed (synthetic); default: the "
        "first sample of the test split. Its parameters are the truth the posterior is "
        "compared with.",
    )
    n_sensors: int = Field(
        8, ge=1, le=4096, description="Synthetic sensors per space dimension, evenly spaced."
    )
    n_times: int = Field(
        4,
        ge=1,
        le=100_000,
        description="Saved frames observed (synthetic), evenly spaced, the last one included "
        "and the initial frame never.",
    )
    noise: float = Field(
        0.02,
        gt=0,
        le=10,
        description="Noise standard deviation relative to the root mean square of the clean "
        "observations; the likelihood uses the same value.",
    )
    noise_std: float | None = Field(
        None,
        gt=0,
        description="Absolute noise standard deviation, in the field's unit; overrides noise.",
    )
    screen: Literal["rom", "none"] = Field(
        "rom",
        description="rom: delayed acceptance, the reduce stage's ROM screens each proposal and "
        "the solver decides (Christen & Fox 2005); none: plain Metropolis on the solver.",
    )
    error_inflation: float = Field(
        1.0,
        ge=1,
        le=1e6,
        description="Factor on the covariance of the ROM's error model (delayed acceptance): a "
        "wider screen mixes better where the ROM's likelihood is sharper than the solver's. "
        "The chain targets the solver's posterior whatever it is.",
    )
    baseline: bool = Field(
        True,
        description="Also run plain Metropolis on the solver with the same number of steps, "
        "to report what the screening saves.",
    )
    n_chains: int = Field(4, ge=1, le=1024, description="Chains per method, run in parallel.")
    burn_in: int = Field(
        200,
        ge=0,
        le=10_000_000,
        description="Steps per chain that adapt the proposal and are discarded.",
    )
    n_steps: int = Field(
        400, ge=10, le=10_000_000, description="Steps per chain kept after the burn-in."
    )
    checkpoint_every: int = Field(
        50,
        ge=1,
        le=10_000_000,
        description="Steps per chain segment: each segment is saved to the store, and a killed "
        "run resumes after the last saved one.",
    )
    seed: int = Field(0, ge=0, description="Seed of the noise, the starting points and the chains.")

    @model_validator(mode="after")
    def _check(self) -> InferConfig:
        if self.observations == "file" and not self.file:
            raise ValueError("infer.file: observations is 'file', so give the file's path")
        if self.observations == "synthetic" and self.file:
            raise ValueError("infer.file is set but infer.observations is 'synthetic'")
        if self.screen == "none" and not self.baseline:
            raise ValueError(
                "infer.screen none runs plain Metropolis, which is the baseline: set baseline "
                "true (or screen rom)"
            )
        return self

    @property
    def methods(self) -> tuple[str, ...]:
        """The samplers run: ``da`` (delayed acceptance) and/or ``mh`` (plain Metropolis)."""
        return (("da",) if self.screen == "rom" else ()) + (("mh",) if self.baseline else ())

    @property
    def n_segments(self) -> int:
        """Saved segments per chain."""
        return -(-(self.burn_in + self.n_steps) // self.checkpoint_every)
