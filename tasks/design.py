"""The sampling design of a generate config: parameters, seeds and splits of every sample.

The unit-cube design (``pdeflow.tasks.sampling``) is mapped to the parameters by each marginal's
inverse CDF, and back by its CDF (the surrogate and the ROM see parameters on the unit cube).
Every function is indexed by sample, so a store grown from n to m samples keeps the first n
samples' parameters, seeds and splits (the design continues; see ``sampling.sample_unit``).
"""

from __future__ import annotations

import numpy as np

from pdeflow.tasks.config import GenerateConfig
from pdeflow.tasks.sampling import MARGINALS, sample_seeds, sample_unit, split_codes

SPLITS = ("train", "val", "test", "calibration")


def to_physical(gen: GenerateConfig, unit: np.ndarray) -> np.ndarray:
    """Map design points in [0, 1)^d to parameters, shape (n, d), columns ``parameter_names``."""
    cols = [
        MARGINALS[spec.distribution](spec.low, spec.high).ppf(unit[:, j])
        for j, spec in enumerate(gen.parameter_specs)
    ]
    return np.stack(cols, axis=1) if cols else np.zeros((len(unit), 0))


def to_unit(gen: GenerateConfig, params: np.ndarray) -> np.ndarray:
    """Inverse of ``to_physical``: parameters (n, d) to the unit cube via the marginals' CDFs."""
    cols = [
        MARGINALS[spec.distribution](spec.low, spec.high).cdf(params[:, j])
        for j, spec in enumerate(gen.parameter_specs)
    ]
    return np.stack(cols, axis=1) if cols else np.zeros((len(params), 0))


def split_labels(gen: GenerateConfig, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Seeded split of samples ``start:stop``, codes index ``SPLITS``; shape (stop - start,)."""
    s = gen.split
    fractions = (s.train, s.val, s.test, s.calibration)
    return split_codes(fractions, s.seed, start, gen.n_samples if stop is None else stop)


def design_parameters(gen: GenerateConfig, start: int = 0) -> np.ndarray:
    """Parameters of samples ``start .. n_samples - 1``, shape (n, len(parameter_names))."""
    n, names = gen.n_samples - start, gen.parameter_names
    if not names:
        return np.zeros((n, 0))
    return to_physical(gen, sample_unit(gen.design, n, len(names), gen.seed, start=start))


def design_seeds(gen: GenerateConfig, start: int = 0) -> np.ndarray:
    """Per-sample seeds of samples ``start .. n_samples - 1``, shape (n,)."""
    return sample_seeds(gen.seed, np.arange(start, gen.n_samples))
