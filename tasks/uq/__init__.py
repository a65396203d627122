"""Uncertainty quantification: Monte Carlo moments, multifidelity Monte Carlo, split-conformal
bands, Sobol' indices; Metropolis and delayed-acceptance MCMC in ``pdeflow.tasks.uq.mcmc``."""

from pdeflow.tasks.uq.conformal import SplitConformal, resplit_coverage
from pdeflow.tasks.uq.fieldsobol import FieldSobol, field_sobol
from pdeflow.tasks.uq.mfmc import MFMC
from pdeflow.tasks.uq.montecarlo import RunningMoments, compare_fields, quantiles
from pdeflow.tasks.uq.morris import MorrisScreening
from pdeflow.tasks.uq.pce import PolynomialChaos
from pdeflow.tasks.uq.sobol import SobolAnalysis

__all__ = [
    "MFMC",
    "FieldSobol",
    "MorrisScreening",
    "PolynomialChaos",
    "RunningMoments",
    "SobolAnalysis",
    "SplitConformal",
    "compare_fields",
    "field_sobol",
    "quantiles",
    "resplit_coverage",
]
