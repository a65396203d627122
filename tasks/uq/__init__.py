"""Uncertainty quantification: Monte Carlo moments, split-conformal bands, Sobol' indices."""

from tasks.uq.conformal import SplitConformal, resplit_coverage
from tasks.uq.montecarlo import RunningMoments, compare_fields, quantiles
from tasks.uq.sobol import SobolAnalysis

__all__ = [
    "RunningMoments",
    "SobolAnalysis",
    "SplitConformal",
    "compare_fields",
    "quantiles",
    "resplit_coverage",
]
